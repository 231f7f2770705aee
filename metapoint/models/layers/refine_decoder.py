"""CapeFormer's refine decoder: keypoint tokens attend to the query map and move their points.

Shapes: N query images (episodes x queries), K keypoint slots, C channels, h*w query-map tokens
(row-major). Points are normalised crop ``(x, y)`` in [0, 1]; offsets are added in logit space
(:func:`~.point_ops.inverse_sigmoid`).
"""
from typing import Dict, Optional

import torch
from torch import nn

from .mlp import GeluMLP, TokenDecodeMLP
from .point_ops import inverse_sigmoid
from .transformer_bricks import PostNormLayer

__all__ = ['RefineDecoderLayer', 'RefineDecoder']


class RefineDecoderLayer(PostNormLayer):
    """Post-norm decoder layer with a concatenated-position cross-attention (quirk CF7).

    * self-attention over the K tokens: ``q = k = h + pos``, ``v = h``;
      ``h <- LN_sa(h + Drop(attn))`` (``self_attn_norm``);
    * cross-attention to the query map with positions concatenated, not added: query
      ``[h; pos]`` (2C), key ``[M; map_pos]`` (2C), value ``M`` (C), an
      ``nn.MultiheadAttention(2C, heads, vdim=C)`` (head width 2C / heads) followed by
      ``cross_attn_proj`` (Linear 2C -> C); then the :class:`PostNormLayer` tail
      (``h <- LN_1(h + Drop(proj(attn)))``, ReLU FFN, ``LN_2``).

    Official names: ``norm1`` / ``norm2`` / ``norm3`` are ``self_attn_norm`` / ``norm1`` /
    ``norm2`` here, ``multihead_attn`` / ``choker`` are ``cross_attn`` / ``cross_attn_proj``.

    Forward: tokens ``[N, K, C]``, memory ``[N, h*w, C]``, pos ``[N, K, C]`` (point position +
    order embedding), memory_pos ``[N, h*w, C]``, key_padding_mask ``[N, K]`` bool (True =
    ignored as a self-attention key) -> ``[N, K, C]``.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, ffn_dims: int = 2048,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                               batch_first=True)
        self.self_attn_norm = nn.LayerNorm(embed_dims)
        self.self_attn_dropout = nn.Dropout(dropout)
        self.cross_attn = nn.MultiheadAttention(2 * embed_dims, num_heads, dropout=dropout,
                                                vdim=embed_dims, batch_first=True)
        self.cross_attn_proj = nn.Linear(2 * embed_dims, embed_dims)
        self.build_post_norm(embed_dims, ffn_dims, dropout)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                memory_pos: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        q = tokens + pos
        attn = self.self_attn(q, q, tokens, key_padding_mask=key_padding_mask,
                              need_weights=False)[0]
        tokens = self.self_attn_norm(tokens + self.self_attn_dropout(attn))
        attn = self.cross_attn(torch.cat([tokens, pos], -1), torch.cat([memory, memory_pos], -1),
                               memory, need_weights=False)[0]
        return self.post_norm(tokens, self.cross_attn_proj(attn))


class RefineDecoder(nn.Module):
    """L :class:`RefineDecoderLayer` s moving every keypoint from its proposal (CapeFormer
    stage 2, docs/methods.md; official quirks CF5 / CF6).

    Layer l (reference ``c_l``, ``c_0`` = the detached proposal ``p0``):

    * position ``ref_point_head(PE(c_l))`` (Linear-GELU-Linear, shared by all layers) plus the
      order embedding; layer 0 encodes the NON-detached ``p0``, so the losses reach the proposal
      generator through this path only (CF5);
    * reference path: ``c_{l+1} = sigmoid(logit(c_l) + point_heads[l](h_l))`` on the raw layer
      output ``h_l``; the next layer uses it detached;
    * reported path: ``y_l = sigmoid(logit(b_l) + point_heads[l](norm(h_l)))`` with the final
      LayerNorm ``norm`` applied to every layer's output, ``b_0 = c_0`` (detached) and
      ``b_l = c_l`` NOT detached for l >= 1 (gradients of ``y_l`` reach ``point_heads[l-1]`` and
      layer l-1, CF6).

    Args:
        positional_encoding: a ``SinePositionalEncoding`` (parameter-free) for the point
            positions.
        num_layers, embed_dims, num_heads, ffn_dims, dropout: layer settings.

    Forward:
        tokens ``[N, K, C]`` (refined support tokens), memory / memory_pos ``[N, h*w, C]``,
        order_pos ``[N, K, C]``, init_points ``[N, K, 2]`` (the proposal ``p0``),
        key_padding_mask ``[N, K]`` bool (True = masked slot); a row with every slot masked
        keeps slot 0 as a key (no empty softmax).
    Returns:
        dict with ``points`` (list over layers of ``[N, K, 2]``, the reported ``y_l``),
        ``ref_points`` ``[N, L, K, 2]`` (``c_1 .. c_L``), ``delta_ref`` / ``delta_out``
        ``[N, L, K, 2]`` (logit offsets of both paths) and ``layer_out`` ``[N, L, K, C]``
        (raw ``h_l``).
    """

    def __init__(self, positional_encoding: nn.Module, num_layers: int = 3,
                 embed_dims: int = 256, num_heads: int = 8, ffn_dims: int = 2048,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.pe = positional_encoding
        self.layers = nn.ModuleList(
            RefineDecoderLayer(embed_dims, num_heads, ffn_dims, dropout)
            for _ in range(num_layers))
        self.ref_point_head = GeluMLP(embed_dims, embed_dims, embed_dims, 2)
        self.norm = nn.LayerNorm(embed_dims)
        self.point_heads = nn.ModuleList(TokenDecodeMLP(embed_dims, embed_dims)
                                         for _ in range(num_layers))

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_pos: torch.Tensor,
                order_pos: torch.Tensor, init_points: torch.Tensor,
                key_padding_mask: Optional[torch.Tensor] = None) -> Dict[str, object]:
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.clone()
            key_padding_mask[key_padding_mask.all(-1), 0] = False
        ref = init_points.detach()
        base = ref
        outs = dict(points=[], ref_points=[], delta_ref=[], delta_out=[], layer_out=[])
        for i, layer in enumerate(self.layers):
            pos = self.ref_point_head(self.pe.forward_coordinates(init_points if i == 0 else ref))
            tokens = layer(tokens, memory, pos + order_pos, memory_pos, key_padding_mask)
            delta_ref = self.point_heads[i](tokens)
            delta_out = self.point_heads[i](self.norm(tokens))
            new_ref = (inverse_sigmoid(ref) + delta_ref).sigmoid()
            outs['points'].append((inverse_sigmoid(base) + delta_out).sigmoid())
            for key, value in (('ref_points', new_ref), ('delta_ref', delta_ref),
                               ('delta_out', delta_out), ('layer_out', tokens)):
                outs[key].append(value)
            base, ref = new_ref, new_ref.detach()
        for key in ('ref_points', 'delta_ref', 'delta_out', 'layer_out'):
            outs[key] = torch.stack(outs[key], 1)
        return outs
