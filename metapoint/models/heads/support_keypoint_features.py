"""Support keypoint features pooled from feature maps with the target heatmaps."""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class HeatmapKeypointPooling(nn.Module):
    """f_k = sum_u H_k(u) Up(F)(u) / (sum_u H_k(u) + 1e-8) over the first ``num_levels`` maps.

    Each level is resized bilinearly (align_corners=False) to the heatmap size; the levels are
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
        hm = heatmaps / (heatmaps.sum((-1, -2), keepdim=True) + 1e-8)
        hm = hm.flatten(2)  # [N, K, h*w]
        pooled: List[torch.Tensor] = []
        for feat in maps[:self.num_levels]:
            up = F.interpolate(feat, size=heatmaps.shape[-2:], mode='bilinear',
                               align_corners=False)
            pooled.append(hm @ up.flatten(2).transpose(1, 2))
        feats = self.proj(torch.cat(pooled, -1)) if self.fusion == 'cat' \
            else torch.stack(pooled).sum(0)
        return feats * weights.unsqueeze(-1)
