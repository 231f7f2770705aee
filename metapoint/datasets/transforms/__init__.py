"""Per-instance and episode-level transforms (mmpose 1.x top-down transforms are reachable too)."""
import mmpose.datasets.transforms  # noqa: F401  (registers LoadImage, TopdownAffine, ...)

from .formatting import PackCAPEInstance
from .invisible_keypoints import KeepInvisibleKeypointsRaw
from .keypoint_padding import KeypointPadding
from .keypoint_targets import GenerateCAPETarget, heatmap_target_weights
from .random_scale_rotation import RandomScaleRotation

__all__ = ['PackCAPEInstance', 'KeepInvisibleKeypointsRaw', 'KeypointPadding', 'GenerateCAPETarget',
           'heatmap_target_weights', 'RandomScaleRotation']
