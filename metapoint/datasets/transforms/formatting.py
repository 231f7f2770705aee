"""Pack one transformed instance into tensors plus the metadata needed downstream."""
from typing import Sequence

import numpy as np
import torch
from mmcv.transforms import BaseTransform

from metapoint.registry import TRANSFORMS
from metapoint.utils.geometry import crop_warp_matrix

DEFAULT_META_KEYS = ('ann_id', 'img_path', 'category_id', 'num_kpts', 'bbox_size')


@TRANSFORMS.register_module()
class PackCAPEInstance(BaseTransform):
    """Pack an instance after the top-down affine into the dict the episode collate expects.

    Output keys:
        img: uint8 tensor [3, H, W] (channel order as loaded, BGR by default);
        keypoints: float32 [K, 2] normalised crop coordinates (x / W, y / H);
        keypoints_visible: float32 [K] annotation visibility min(1, v) (the metric's mask);
        keypoint_weights: float32 [K] target weight w (visible and on the heatmap grid);
        heatmaps: float32 [K, h, w] when a target transform produced them;
        meta: dict with ``meta_keys`` plus ``gt_keypoints`` [K, 2] (image pixels), ``center``,
            ``scale`` (pixels), ``rotation`` (degrees), ``input_size`` (W, H) and ``warp_mat``
            [2, 3] (image -> crop pixels), used to map predictions back to the image.
    """

    def __init__(self, meta_keys: Sequence[str] = DEFAULT_META_KEYS) -> None:
        super().__init__()
        self.meta_keys = tuple(meta_keys)

    def transform(self, results: dict) -> dict:
        img = results['img']
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        img = np.ascontiguousarray(img.transpose(2, 0, 1))
        w, h = results['input_size']
        size = np.array([w, h], dtype=np.float32)
        visible = results['keypoints_visible'][0].astype(np.float32)
        weights = results.get('keypoint_weights', results['keypoints_visible'])[0]
        center = results['input_center']
        scale = results['input_scale']
        rot = float(results['bbox_rotation'][0]) if 'bbox_rotation' in results else 0.0
        meta = {k: results[k] for k in self.meta_keys if k in results}
        meta.update(
            gt_keypoints=results['keypoints'][0].astype(np.float32),
            center=np.asarray(center, np.float32), scale=np.asarray(scale, np.float32),
            rotation=rot, input_size=(int(w), int(h)),
            warp_mat=crop_warp_matrix(center, scale, rot, (w, h)).astype(np.float32))
        packed = dict(
            img=torch.from_numpy(img),
            keypoints=torch.from_numpy(
                (results['transformed_keypoints'][0, :, :2] / size).astype(np.float32)),
            keypoints_visible=torch.from_numpy(visible),
            keypoint_weights=torch.from_numpy(np.asarray(weights, np.float32)),
            meta=meta)
        if 'heatmaps' in results:
            packed['heatmaps'] = torch.from_numpy(results['heatmaps'])
        return packed

    def __repr__(self) -> str:
        return f'{self.__class__.__name__}(meta_keys={self.meta_keys})'
