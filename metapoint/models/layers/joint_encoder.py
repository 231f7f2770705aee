"""CapeFormer-style joint encoder over query feature-map tokens and keypoint tokens."""
from typing import Tuple

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


class QueryMapEnhancer(nn.Module):
    """Refine keypoint tokens jointly with the query feature map (MetaPoint's ``MetaEnhancer``).

    Tokens = [Conv1x1(query map) + map PE (h*w tokens); keypoint tokens + order PE (K tokens)];
    ``num_layers`` :class:`JointEncoderLayer` s; masked keypoints are ignored as keys.

    Forward: query_map [N, C, h, w], kpt_tokens [N, K, C], kpt_mask [N, K] (True = masked)
    -> (refined keypoint tokens [N, K, C], refined map tokens [N, h*w, C]).
    """

    def __init__(self, positional_encoding: nn.Module, embed_dims: int = 256,
                 num_heads: int = 8, num_layers: int = 3, ffn_dims: int = 2048,
                 dropout: float = 0.1) -> None:
        super().__init__()
        self.pe = positional_encoding
        self.input_proj = nn.Conv2d(embed_dims, embed_dims, kernel_size=1)
        self.layers = nn.ModuleList(
            JointEncoderLayer(embed_dims, num_heads, ffn_dims, dropout) for _ in range(num_layers))

    def forward(self, query_map: torch.Tensor, kpt_tokens: torch.Tensor,
                kpt_mask: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        src = self.input_proj(query_map)
        n, _, h, w = src.shape
        k = kpt_tokens.shape[1]
        map_pos = self.pe.map_pe(h, w, n, src.device).flatten(2).transpose(1, 2)
        order_pos = self.pe.order_pe(k, n, src.device)
        x = torch.cat([src.flatten(2).transpose(1, 2), kpt_tokens], 1)
        pos = torch.cat([map_pos, order_pos], 1).to(x.dtype)
        mask = torch.cat([kpt_mask.new_zeros(n, h * w), kpt_mask.bool()], 1)
        for layer in self.layers:
            x = layer(x, pos, mask)
        return x[:, h * w:], x[:, :h * w]
