"""Keypoint features from feature maps by heatmap pooling."""
import torch
import torch.nn.functional as F


def heatmap_pool(feature_map: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmap-weighted mean of a feature map per keypoint.

    Args:
        feature_map: ``[N, C, h, w]``; resized bilinearly (align_corners=False) to the heatmap
            size first.
        heatmaps: ``[N, K, H, W]`` (any non-negative weights; normalised here).
    Returns:
        ``[N, K, C]``: ``sum_u H_k(u) Up(F)(u) / (sum_u H_k(u) + 1e-8)``; an all-zero heatmap
        gives a zero feature.
    """
    hm = heatmaps / (heatmaps.sum((-1, -2), keepdim=True) + 1e-8)
    up = F.interpolate(feature_map, size=heatmaps.shape[-2:], mode='bilinear',
                       align_corners=False)
    return hm.flatten(2) @ up.flatten(2).transpose(1, 2)
