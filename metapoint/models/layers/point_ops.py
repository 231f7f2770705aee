"""Point utilities: logit-space coordinates and bilinear point features from a pyramid.

Points are normalised ``(x, y)``; ``(0, 0)`` is the top-left corner of the map and ``(1, 1)`` its
bottom-right corner (``align_corners=False``).
"""
from typing import Optional, Sequence, Union

import torch

from .ms_deform_attn import flatten_multilevel, multi_scale_deformable_attn_pytorch
from .precision import float32_region

__all__ = ['inverse_sigmoid', 'sample_point_features']


def inverse_sigmoid(x: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Clamped logit: ``x`` clamped to [0, 1], then ``log(max(x, eps) / max(1 - x, eps))``.

    Bounded by ``+-log(1 / eps)`` (6.9078 for eps=1e-3); the coordinate heads predict
    an offset added in this space, then ``sigmoid`` maps back to [0, 1].
    """
    x = x.clamp(min=0, max=1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


@float32_region
def sample_point_features(feature_maps: Union[Sequence[torch.Tensor], torch.Tensor],
                          points: torch.Tensor,
                          spatial_shapes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Average over levels of the bilinear samples of a pyramid at points (``get_ref_feat``).

    Args:
        feature_maps: a list of ``[B, C, H_l, W_l]`` maps, or the flattened form ``[B, S, C]``
            (levels concatenated, each in raster order) together with ``spatial_shapes``.
        points: ``[B, N, 2]`` normalised ``(x, y)``; outside [0, 1] reads zero padding.
        spatial_shapes: ``[L, 2]`` (H, W), only with the flattened form.

    Returns:
        ``[B, N, C]``: ``(1 / L) * sum_l grid_sample(map_l, 2 * p - 1)`` (bilinear, zero padding,
        ``align_corners=False``), no projection.

    Implemented as :func:`multi_scale_deformable_attn_pytorch` with one head, one point per level
    at ``p`` and uniform weights ``1 / L``, which is what the official code runs.
    """
    if isinstance(feature_maps, torch.Tensor):
        if spatial_shapes is None:
            raise ValueError('the flattened [B, S, C] form needs spatial_shapes')
        value = feature_maps
    else:
        if spatial_shapes is not None:
            raise ValueError('spatial_shapes is only for the flattened form')
        value, spatial_shapes, _ = flatten_multilevel(feature_maps)
    b, n, _ = points.shape
    num_levels = spatial_shapes.shape[0]
    locations = points[:, :, None, None, None, :].expand(-1, -1, 1, num_levels, 1, -1)
    weights = value.new_ones(b, n, 1, num_levels, 1) / num_levels
    return multi_scale_deformable_attn_pytorch(value[:, :, None], spatial_shapes, locations,
                                               weights)
