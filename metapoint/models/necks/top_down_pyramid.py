"""FMMP feature pyramid: 1x1 projections of the deepest backbone stages + top-down fusion."""
from typing import List, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metapoint.registry import MODELS


@MODELS.register_module()
class TopDownPyramid(nn.Module):
    """Conv1x1 (with bias, no norm) on the deepest ``num_levels`` stages, then top-down fusion.

    ``P'_deepest = P_deepest``; every finer level ``P'_l = P_l + nearest_upsample(P'_{l-1})`` to
    its own size (a factor 2 for ResNet strides, as the official ``nn.Upsample(scale_factor=2)``;
    resizing to the target size also handles odd map sizes). No smoothing conv (official).

    Args:
        in_channels: channels of ALL backbone outputs, shallow to deep (e.g. 512, 1024, 2048).
        num_levels: how many of the deepest outputs to use (3 in FMMP).
        out_channels: common width (256).
    Forward: tuple of ``[N, C_i, H_i, W_i]`` shallow to deep -> list of ``[N, out_channels, H, W]``
    ordered DEEPEST FIRST (8x8, 16x16, 32x32 for a 256 input with ResNet stages 2-4).
    State dict: ``projs.{i}.0.{weight,bias}``, i = 0 for the deepest level (official
    ``backbone_projs.{i}.0``).
    """

    def __init__(self, in_channels: Sequence[int], num_levels: int = 3,
                 out_channels: int = 256) -> None:
        super().__init__()
        if not 1 <= num_levels <= len(in_channels):
            raise ValueError(f'num_levels must be in [1, {len(in_channels)}], got {num_levels}')
        self.num_levels = num_levels
        self.projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, out_channels, kernel_size=1))
            for c in list(in_channels)[::-1][:num_levels])
        for proj in self.projs:
            nn.init.xavier_uniform_(proj[0].weight, gain=1)
            nn.init.constant_(proj[0].bias, 0)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        out = [self.projs[0](feats[-1])]
        for i in range(1, self.num_levels):
            lateral = self.projs[i](feats[-1 - i])
            out.append(lateral + F.interpolate(out[-1], size=lateral.shape[-2:], mode='nearest'))
        return out
