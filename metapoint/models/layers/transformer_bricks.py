"""Bricks shared by the hand-written transformer layers (post-norm, DETR style).

Every layer type of the three models ends the same way: an attention output is added to the
residual and normalised, then a ReLU feed-forward network is added and normalised. That tail is
:class:`PostNormLayer`; the layers subclass it and compute only their own attention.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class PostNormLayer(nn.Module):
    """The post-norm tail of a transformer layer.

    ``x <- LN_1(x + Drop(attn)); x <- LN_2(x + Drop(W_2 Drop(ReLU(W_1 x))))``.

    Submodules ``norm1``, ``linear1``, ``linear2``, ``norm2`` (the names the official layers use,
    so subclasses keep their state-dict keys). Shapes: x, attn ``[..., C]``.

    A subclass calls :meth:`build_post_norm` where the official layer creates these modules, so
    random initialisation draws in the same order as before the refactor.
    """

    def build_post_norm(self, embed_dims: int = 256, ffn_dims: int = 2048,
                        dropout: float = 0.1) -> None:
        """Create the tail's modules (norms, FFN linears, three dropouts)."""
        self.norm1 = nn.LayerNorm(embed_dims)
        self.linear1 = nn.Linear(embed_dims, ffn_dims)
        self.linear2 = nn.Linear(ffn_dims, embed_dims)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)

    def add_attention(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """``LN_1(x + Drop(attn))``."""
        return self.norm1(x + self.dropout1(attn))

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        """``LN_2(x + Drop(W_2 Drop(ReLU(W_1 x))))``."""
        return self.norm2(x + self.dropout3(self.linear2(self.dropout2(F.relu(self.linear1(x))))))

    def post_norm(self, x: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Both steps: the layer output for residual ``x`` and attention output ``attn``."""
        return self.feed_forward(self.add_attention(x, attn))


class SelfAttentionLayer(PostNormLayer):
    """Multi-head self-attention over T tokens, then the :class:`PostNormLayer` tail.

    ``pos_in_value=False`` (DETR): ``q = k = x + pos``, ``v = x``, residual x.
    ``pos_in_value=True`` (CapeFormer's joint encoder): ``x <- x + pos`` first, so positions enter
    the value and the residual too and accumulate over stacked layers (intended there).

    Forward: x ``[N, T, C]``, pos ``[N or 1, T, C]`` or None, key_padding_mask ``[N, T]`` bool
    (True = not a key) -> ``[N, T, C]``. Submodules: ``self_attn`` + the tail's.
    """

    def __init__(self, embed_dims: int = 256, num_heads: int = 8, ffn_dims: int = 2048,
                 dropout: float = 0.1, pos_in_value: bool = False) -> None:
        super().__init__()
        self.pos_in_value = pos_in_value
        self.self_attn = nn.MultiheadAttention(embed_dims, num_heads, dropout=dropout,
                                               batch_first=True)
        self.build_post_norm(embed_dims, ffn_dims, dropout)

    def forward(self, x: torch.Tensor, pos: Optional[torch.Tensor] = None,
                key_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if pos is not None and self.pos_in_value:
            x = x + pos
            qk = x
        else:
            qk = x if pos is None else x + pos
        attn = self.self_attn(qk, qk, x, key_padding_mask=key_padding_mask,
                              need_weights=False)[0]
        return self.post_norm(x, attn)


def unmask_fully_masked_rows(key_padding_mask: torch.Tensor) -> torch.Tensor:
    """``[N, T]`` bool key padding mask with every all-True row made all-False (attention over
    no key would give NaN; the official layers attend to every token instead)."""
    return key_padding_mask & ~key_padding_mask.all(-1, keepdim=True)
