"""Keypoint features from feature maps: heatmap pooling and the support-shot fusion per query."""
import torch
import torch.nn.functional as F

from .shot_fusion import visibility_weighted_shot_mean


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


def shot_mean_per_query(feats: torch.Tensor, support_weights: torch.Tensor,
                        num_queries: int) -> torch.Tensor:
    """feats ``[B, S, K, C]`` -> ``[B*Q, K, C]``: mean over the shots where the keypoint is
    visible (``support_weights`` ``[B, S, K]`` > 0; 0 when none), repeated for the Q queries of
    each episode."""
    f = visibility_weighted_shot_mean(feats, support_weights > 0, floor=1)
    return f.repeat_interleave(num_queries, 0)
