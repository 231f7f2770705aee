"""Keypoint features from feature maps by heatmap pooling."""
import functools

import torch
import torch.nn.functional as F


@functools.lru_cache(maxsize=64)
def _bilinear_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """``[out_size, in_size]`` float64 matrix of 1-D bilinear resizing with
    ``align_corners=False`` (PyTorch's rule: source ``(i + 0.5) * in / out - 0.5``, clamped at 0,
    the upper neighbour clamped at ``in - 1``)."""
    scale = in_size / out_size
    src = ((torch.arange(out_size, dtype=torch.float64) + 0.5) * scale - 0.5).clamp(min=0)
    lo = src.floor().long().clamp(max=in_size - 1)
    hi = (lo + 1).clamp(max=in_size - 1)
    frac = src - lo
    mat = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)
    mat.index_put_((rows, lo), 1 - frac, accumulate=True)
    mat.index_put_((rows, hi), frac, accumulate=True)
    return mat


def resize_matrices(in_hw, out_hw, device=None, dtype=torch.float32):
    """Row and column matrices ``U_y [H, h]``, ``U_x [W, w]`` with
    ``F.interpolate(f, (H, W), mode='bilinear', align_corners=False) == U_y f U_x^T``."""
    # torch.export traces with fake tensors: a cached one would poison later eager calls
    build = _bilinear_matrix.__wrapped__ if torch.compiler.is_exporting() else _bilinear_matrix
    return (build(int(in_hw[0]), int(out_hw[0])).to(device, dtype),
            build(int(in_hw[1]), int(out_hw[1])).to(device, dtype))


def heatmap_pool(feature_map: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
    """Heatmap-weighted mean of a feature map per keypoint.

    Args:
        feature_map: ``[N, C, h, w]``; resized bilinearly (align_corners=False) to the heatmap
            size first (mathematically; see below).
        heatmaps: ``[N, K, H, W]`` (any non-negative weights; normalised here).
    Returns:
        ``[N, K, C]``: ``sum_u H_k(u) Up(F)(u) / (sum_u H_k(u) + 1e-8)``; an all-zero heatmap
        gives a zero feature.

    Resizing is linear, ``Up(F) = U_y F U_x^T``, so the sum equals
    ``sum_v (U_y^T H_k U_x)(v) F(v)`` over the ``h x w`` cells: the heatmaps are brought to the
    feature map's size by the transposed resize and the ``C``-channel map is never upsampled
    (for a stride-32 ResNet-50 map and 64 x 64 heatmaps that upsampled map is 2048 x 64 x 64
    per image, whose copies dominated the support pooling). Same result up to float rounding.
    """
    hm = heatmaps / (heatmaps.sum((-1, -2), keepdim=True) + 1e-8)
    if tuple(feature_map.shape[-2:]) != tuple(heatmaps.shape[-2:]):
        u_y, u_x = resize_matrices(feature_map.shape[-2:], heatmaps.shape[-2:],
                                   hm.device, hm.dtype)
        hm = u_y.t() @ hm @ u_x  # [N, K, h, w]
    return hm.flatten(2) @ feature_map.flatten(2).transpose(1, 2).to(hm.dtype)
