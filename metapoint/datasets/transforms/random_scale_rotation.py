"""Random box scale and rotation with the official MP-100 (mmpose 0.x) distribution."""
import numpy as np
from mmcv.transforms import BaseTransform

from metapoint.registry import TRANSFORMS


@TRANSFORMS.register_module()
class RandomScaleRotation(BaseTransform):
    """Randomly rescale the box and pick a rotation, as the official CAPE training pipelines do.

    scale <- scale * clip(1 + scale_factor * N(0, 1), 1 - scale_factor, 1 + scale_factor);
    rotation = clip(rot_factor * N(0, 1), -2 rot_factor, 2 rot_factor) (degrees) with probability
    ``rot_prob``, else 0. (mmpose 1.x's ``RandomBBoxTransform`` draws from other distributions.)

    Random numbers come from ``results['rng']`` (a ``numpy.random.Generator`` the dataset seeds per
    episode) when present, else from the global numpy RNG.

    Required keys: ``bbox_scale`` [1, 2]. Modified: ``bbox_scale``. Added: ``bbox_rotation`` [1].
    """

    def __init__(self, scale_factor: float = 0.15, rot_factor: float = 15.0,
                 rot_prob: float = 0.6) -> None:
        super().__init__()
        if scale_factor < 0 or scale_factor >= 1:
            raise ValueError(f'scale_factor must be in [0, 1), got {scale_factor}')
        if rot_factor < 0 or not 0 <= rot_prob <= 1:
            raise ValueError(f'invalid rot_factor {rot_factor} / rot_prob {rot_prob}')
        self.scale_factor = scale_factor
        self.rot_factor = rot_factor
        self.rot_prob = rot_prob

    def transform(self, results: dict) -> dict:
        rng = results.get('rng') or np.random
        sf, rf = self.scale_factor, self.rot_factor
        s = float(np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf))
        r = float(np.clip(rng.standard_normal() * rf, -2 * rf, 2 * rf)) \
            if rng.random() <= self.rot_prob else 0.0
        results['bbox_scale'] = results['bbox_scale'] * s
        results['bbox_rotation'] = np.array([r], dtype=np.float32)
        return results

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(scale_factor={self.scale_factor}, '
                f'rot_factor={self.rot_factor}, rot_prob={self.rot_prob})')
