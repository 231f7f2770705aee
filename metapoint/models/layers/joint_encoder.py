"""CapeFormer-style joint encoder over query feature-map tokens and keypoint tokens."""
from typing import Dict, Optional

import torch
from torch import nn

from .transformer_bricks import SelfAttentionLayer


class JointEncoderLayer(SelfAttentionLayer):
    """Post-norm encoder layer that adds the positions to q, k AND v (CapeFormer's encoder).

    ``x <- x + pos; x <- LN(x + Drop(MHA(x, x, x))); x <- LN(x + Drop(FFN(x)))``: positions enter
    the value and the residual and accumulate over layers (intended).
    Shapes: x, pos [N, T, C]; key_padding_mask [N, T] bool (True = ignored as a key).
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, ffn_dims: int = 2048,
                 dropout: float = 0.1) -> None:
        super().__init__(embed_dims, num_heads, ffn_dims, dropout, pos_in_value=True)


class JointEncoder(nn.Module):
    """Keypoint tokens and query-map tokens refined together by joint self-attention.

    Tokens = [Conv1x1(query map) (h*w tokens, row-major); keypoint tokens (K)], positions
    [map PE; order embedding], ``num_layers`` :class:`JointEncoderLayer` s (positions added to
    every layer's input); masked keypoints are ignored as keys. MetaPoint's query-map enhancer
    (``in_channels`` = C) and CapeFormer's encoder (``in_channels`` = 2048, raw C5).

    Forward: query_map ``[N, in_channels, h, w]``, kpt_tokens ``[N, K, C]``, kpt_mask ``[N, K]``
    bool (True = masked), order_pos ``[N, K, C]`` or None (the fixed sine order PE of slots
    1..K) -> dict with ``keypoint_tokens`` ``[N, K, C]`` and ``map_tokens`` ``[N, h*w, C]``
    (the last layer), ``layer_outputs`` ``[N, L, h*w + K, C]``, ``projected_map``
    ``[N, C, h, w]``, ``map_pos`` ``[N, h*w, C]`` and ``order_pos`` ``[N, K, C]``.
    """

    def __init__(self, positional_encoding: nn.Module, embed_dims: int = 256,
                 num_heads: int = 8, num_layers: int = 3, ffn_dims: int = 2048,
                 dropout: float = 0.1, in_channels: Optional[int] = None) -> None:
        super().__init__()
        self.pe = positional_encoding
        self.input_proj = nn.Conv2d(in_channels or embed_dims, embed_dims, kernel_size=1)
        self.layers = nn.ModuleList(
            JointEncoderLayer(embed_dims, num_heads, ffn_dims, dropout) for _ in range(num_layers))

    def forward(self, query_map: torch.Tensor, kpt_tokens: torch.Tensor, kpt_mask: torch.Tensor,
                order_pos: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
        src = self.input_proj(query_map)
        n, _, h, w = src.shape
        k = kpt_tokens.shape[1]
        map_pos = self.pe.map_pe(h, w, n, src.device).flatten(2).transpose(1, 2).to(src.dtype)
        if order_pos is None:
            order_pos = self.pe.order_pe(k, n, src.device)
        order_pos = order_pos.to(src.dtype)
        x = torch.cat([src.flatten(2).transpose(1, 2), kpt_tokens], 1)
        pos = torch.cat([map_pos, order_pos], 1)
        mask = torch.cat([kpt_mask.new_zeros(n, h * w), kpt_mask.bool()], 1)
        outputs = []
        for layer in self.layers:
            x = layer(x, pos, mask)
            outputs.append(x)
        return dict(keypoint_tokens=x[:, h * w:], map_tokens=x[:, :h * w],
                    layer_outputs=torch.stack(outputs, 1), projected_map=src, map_pos=map_pos,
                    order_pos=order_pos)
