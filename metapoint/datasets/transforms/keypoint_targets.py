"""Keypoint target weights and gaussian heatmap targets in the crop."""
from typing import Optional, Sequence

import numpy as np
from mmcv.transforms import BaseTransform
from mmpose.codecs.utils import generate_gaussian_heatmaps

from metapoint.registry import TRANSFORMS


def heatmap_target_weights(kpts_hm: np.ndarray, visible: np.ndarray, heatmap_size: Sequence[int],
                           sigma: float) -> np.ndarray:
    """Target weight w_k = v_k, set to 0 when the 3-sigma gaussian patch lies fully off the map.

    Args:
        kpts_hm: [N, K, 2] keypoints in heatmap pixels (crop pixels / stride).
        visible: [N, K] annotation visibility.
        heatmap_size: (W, H).
    Returns:
        [N, K] float32 weights (same rule as mmpose's ``generate_gaussian_heatmaps`` / MSRA).
    """
    w, h = heatmap_size
    radius = 3 * sigma
    mu = (kpts_hm + 0.5).astype(np.int64)
    left_top = (mu - radius).astype(np.int64)
    right_bottom = (mu + radius + 1).astype(np.int64)
    off = ((left_top[..., 0] >= w) | (left_top[..., 1] >= h)
           | (right_bottom[..., 0] < 0) | (right_bottom[..., 1] < 0))
    weights = visible.astype(np.float32).copy()
    weights[off] = 0
    return weights


@TRANSFORMS.register_module()
class GenerateCAPETarget(BaseTransform):
    """Target weights (always) and MSRA gaussian heatmaps (when ``with_heatmap``).

    The models use the weight w (out-of-map keypoints count as invisible); the metric uses the
    annotation visibility. Heatmaps are unnormalised (peak 1), ``heatmap_size`` (W, H), sigma in
    heatmap pixels, the official 64x64 / sigma 2 by default.

    Required keys: ``transformed_keypoints`` [1, K, 2] (crop pixels), ``keypoints_visible``
    [1, K], ``input_size`` (W, H). Added: ``keypoint_weights`` [1, K], ``heatmaps`` [K, H, W].
    """

    def __init__(self, heatmap_size: Sequence[int] = (64, 64), sigma: float = 2.0,
                 with_heatmap: bool = False) -> None:
        super().__init__()
        self.heatmap_size = tuple(int(s) for s in heatmap_size)
        self.sigma = float(sigma)
        self.with_heatmap = with_heatmap

    def transform(self, results: dict) -> Optional[dict]:
        in_w, in_h = results['input_size']
        stride = np.array([in_w / self.heatmap_size[0], in_h / self.heatmap_size[1]],
                          dtype=np.float32)
        kpts_hm = results['transformed_keypoints'][..., :2] / stride
        visible = results['keypoints_visible']
        if self.with_heatmap:
            heatmaps, weights = generate_gaussian_heatmaps(
                self.heatmap_size, kpts_hm, visible, self.sigma)
            results['heatmaps'] = heatmaps
        else:
            weights = heatmap_target_weights(kpts_hm, visible, self.heatmap_size, self.sigma)
        results['keypoint_weights'] = weights.astype(np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(heatmap_size={self.heatmap_size}, '
                f'sigma={self.sigma}, with_heatmap={self.with_heatmap})')
