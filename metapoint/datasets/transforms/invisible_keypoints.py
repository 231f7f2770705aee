"""Invisible keypoints keep their annotation coordinates through the crop (official FMMP data)."""
import numpy as np
from mmcv.transforms import BaseTransform

from metapoint.registry import TRANSFORMS


@TRANSFORMS.register_module()
class KeepInvisibleKeypointsRaw(BaseTransform):
    """Put the raw image coordinates back on the keypoints that are not annotated as visible.

    mmpose 0.x ``TopDownAffine`` (the official data pipeline) moved only the visible joints into
    the crop; an invisible joint kept its annotation value, usually (0, 0) in MP-100, and after
    the division by the input size it is a point near the crop's top-left corner. In FMMP these
    coordinates still matter: the structural heads of a keypoint also point at its invisible
    neighbours, and eqdiv / mixup padding interpolates links whose ends may be invisible. Placed
    after ``TopdownAffine``, this transform reproduces those inputs. Visible keypoints and the
    metric (which masks invisible keypoints) are unaffected.

    Required keys: ``keypoints`` [1, K, 2] (image pixels), ``keypoints_visible`` [1, K],
    ``transformed_keypoints`` [1, K, 2] (crop pixels). Modified: ``transformed_keypoints``.
    """

    def transform(self, results: dict) -> dict:
        hidden = np.asarray(results['keypoints_visible']) <= 0
        crop = np.array(results['transformed_keypoints'], dtype=np.float32, copy=True)
        crop[..., :2][hidden] = np.asarray(results['keypoints'])[..., :2][hidden]
        results['transformed_keypoints'] = crop
        return results
