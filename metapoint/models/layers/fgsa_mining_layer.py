"""FMMP's FGSA mining layer, shared by the support encoder and the query decoder.

See docs/methods.md, FMMP mining layer.
"""
from typing import Optional

import torch
from torch import nn

from .ms_deform_attn import MultiScaleDeformableAttention
from .structural_deform_attn import StructuralDeformableAttention, gather_structural_points
from .transformer_bricks import PostNormLayer, SelfAttentionLayer, unmask_fully_masked_rows

__all__ = ['FGSAMiningLayer']


class FGSAMiningLayer(PostNormLayer):
    """One mining step of K keypoint embeddings on one image's feature pyramid.

    ``X = E + F_ref`` (F_ref: point features at the reference points, or none), then

    (a) optional self-attention block over the K tokens (``self_attn=True``)::

            X <- LN(X + Drop(MHA(q = k = X + O + R, v = X; key padding mask)))
            X <- LN(X + Drop(FFN(X)))

    (b) FGSA attention ``A``: :class:`StructuralDeformableAttention` on ``X + O + R + F_ref``
        (``side_heads >= 1``), a plain :class:`MultiScaleDeformableAttention` at the keypoint's
        own point when ``side_heads == 0``;
    (c) ``X <- LN1(X + Drop(A)); X <- LN2(X + Drop(FFN(X)))``.

    O is the slot-order embedding, R the reference-position embedding of the points.

    Several token sets may share one image (T queries of an episode mining the same support):
    deformable attention treats tokens independently, so they are stacked along the token axis
    and each image's values are projected and sampled once; self-attention stays per set.

    Args:
        embed_dims: C. num_heads: heads of the MHA and of every MSDA. num_levels, num_points:
            MSDA levels and points. ffn_dims: width of both FFNs (FMMP: 256).
        side_heads: structural heads H (0: plain MSDA at the keypoint).
        self_attn: use block (a). dropout: every dropout (none in the MSDA).
        projector_init: see :class:`StructuralDeformableAttention`.

    Forward:
        embed ``[N, T, K, C]`` (N images, T token sets per image);
        order ``[N or 1, K, C]``; ref_pos ``[N, K, C]``; points ``[N, K, 2]`` normalised (x, y);
        value ``[N, S, C]`` flattened pyramid; spatial_shapes ``[L, 2]``; level_start ``[L]``;
        neighbour_idx long ``[N, K, >= H]`` (needed when H >= 2);
        key_padding_mask ``[N, K]`` bool, True = not a key (a row with every slot masked is
        unmasked instead of producing NaN, official quirk Q-F5);
        ref_feat ``[N, K, C]`` or None.
        Returns ``[N, T, K, C]``.

    State dict: ``self_block.*`` (a :class:`SelfAttentionLayer`; official ``self_attn``,
    ``self_norm1``, ``self_linear1``, ``self_linear2``, ``self_norm2``), ``deform_attn.*``,
    ``norm1``, ``linear1``, ``linear2``, ``norm2``.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, num_levels: int = 3,
                 num_points: int = 4, ffn_dims: int = 256, side_heads: int = 8,
                 self_attn: bool = True, dropout: float = 0.1, projector_init: str = 'xavier',
                 use_cuda_kernel: bool = True) -> None:
        super().__init__()
        self.side_heads = side_heads
        self.use_self_attn = self_attn
        if self_attn:
            self.self_block = SelfAttentionLayer(embed_dims, num_heads, ffn_dims, dropout)
        if side_heads > 0:
            self.deform_attn = StructuralDeformableAttention(
                side_heads, embed_dims, num_heads, num_levels, num_points,
                projector_init=projector_init, use_cuda_kernel=use_cuda_kernel)
        else:
            self.deform_attn = MultiScaleDeformableAttention(
                embed_dims, num_heads, num_levels, num_points, use_cuda_kernel=use_cuda_kernel)
        self.build_post_norm(embed_dims, ffn_dims, dropout)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official ``_reset_parameters``: xavier-uniform on every Linear weight, MHA's own
        reset, then the deformable attention's init."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
        if self.use_self_attn:
            self.self_block.self_attn._reset_parameters()
        self.deform_attn.init_weights()

    def _self_attention(self, x: torch.Tensor, pos: torch.Tensor,
                        key_padding_mask: Optional[torch.Tensor]) -> torch.Tensor:
        """x ``[N, T, K, C]``, pos ``[N, K, C]``, mask ``[N, K]`` -> ``[N, T, K, C]``."""
        n, t, k, c = x.shape
        if key_padding_mask is not None:
            key_padding_mask = unmask_fully_masked_rows(key_padding_mask)
            key_padding_mask = key_padding_mask[:, None].expand(n, t, k).reshape(n * t, k)
        pos = pos[:, None].expand(n, t, k, c).reshape(n * t, k, c)
        return self.self_block(x.reshape(n * t, k, c), pos, key_padding_mask).view(n, t, k, c)

    def forward(self, embed: torch.Tensor, order: torch.Tensor, ref_pos: torch.Tensor,
                points: torch.Tensor, value: torch.Tensor, spatial_shapes: torch.Tensor,
                level_start: Optional[torch.Tensor] = None,
                neighbour_idx: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None,
                ref_feat: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, t, k, c = embed.shape
        x = embed if ref_feat is None else embed + ref_feat[:, None]
        pos = order + ref_pos  # [N, K, C]
        if self.use_self_attn:
            x = self._self_attention(x, pos, key_padding_mask)
        query = x + pos[:, None]
        if ref_feat is not None:
            query = query + ref_feat[:, None]
        query = query.reshape(n, t * k, c)
        if self.side_heads > 0:
            if neighbour_idx is None:
                if self.side_heads > 1:
                    raise ValueError(f'side_heads={self.side_heads} needs the structural '
                                     'neighbour table (add StructuralNeighbours to the pipeline)')
                neighbour_idx = torch.arange(k, device=points.device).expand(n, k)[..., None]
            refs = gather_structural_points(points, neighbour_idx, self.side_heads)
            refs = refs[:, None].expand(n, t, k, self.side_heads, 2).reshape(
                n, t * k, self.side_heads, 2)
        else:
            refs = points[:, None].expand(n, t, k, 2).reshape(n, t * k, 2)
        attn = self.deform_attn(query, refs, value, spatial_shapes, level_start)
        return self.post_norm(x, attn.view(n, t, k, c))
