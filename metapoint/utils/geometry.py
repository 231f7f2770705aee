"""Mapping between original-image pixels and the normalised [0, 1] crop coordinates.

The crop is the mmpose top-down affine crop (no UDP): the box of size ``scale`` (pixels, aspect
already fixed to the input) centred on ``center`` and rotated by ``rotation`` degrees is warped to
``input_size`` (W, H). A normalised crop point (u, v) is crop pixel (u * W, v * H).
"""
from typing import Sequence

import numpy as np
from mmpose.structures.bbox import get_warp_matrix


def crop_warp_matrix(center: np.ndarray, scale: np.ndarray, rotation: float,
                     input_size: Sequence[int]) -> np.ndarray:
    """[2, 3] affine matrix from image pixels to crop pixels."""
    return get_warp_matrix(np.asarray(center, np.float32), np.asarray(scale, np.float32),
                           float(rotation), output_size=tuple(input_size)).astype(np.float64)


def crop_to_image(points: np.ndarray, warp_mats: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """Map normalised crop points back to image pixels.

    Args:
        points: [N, K, 2] normalised crop coordinates (x, y) in [0, 1].
        warp_mats: [N, 2, 3] image->crop matrices (one per instance).
        input_size: crop (W, H) in pixels.
    Returns:
        [N, K, 2] float64 image-pixel coordinates.
    """
    pts = np.asarray(points, dtype=np.float64) * np.asarray(input_size, dtype=np.float64)
    lin = warp_mats[:, :, :2]  # [N, 2, 2]
    shift = warp_mats[:, :, 2]  # [N, 2]
    inv = np.linalg.inv(lin)
    return np.einsum('nij,nkj->nki', inv, pts - shift[:, None, :])


def image_to_crop(points: np.ndarray, warp_mats: np.ndarray, input_size: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`crop_to_image`: [N, K, 2] image pixels -> normalised crop coordinates."""
    pts = np.asarray(points, dtype=np.float64)
    crop = np.einsum('nij,nkj->nki', warp_mats[:, :, :2], pts) + warp_mats[:, None, :, 2]
    return crop / np.asarray(input_size, dtype=np.float64)
