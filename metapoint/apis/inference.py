"""High-level inference: build a CAPE model from a config and run it on a custom episode."""
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint

from metapoint.datasets import build_pipeline, episode_collate
from metapoint.datasets.annotation_parsing import sanitise_bbox
from metapoint.models.backbones import disable_backbone_pretrained
from metapoint.registry import MODELS
from metapoint.utils import register_all_modules

ImageLike = Union[str, np.ndarray]


def init_estimator(config: Union[str, Config], checkpoint: Optional[str] = None,
                   device: str = 'cpu', cfg_options: Optional[dict] = None) -> torch.nn.Module:
    """Build the model of ``config`` and load ``checkpoint`` (``weights_only`` loading).

    With a checkpoint, the backbone's ``pretrained`` is set to None first (in ``config``): the
    checkpoint replaces those weights, so ImageNet weights are neither read nor downloaded.
    The config is attached as ``model.cfg`` (its ``test_dataloader`` pipeline is reused by
    :func:`inference_episode`).
    """
    register_all_modules()
    cfg = Config.fromfile(config) if isinstance(config, str) else config
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if checkpoint is not None:
        disable_backbone_pretrained(cfg.model)
    model = MODELS.build(cfg.model)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, map_location='cpu')
    model.cfg = cfg
    return model.to(device).eval()


def _instance(img: ImageLike, keypoints: Optional[np.ndarray], bbox: Optional[Sequence[float]],
              max_kpt_num: int, num_kpts: int) -> dict:
    """An instance record like the dataset's (keypoints in image pixels, [K_c, 2] or [K_c, 3])."""
    results = dict(img_path=img) if isinstance(img, str) else dict(img=img, img_path=None)
    if not isinstance(img, str):
        results['img_shape'] = results['ori_shape'] = img.shape[:2]
    kpts = np.zeros((1, max_kpt_num, 2), np.float32)
    vis = np.zeros((1, max_kpt_num), np.float32)
    if keypoints is not None:
        arr = np.asarray(keypoints, np.float32)
        kpts[0, :num_kpts] = arr[:, :2]
        vis[0, :num_kpts] = np.minimum(1, arr[:, 2]) if arr.shape[1] == 3 else 1
    if bbox is None:
        if keypoints is None:
            raise ValueError('a query needs a bbox [x, y, w, h]')
        pts = kpts[0, :num_kpts][vis[0, :num_kpts] > 0]
        lo, hi = pts.min(0), pts.max(0)
        bbox = [lo[0], lo[1], hi[0] - lo[0] + 1, hi[1] - lo[1] + 1]
    x, y, w, h = (float(v) for v in bbox)
    x2, y2 = x + w, y + h
    if sanitise_bbox(bbox, 1e9, 1e9) is None:
        raise ValueError(f'empty bbox {bbox}')
    results.update(ann_id=-1, category_id=-1, num_kpts=num_kpts, keypoints=kpts,
                   keypoints_visible=vis, bbox=np.array([[x, y, x2, y2]], np.float32),
                   bbox_size=float(max(w, h)))
    return results


@torch.no_grad()
def inference_episode(model: torch.nn.Module, support_imgs: List[ImageLike],
                      support_keypoints: List[np.ndarray], query_imgs: List[ImageLike],
                      query_bboxes: List[Sequence[float]],
                      support_bboxes: Optional[List[Sequence[float]]] = None,
                      skeleton: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """Predict the support keypoints on every query image.

    Args:
        support_imgs / query_imgs: image paths or BGR uint8 arrays.
        support_keypoints: per support, [K_c, 2] or [K_c, 3] (x, y[, v]) in image pixels.
        query_bboxes: per query, [x, y, w, h] of the object in image pixels.
        support_bboxes: optional boxes; default = the keypoints' tight box.
    Returns:
        [Q, K_c, 2] predicted keypoints in query image pixels.
    """
    cfg = model.cfg
    dataset_cfg = cfg.test_dataloader.dataset
    max_kpt_num = dataset_cfg.get('max_kpt_num', 70)
    num_kpts = len(support_keypoints[0])
    pipeline_cfg = [t for t in dataset_cfg.pipeline]
    pipeline = build_pipeline(pipeline_cfg)
    support_bboxes = support_bboxes or [None] * len(support_imgs)
    supports = [pipeline(_instance(i, k, b, max_kpt_num, num_kpts))
                for i, k, b in zip(support_imgs, support_keypoints, support_bboxes)]
    queries = [pipeline(_instance(i, None, b, max_kpt_num, num_kpts))
               for i, b in zip(query_imgs, query_bboxes)]
    episode = dict(supports=supports, queries=queries, category_id=-1, num_kpts=num_kpts,
                   skeleton=[list(p) for p in skeleton])
    batch = episode_collate([episode])
    outputs = model.test_step(batch)
    return outputs[0]['pred_kpts'][:, :num_kpts]
