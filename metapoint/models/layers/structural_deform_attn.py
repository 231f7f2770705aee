"""FMMP structure-aware multi-scale deformable attention (FGSA's ``StructrualDeformAttnW``).

``H = side_heads`` independent :class:`MultiScaleDeformableAttention` modules ("side heads"). Side
head ``h`` places the reference point of keypoint ``k`` at the current point of its ``h``-th
structural neighbour ``N[k, h]`` (breadth-first over the skeleton, ``N[k, 0] = k``; see
``metapoint.datasets.keypoint_padding_ops.structural_neighbours``). Output::

    A = A_0 + ReLU(W [A_1; ...; A_{H-1}] + b)        (H >= 2; H = 1 gives A_0)

All side heads, batch items, keypoints and internal heads are computed together: the H modules'
weights are stacked and the H x M internal heads go through ONE sampling call, so there is no
Python loop over samples or side heads (the official code loops over both).

Two orders compute the same function (the value projection is linear, bilinear sampling too):

* project first: every side head projects the whole pyramid (``N * S * C * H*C`` multiply-adds),
  then samples ``D = C / M`` channels per internal head (grid_sample, or mmcv's CUDA kernel);
* sample first (``bilinear_gather``): the raw ``C``-channel rows are gathered once per internal
  head (``N * Lq * H*M * L*P*4 * C`` row reads) and only the ``[H*M, N*Lq, C]`` sums projected.

``gather_mode='auto'`` samples first when ``r = S * C / (Lq * M * L * P * 4) > 2.5`` (the pyramid
is large next to the samples drawn from it). Measured on CPU (fwd+bwd): r = 12.8 at the official
size (256 ch, 8 side heads, 8/16/32 levels, 70 keypoints), sample first 3.2x faster; r = 6.4 and
3.2: 1.6x and 1.5x faster; r = 1.6 (the CPU recipe's 128-channel 4/8/16 pyramid): 1.4x slower
(``benchmarks/bench_structural_attention.py``). With mmcv's CUDA kernel: always project first.
Coordinates: normalised ``(x, y)`` of the crop, ``align_corners=False`` (see ``ms_deform_attn``).
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .bilinear_gather import bilinear_corners, weighted_row_sum
from .ms_deform_attn import (MultiScaleDeformableAttention, _level_sizes, cuda_kernel_applicable,
                             multi_scale_deformable_attn, sample_levels)

__all__ = ['StructuralDeformableAttention', 'gather_structural_points']


def gather_structural_points(points: torch.Tensor, neighbour_idx: torch.Tensor,
                             num_heads: int) -> torch.Tensor:
    """Reference point of every side head: ``points[n, neighbour_idx[n, k, h]]``.

    Args:
        points: ``[N, K, 2]`` normalised ``(x, y)``.
        neighbour_idx: long ``[N, K, >= num_heads]`` (BFS table, self first).
        num_heads: H, the side heads used (the first H columns).
    Returns:
        ``[N, K, H, 2]`` (one ``gather``; no loop).
    """
    n, k, _ = points.shape
    if neighbour_idx.shape[:2] != (n, k) or neighbour_idx.shape[2] < num_heads:
        raise ValueError(f'neighbour_idx {tuple(neighbour_idx.shape)} does not fit points '
                         f'{tuple(points.shape)} and {num_heads} side heads')
    idx = neighbour_idx[..., :num_heads].reshape(n, k * num_heads, 1).expand(-1, -1, 2)
    return points.gather(1, idx.long()).view(n, k, num_heads, 2)


class StructuralDeformableAttention(nn.Module):
    """Structure-aware deformable attention with ``side_heads`` full MSDA modules.

    Args:
        side_heads: H >= 1, number of side heads (self + H-1 structural neighbours).
        embed_dims, num_heads, num_levels, num_points: of every side head's MSDA (C, M, L, P).
        projector_init: ``'xavier'`` (default: what the official weights start from, quirk Q-F6)
            or ``'zero'`` (the official code's stated intent). With ``'zero'`` the pre-activation
            is exactly 0, and PyTorch's ReLU passes no gradient at 0, so the side heads would never
            train: kept only for ablations, documented in docs/fmmp.md.
        use_cuda_kernel: allow mmcv's compiled kernel on CUDA.
        gather_mode: ``'auto'``, ``'project_first'`` or ``'sample_first'`` for the pure PyTorch
            path (see above); all three give the same result up to float rounding.

    State dict (official layout): ``attn_layers.{h}.{sampling_offsets, attention_weights,
    value_proj, output_proj}.{weight,bias}`` and, for H >= 2, ``projector.0.{weight,bias}``
    (``[C, C * (H - 1)]``).

    Forward:
        query ``[N, Lq, C]`` (positional terms already added);
        reference_points ``[N, Lq, H, 2]`` normalised ``(x, y)`` (see
        :func:`gather_structural_points`); value ``[N, S, C]`` (before the value projections);
        spatial_shapes ``[L, 2]`` (H, W); level_start_index ``[L]`` (optional).
        Returns ``[N, Lq, C]``.
    """

    def __init__(self, side_heads: int = 8, embed_dims: int = 256, num_heads: int = 8,
                 num_levels: int = 3, num_points: int = 4, projector_init: str = 'xavier',
                 use_cuda_kernel: bool = True, gather_mode: str = 'auto') -> None:
        super().__init__()
        if side_heads < 1:
            raise ValueError(f'side_heads must be >= 1, got {side_heads}')
        if projector_init not in ('xavier', 'zero'):
            raise ValueError(f"projector_init must be 'xavier' or 'zero', got {projector_init!r}")
        if gather_mode not in ('auto', 'project_first', 'sample_first'):
            raise ValueError("gather_mode must be 'auto', 'project_first' or 'sample_first', "
                             f'got {gather_mode!r}')
        self.gather_mode = gather_mode
        self.side_heads = side_heads
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.projector_init = projector_init
        self.use_cuda_kernel = use_cuda_kernel
        self.attn_layers = nn.ModuleList(
            MultiScaleDeformableAttention(embed_dims, num_heads, num_levels, num_points,
                                          use_cuda_kernel=use_cuda_kernel)
            for _ in range(side_heads))
        if side_heads >= 2:
            self.projector = nn.Sequential(nn.Linear(embed_dims * (side_heads - 1), embed_dims),
                                           nn.ReLU())
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Deformable-DETR init of every side head; projector per ``projector_init``."""
        for layer in self.attn_layers:
            layer.init_weights()
        if self.side_heads >= 2:
            if self.projector_init == 'zero':
                nn.init.zeros_(self.projector[0].weight)
            else:
                nn.init.xavier_uniform_(self.projector[0].weight)
            nn.init.zeros_(self.projector[0].bias)

    def _concatenated(self, name: str):
        """One Linear of every side head as a single ``[H * out, in]`` weight and bias."""
        mods = [getattr(layer, name) for layer in self.attn_layers]
        return torch.cat([m.weight for m in mods]), torch.cat([m.bias for m in mods])

    def samples_first(self, num_values: int, num_queries: int) -> bool:
        """Whether the pure PyTorch path samples raw features before projecting them."""
        if self.gather_mode != 'auto':
            return self.gather_mode == 'sample_first'
        samples = num_queries * self.num_heads * self.num_levels * self.num_points * 4
        return num_values * self.embed_dims > 2.5 * samples

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value: torch.Tensor,
                spatial_shapes: torch.Tensor,
                level_start_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, lq, c = query.shape
        hh, m, nl, p = self.side_heads, self.num_heads, self.num_levels, self.num_points
        if reference_points.shape != (n, lq, hh, 2):
            raise ValueError(f'reference_points must be {(n, lq, hh, 2)}, got '
                             f'{tuple(reference_points.shape)}')
        if spatial_shapes.shape[0] != nl:
            raise ValueError(f'built for {nl} levels, got spatial_shapes '
                             f'{tuple(spatial_shapes.shape)}')
        s, d, g = value.shape[1], c // m, hh * m
        w_v, b_v = self._concatenated('value_proj')  # every side head's projection: [H*C, C]
        offsets = F.linear(query, *self._concatenated('sampling_offsets'))
        offsets = offsets.view(n, lq, hh, m, nl, p, 2)
        logits = F.linear(query, *self._concatenated('attention_weights'))
        weights = F.softmax(logits.view(n, lq, g, nl * p), -1).view(n, lq, g, nl, p)
        wh = spatial_shapes.flip(-1).to(query.dtype)[:, None]  # [L, 1, 2] as (W_l, H_l)
        refs = reference_points[:, :, :, None, None, None, :]  # [N, Lq, H, 1, 1, 1, 2]
        kernel = cuda_kernel_applicable(value, self.use_cuda_kernel)
        if not kernel and self.samples_first(s, lq):
            # sample, then project (bilinear_gather): the raw C-channel rows are gathered once
            # per internal head and the [H*M, N*Lq, C] sums projected to D channels each;
            # bags in (n, q, g) order: no permuting copy, and each item's rows stay in cache
            pixels = refs * wh - 0.5 + offsets  # offsets are in pixels of each level already
            index, weight = bilinear_corners(pixels.view(1, n, lq * g, nl, p, 2),
                                             weights.view(1, n, lq * g, nl, p), spatial_shapes, s)
            sampled = weighted_row_sum(index, value.reshape(n * s, c), weight)  # [N*Lq*G, C]
            bias = weight.sum(-1).view(n * lq, g).t()[..., None] * b_v.view(g, 1, d)
            out = torch.baddbmm(bias, sampled.view(n * lq, g, c).transpose(0, 1),
                                w_v.view(g, d, c).transpose(1, 2))  # [G, N*Lq, D]
            out = out.view(hh, m, n * lq, d).transpose(1, 2).reshape(hh, n * lq, c)
        else:
            # project, then sample: H*M internal heads of D channels each
            locations = (refs + offsets / wh).view(n, lq, g, nl, p, 2)
            if kernel:  # mmcv's kernel wants the values as [N, S, H*M, D]
                values = F.linear(value, w_v, b_v).view(n, s, g, d)
                out = multi_scale_deformable_attn(values, spatial_shapes, locations, weights,
                                                  level_start_index,
                                                  self.attn_layers[0].im2col_step,
                                                  self.use_cuda_kernel)  # [N, Lq, H*C]
            else:
                # channel-first (W @ value^T): each level is then a free view [N*H*M, D, h, w]
                # for grid_sample, no transposing copy of the [N, S, H*C] values
                values = torch.matmul(w_v, value.transpose(1, 2)) + b_v[:, None]  # [N, H*C, S]
                levels, start = [], 0
                for h, w in _level_sizes(spatial_shapes, s):
                    levels.append(values[:, :, start:start + h * w].reshape(n * g, d, h, w))
                    start += h * w
                out = sample_levels(levels, locations, weights)  # [N, Lq, H*C]
            out = out.view(n * lq, hh, c).transpose(0, 1)  # [H, N*Lq, C]
        # head 0: its output projection; side heads: their output projections folded into the
        # projector, W_p [A_1; ...] = sum_h (W_p,h W_o,h) x_h + W_p,h b_o,h (fewer multiply-adds
        # whenever N * Lq > C, and one matmul instead of two)
        first = self.attn_layers[0].output_proj
        result = F.linear(out[0], first.weight, first.bias)
        if hh >= 2:
            w_p, b_p = self.projector[0].weight, self.projector[0].bias  # [C, (H-1) C], [C]
            w_o = torch.stack([layer.output_proj.weight for layer in self.attn_layers[1:]])
            b_o = torch.cat([layer.output_proj.bias for layer in self.attn_layers[1:]])
            w_p_h = w_p.view(c, hh - 1, c).transpose(0, 1)  # [H-1, C, C]
            w_side = torch.bmm(w_p_h, w_o).transpose(0, 1).reshape(c, (hh - 1) * c)
            side = F.linear(out[1:].transpose(0, 1).reshape(n * lq, (hh - 1) * c), w_side,
                            torch.addmv(b_p, w_p, b_o))
            result = result + self.projector[1](side)
        return result.view(n, lq, c)

    def forward_loop(self, query: torch.Tensor, reference_points: torch.Tensor,
                     value: torch.Tensor, spatial_shapes: torch.Tensor,
                     level_start_index: Optional[torch.Tensor] = None) -> torch.Tensor:
        """The same function as a per-sample, per-side-head Python loop (reference for tests and
        ``benchmarks/bench_structural_attention.py``; not used by the model)."""
        outs = []
        for i in range(query.shape[0]):
            heads = [layer(query[i:i + 1], reference_points[i:i + 1, :, h], value[i:i + 1],
                           spatial_shapes, level_start_index)
                     for h, layer in enumerate(self.attn_layers)]
            res = heads[0]
            if self.side_heads >= 2:
                res = res + self.projector(torch.cat(heads[1:], -1))
            outs.append(res)
        return torch.cat(outs)

    def extra_repr(self) -> str:
        return (f'side_heads={self.side_heads}, embed_dims={self.embed_dims}, '
                f'num_heads={self.num_heads}, num_levels={self.num_levels}, '
                f'num_points={self.num_points}, projector_init={self.projector_init!r}, '
                f'gather_mode={self.gather_mode!r}')
