"""Support keypoint features pooled from feature maps with the target heatmaps."""
from typing import List, Sequence

import torch
from torch import nn

from ..layers.keypoint_pooling import heatmap_pool


class HeatmapKeypointPooling(nn.Module):
    """:func:`~metapoint.models.layers.heatmap_pool` of the first ``num_levels`` maps, fused.

    f_k = sum_u H_k(u) Up(F)(u) / (sum_u H_k(u) + 1e-8) per level; the levels are
    fused by 'cat' (Linear(C*n -> C), ReLU, Linear, ReLU) or 'add' (sum, no projection). The result
    is multiplied by the keypoint weights, so an invisible keypoint has a zero feature.

    Forward: maps list of [N, C, H_l, W_l] (deepest first), heatmaps [N, K, h, w],
    weights [N, K] -> [N, K, C].
    """

    def __init__(self, channels: int = 256, num_levels: int = 1, fusion: str = 'cat') -> None:
        super().__init__()
        if fusion not in ('cat', 'add'):
            raise ValueError(f"skfeat fusion must be 'cat' or 'add', got {fusion!r}")
        self.num_levels, self.fusion = num_levels, fusion
        if fusion == 'cat':
            self.proj = nn.Sequential(nn.Linear(channels * num_levels, channels), nn.ReLU(),
                                      nn.Linear(channels, channels), nn.ReLU())

    def forward(self, maps: Sequence[torch.Tensor], heatmaps: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        pooled: List[torch.Tensor] = [heatmap_pool(feat, heatmaps)
                                      for feat in maps[:self.num_levels]]
        feats = self.proj(torch.cat(pooled, -1)) if self.fusion == 'cat' \
            else torch.stack(pooled).sum(0)
        return feats * weights.unsqueeze(-1)
