"""Project the deepest backbone levels to a common width (1x1 conv + GroupNorm)."""
from typing import List, Sequence

import torch
from torch import nn

from metapoint.registry import MODELS


@MODELS.register_module()
class InputProjection(nn.Module):
    """Conv1x1 + GroupNorm(32, C) on each of the deepest ``num_levels`` backbone outputs.

    Args:
        in_channels: channels of ALL backbone outputs, shallow to deep (e.g. 256..2048).
        num_levels: how many of the deepest levels to keep (MetaPoint ``res_layer_num``).
        out_channels: common width (256).
    Forward: tuple of [B, C_i, H_i, W_i] shallow to deep -> list of [B, out_channels, H, W]
    ordered DEEPEST FIRST (8x8, 16x16, 32x32 for a 256 input), the official level order.
    """

    def __init__(self, in_channels: Sequence[int], num_levels: int = 3,
                 out_channels: int = 256, num_groups: int = 32) -> None:
        super().__init__()
        if not 1 <= num_levels <= len(in_channels):
            raise ValueError(f'num_levels must be in [1, {len(in_channels)}], got {num_levels}')
        self.num_levels = num_levels
        self.projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, kernel_size=1),
                          nn.GroupNorm(num_groups, out_channels))
            for c in list(in_channels)[::-1][:num_levels])
        for proj in self.projs:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        return [proj(feats[-1 - i]) for i, proj in enumerate(self.projs)]
