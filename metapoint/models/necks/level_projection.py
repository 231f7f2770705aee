"""The neck of every pyramid model: 1x1 projections of the deepest backbone levels."""
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metapoint.registry import MODELS

NORMS = (None, 'gn')


@MODELS.register_module()
class LevelProjectionNeck(nn.Module):
    """Conv1x1 (with bias) [+ GroupNorm] on each of the deepest ``num_levels`` backbone outputs,
    optionally fused top-down.

    * MetaPoint (``norm='gn'``, ``top_down=False``): ``P_l = GN(Conv(C_l))``.
    * FMMP (``norm=None``, ``top_down=True``): ``P'_deepest = P_deepest``; every finer level
      ``P'_l = P_l + nearest_upsample(P'_{l-1})`` to its own size (a factor 2 for ResNet strides,
      as the official ``nn.Upsample(scale_factor=2)``; resizing to the target size also handles
      odd map sizes). No smoothing conv (official).

    Args:
        in_channels: channels of ALL backbone outputs, shallow to deep (e.g. 256..2048).
        num_levels: how many of the deepest outputs to keep.
        out_channels: common width (256).
        norm: None or 'gn' (GroupNorm with ``num_groups`` groups).
        top_down: add each coarser (already fused) level to the next finer one.
    Forward: tuple of ``[N, C_i, H_i, W_i]`` shallow to deep -> list of ``[N, out_channels, H, W]``
    ordered DEEPEST FIRST (8x8, 16x16, 32x32 for a 256 input with ResNet stages 2-4), the official
    level order. State dict: ``projs.{i}.0`` the conv, ``projs.{i}.1`` the GroupNorm, i = 0 for the
    deepest level.
    """

    def __init__(self, in_channels: Sequence[int], num_levels: int = 3,
                 out_channels: int = 256, norm: Optional[str] = None, num_groups: int = 32,
                 top_down: bool = False) -> None:
        super().__init__()
        if not 1 <= num_levels <= len(in_channels):
            raise ValueError(f'num_levels must be in [1, {len(in_channels)}], got {num_levels}')
        if norm not in NORMS:
            raise ValueError(f'LevelProjectionNeck norm must be one of {NORMS}, got {norm!r}')
        self.num_levels, self.top_down = num_levels, top_down

        def proj(c: int) -> nn.Sequential:
            layers = [nn.Conv2d(c, out_channels, kernel_size=1)]
            if norm == 'gn':
                layers.append(nn.GroupNorm(num_groups, out_channels))
            return nn.Sequential(*layers)

        self.projs = nn.ModuleList(proj(c) for c in list(in_channels)[::-1][:num_levels])
        for p in self.projs:
            nn.init.xavier_uniform_(p[0].weight, gain=1)
            nn.init.constant_(p[0].bias, 0)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        out = [self.projs[0](feats[-1])]
        for i in range(1, self.num_levels):
            level = self.projs[i](feats[-1 - i])
            if self.top_down:
                level = level + F.interpolate(out[-1], size=level.shape[-2:], mode='nearest')
            out.append(level)
        return out
