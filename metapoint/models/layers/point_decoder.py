"""Progressive deformable point decoder (MetaPoint's meta decoder and refine decoder)."""
import math
from typing import List, Optional, Tuple

import torch
from torch import nn

from .mlp import TokenDecodeMLP
from .ms_deform_attn import MultiScaleDeformableAttention, flatten_multilevel
from .point_ops import inverse_sigmoid, sample_point_features
from .transformer_bricks import PostNormLayer


def grid_points(num_points: int, batch: int, device, dtype=torch.float32) -> torch.Tensor:
    """[batch, n, 2] initial (x, y) points on a grid spanning [0, 1] x [0, 1], x varying fastest.

    A perfect square n gives the official sqrt(n) x sqrt(n) ``linspace(0, 1)`` grid exactly. Other
    n (e.g. 70 or 150 meta-points; the official code requires a square, Q-M12) use the first n
    points of a ceil(sqrt(n))-column grid with ceil(n / cols) rows.
    """
    cols = int(math.ceil(math.sqrt(num_points)))
    rows = int(math.ceil(num_points / cols))
    ys, xs = torch.meshgrid(torch.linspace(0.0, 1.0, rows, dtype=dtype, device=device),
                            torch.linspace(0.0, 1.0, cols, dtype=dtype, device=device),
                            indexing='ij')
    grid = torch.stack([xs, ys], -1).reshape(-1, 2)[:num_points]
    return grid.unsqueeze(0).expand(batch, -1, -1)


class PointDecoderLayer(PostNormLayer):
    """One decoder step: [self-attention] -> [+ point features] -> deformable attention + FFN.

    Shapes: embeds [N, T, C], pos [N, T, C], points [N, T, 2] (normalised (x, y), the reference
    of every level), values [N, S, C] (flattened maps), valid [N, T, 1] float.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 4, num_levels: int = 3,
                 num_points: int = 4, ffn_dims: int = 256, dropout: float = 0.1,
                 self_attn: bool = True, ref_feat: bool = True,
                 mask_invalid_keys: bool = False) -> None:
        super().__init__()
        self.ref_feat = ref_feat
        self.mask_invalid_keys = mask_invalid_keys
        if self_attn:
            self.self_attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                                   batch_first=True)
            self.self_attn_norm = nn.LayerNorm(embed_dims)
            self.self_attn_dropout = nn.Dropout(dropout)
        else:
            self.self_attn = None
        self.cross_attn = MultiScaleDeformableAttention(
            embed_dims=embed_dims, num_heads=num_heads, num_levels=num_levels,
            num_points=num_points, batch_first=True)
        self.build_post_norm(embed_dims, ffn_dims, dropout)
        self.point_head = TokenDecodeMLP(embed_dims, embed_dims)

    def forward(self, embeds, pos, points, values, spatial_shapes, level_start, maps, valid):
        if self.self_attn is not None:
            q = embeds + pos
            kpm = (valid[..., 0] <= 0) if self.mask_invalid_keys else None
            attn = self.self_attn(q, q, embeds, key_padding_mask=kpm, need_weights=False)[0]
            embeds = self.self_attn_norm(embeds + self.self_attn_dropout(attn)) * valid
        if self.ref_feat:
            embeds = embeds + sample_point_features(maps, points) * valid
        attn = self.cross_attn(embeds + pos, points, values, spatial_shapes, level_start)
        out = self.post_norm(embeds, attn) * valid
        new_points = (inverse_sigmoid(points) + self.point_head(out)).sigmoid()
        return out, new_points


class ProgressivePointDecoder(nn.Module):
    """Decode T point tokens into T points, each layer re-anchored at the previous layer's points.

    Layer l: pos = order PE [order_pos] + PE(points) [coord_pos]; the layer (above) refines the
    tokens and predicts p_l = sigmoid(logit(p) + MLP_l(tokens)); p <- p_l.detach().

    Args:
        positional_encoding: a ``SinePositionalEncoding`` (shared, parameter-free).
        mask_invalid_keys: mask invalid tokens as self-attention keys. Off by default for parity
            with the official checkpoints, whose decoder attends to padded tokens (Q-M7).
    Forward:
        embeds [N, T, C]; maps: list of [N, C, H_l, W_l] (deepest first); init_points [N, T, 2]
        or None (sqrt(T) x sqrt(T) grid); valid [N, T] bool or None (all valid).
        Returns the last tokens [N, T, C] and the points of every layer [N, L, T, 2].
    """

    def __init__(self, positional_encoding: nn.Module, num_layers: int = 3, embed_dims: int = 256,
                 num_heads: int = 4, num_levels: int = 3, num_points: int = 4,
                 ffn_dims: int = 256, dropout: float = 0.1, self_attn: bool = True,
                 ref_feat: bool = True, order_pos: bool = True, coord_pos: bool = True,
                 mask_invalid_keys: bool = False) -> None:
        super().__init__()
        self.pe = positional_encoding
        self.order_pos, self.coord_pos = order_pos, coord_pos
        self.num_levels = num_levels
        self.layers = nn.ModuleList(
            PointDecoderLayer(embed_dims, num_heads, num_levels, num_points, ffn_dims, dropout,
                              self_attn, ref_feat, mask_invalid_keys)
            for _ in range(num_layers))

    def position(self, points: torch.Tensor) -> torch.Tensor:
        n, t = points.shape[:2]
        pos = points.new_zeros(n, t, self.layers[0].norm1.normalized_shape[0])
        if self.order_pos:
            pos = pos + self.pe.order_pe(t, n, points.device).to(points.dtype)
        if self.coord_pos:
            pos = pos + self.pe.forward_coordinates(points)
        return pos

    def forward(self, embeds: torch.Tensor, maps: List[torch.Tensor],
                init_points: Optional[torch.Tensor] = None,
                valid: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        if len(maps) != self.num_levels:
            raise ValueError(f'decoder built for {self.num_levels} levels got {len(maps)} maps')
        n, t = embeds.shape[:2]
        points = grid_points(t, n, embeds.device, embeds.dtype) if init_points is None \
            else init_points.detach()
        valid = embeds.new_ones(n, t, 1) if valid is None else valid.to(embeds.dtype)[..., None]
        values, shapes, start = flatten_multilevel(maps)
        all_points = []
        for layer in self.layers:
            embeds, new_points = layer(embeds, self.position(points), points, values, shapes,
                                       start, maps, valid)
            all_points.append(new_points)
            points = new_points.detach()
        return embeds, torch.stack(all_points, 1)
