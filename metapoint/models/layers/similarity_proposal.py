"""First-stage keypoint proposals from support/query similarity (CapeFormer's proposal generator).

Coordinates are normalised ``(x, y)``: cell ``(row i, col j)`` of an ``h x w`` map has its centre
at ``((j + 0.5) / w, (i + 0.5) / h)`` (``align_corners=False``).
"""
from typing import Dict, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .precision import float32_region

__all__ = ['SimilarityProposalGenerator', 'cell_centres', 'soft_argmax']


def cell_centres(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``[h*w, 2]`` cell centres in map cells ``(j + 0.5, i + 0.5)``, row-major (not normalised)."""
    ys = torch.arange(height, device=device, dtype=dtype) + 0.5
    xs = torch.arange(width, device=device, dtype=dtype) + 0.5
    return torch.stack([xs.expand(height, width), ys[:, None].expand(height, width)],
                       -1).reshape(-1, 2)


def soft_argmax(probs: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Expected cell centre of ``probs`` ``[..., h*w]`` (weights, not renormalised here) ->
    ``[..., 2]`` normalised ``(x, y)``."""
    grid = cell_centres(height, width, probs.device, probs.dtype)
    size = torch.tensor([width, height], device=probs.device, dtype=probs.dtype)
    return (probs[..., None] * grid).sum(-2) / size


class SimilarityProposalGenerator(nn.Module):
    """Similarity between support keypoint tokens and query-map tokens, and two soft-argmax
    proposals per keypoint (CapeFormer stage 1, docs/methods.md; official quirk CF4).

    * ``A = support_proj(T)``, ``Q = query_proj(M)``;
    * dynamic re-weighting ``A' = (tanh(dynamic_proj(A)) + 1) * A`` with
      ``dynamic_proj = Linear(C, dynamic_dims) -> ReLU -> Linear(dynamic_dims, C)``;
    * ``S[k, u] = <Q_u, A'_k>`` (no scaling);
    * global proposal: soft-argmax of ``softmax_u(S_k)`` over the whole map;
    * local proposal: the same probabilities restricted to the ``window x window`` cells around
      the argmax (truncated at the map border), renormalised with ``+1e-10``. The window is laid
      out ``(h, w)``; the official code reshapes it ``(w, h)`` (Q-C3), the same on square maps.

    Args:
        embed_dims: C, channels of the tokens (also the projection width).
        dynamic_dims: hidden width of ``dynamic_proj``.
        window: side of the local window (odd).

    Forward:
        memory ``[N, h*w, C]`` query-map tokens (row-major), tokens ``[N, K, C]`` support
        keypoint tokens, size ``(h, w)``.
    Returns:
        dict with ``similarity`` ``[N, K, h, w]`` (raw S, laid out ``(row, col)``),
        ``proposals_global`` and ``proposals_local`` ``[N, K, 2]`` normalised ``(x, y)``.
        Nothing is detached here. Runs in float32 under autocast (the argmax of a bfloat16
        similarity map jumps between near-equal cells).
    """

    def __init__(self, embed_dims: int = 256, dynamic_dims: int = 128, window: int = 3) -> None:
        super().__init__()
        if window < 1 or window % 2 == 0:
            raise ValueError(f'the local proposal window must be a positive odd size, got {window}')
        self.window = window
        self.support_proj = nn.Linear(embed_dims, embed_dims)
        self.query_proj = nn.Linear(embed_dims, embed_dims)
        self.dynamic_proj = nn.Sequential(nn.Linear(embed_dims, dynamic_dims), nn.ReLU(),
                                          nn.Linear(dynamic_dims, embed_dims))

    @float32_region  # the argmax and the soft-argmax peaks need float32 similarities
    def forward(self, memory: torch.Tensor, tokens: torch.Tensor,
                size: Sequence[int]) -> Dict[str, torch.Tensor]:
        h, w = size
        n, k = tokens.shape[:2]
        support = self.support_proj(tokens)
        support = (torch.tanh(self.dynamic_proj(support)) + 1) * support
        similarity = torch.bmm(self.query_proj(memory), support.transpose(1, 2))  # [N, hw, K]
        similarity = similarity.transpose(1, 2).reshape(n, k, h, w)
        probs = similarity.flatten(2).softmax(-1)  # [N, K, hw]
        peak = F.one_hot(similarity.flatten(2).argmax(-1), h * w).to(probs.dtype)
        window = F.max_pool2d(peak.view(n, k, h, w), self.window, stride=1,
                              padding=self.window // 2).flatten(2)
        local = probs * window
        local = local / (local.sum(-1, keepdim=True) + 1e-10)
        return dict(similarity=similarity, proposals_global=soft_argmax(probs, h, w),
                    proposals_local=soft_argmax(local, h, w))
