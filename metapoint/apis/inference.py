"""High-level inference: build a CAPE model from a config and run it on a custom episode."""
from typing import List, Optional, Sequence, Union

import cv2
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
    """Build the model of ``config`` and load ``checkpoint`` (``weights_only`` loading, strict:
    a missing or unexpected key raises, naming the checkpoint).

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
        try:  # strict: a checkpoint of another model must not leave random weights behind
            load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
        except RuntimeError as e:
            raise RuntimeError(f'checkpoint {checkpoint} does not match the model of the config '
                               f'({type(model).__name__}): {e}') from e
    model.cfg = cfg
    return model.to(device).eval()


def _instance(img: ImageLike, keypoints: Optional[np.ndarray], bbox: Optional[Sequence[float]],
              max_kpt_num: int, num_kpts: int) -> dict:
    """An instance record like the dataset's (keypoints in image pixels, [K_c, 2] or [K_c, 3]).

    Without ``bbox``: a support (``keypoints`` given) uses its annotated keypoints' tight box
    ``[x_min, y_min, x_max - x_min + 1, y_max - y_min + 1]``; a query (no keypoints) uses the
    whole image ``[0, 0, W, H]`` (a path is decoded here to know its size).
    """
    if bbox is None and keypoints is None and isinstance(img, str):
        loaded = cv2.imread(img, cv2.IMREAD_COLOR)
        if loaded is None:
            raise FileNotFoundError(f'cannot read query image {img}')
        img = loaded
    results = dict(img_path=img) if isinstance(img, str) else dict(img=img, img_path=None)
    if not isinstance(img, str):
        results['img_shape'] = results['ori_shape'] = img.shape[:2]
    kpts = np.zeros((1, max_kpt_num, 2), np.float32)
    vis = np.zeros((1, max_kpt_num), np.float32)
    if keypoints is not None:
        arr = np.asarray(keypoints, np.float32)
        if arr.ndim != 2 or arr.shape[1] not in (2, 3) or len(arr) != num_kpts:
            raise ValueError(f'support keypoints must be [{num_kpts}, 2] or [{num_kpts}, 3], '
                             f'got {list(arr.shape)}')
        kpts[0, :num_kpts] = arr[:, :2]
        vis[0, :num_kpts] = np.minimum(1, arr[:, 2]) if arr.shape[1] == 3 else 1
    if bbox is None:
        if keypoints is None:
            bbox = [0.0, 0.0, float(img.shape[1]), float(img.shape[0])]
        else:
            pts = kpts[0, :num_kpts][vis[0, :num_kpts] > 0]
            if len(pts) == 0:
                raise ValueError('a support without a bbox needs at least one visible keypoint')
            lo, hi = pts.min(0), pts.max(0)
            bbox = [lo[0], lo[1], hi[0] - lo[0] + 1, hi[1] - lo[1] + 1]
    x, y, w, h = (float(v) for v in bbox)
    x2, y2 = x + w, y + h
    if sanitise_bbox(bbox, 1e9, 1e9) is None:
        raise ValueError(f'empty bbox {list(bbox)} (x, y, w, h)')
    results.update(ann_id=-1, category_id=-1, num_kpts=num_kpts, keypoints=kpts,
                   keypoints_visible=vis, bbox=np.array([[x, y, x2, y2]], np.float32),
                   bbox_size=float(max(w, h)))
    return results


@torch.no_grad()
def inference_episode(model: torch.nn.Module, support_imgs: List[ImageLike],
                      support_keypoints: List[np.ndarray], query_imgs: List[ImageLike],
                      query_bboxes: Optional[List[Optional[Sequence[float]]]] = None,
                      support_bboxes: Optional[List[Optional[Sequence[float]]]] = None,
                      skeleton: Sequence[Sequence[int]] = ()) -> np.ndarray:
    """Predict the support keypoints on every query image (one episode, no gradients).

    Every instance goes through the config's test pipeline (crop of the box grown by the
    config's padding, resized to the model input) and the episode through the test dataset's
    ``episode_pipeline`` (keypoint padding, FMMP's neighbour table), exactly as in evaluation.

    Args:
        support_imgs / query_imgs: image paths or BGR uint8 ``[H, W, 3]`` arrays.
        support_keypoints: per support, ``[K_c, 2]`` or ``[K_c, 3]`` (x, y[, v]) in image
            pixels; v > 0 marks an annotated keypoint (all annotated without v).
        query_bboxes: per query, ``[x, y, w, h]`` of the object in image pixels, or None for
            the whole image; None: every query uses its whole image.
        support_bboxes: optional boxes; default (or a None entry) = the keypoints' tight box.
        skeleton: 0-indexed keypoint links of the category.
    Returns:
        ``[Q, K_c, 2]`` predicted keypoints (x, y) in query image pixels.
    """
    cfg = model.cfg
    dataset_cfg = cfg.test_dataloader.dataset
    max_kpt_num = getattr(model, 'max_kpt_num', None) or dataset_cfg.get('max_kpt_num', 70)
    num_kpts = len(support_keypoints[0])
    if num_kpts > max_kpt_num:
        raise ValueError(f'{num_kpts} keypoints but the model takes at most '
                         f'max_kpt_num={max_kpt_num}')
    pipeline = build_pipeline([t for t in dataset_cfg.pipeline])
    episode_pipeline = build_pipeline(list(dataset_cfg.get('episode_pipeline') or []))
    support_bboxes = support_bboxes or [None] * len(support_imgs)
    query_bboxes = query_bboxes or [None] * len(query_imgs)
    if len(query_bboxes) != len(query_imgs) or len(support_bboxes) != len(support_imgs):
        raise ValueError('one bbox (or None) per image is needed: got '
                         f'{len(support_bboxes)} for {len(support_imgs)} supports, '
                         f'{len(query_bboxes)} for {len(query_imgs)} queries')
    supports = [pipeline(_instance(i, k, b, max_kpt_num, num_kpts))
                for i, k, b in zip(support_imgs, support_keypoints, support_bboxes)]
    queries = [pipeline(_instance(i, None, b, max_kpt_num, num_kpts))
               for i, b in zip(query_imgs, query_bboxes)]
    episode = dict(supports=supports, queries=queries, category_id=-1, num_kpts=num_kpts,
                   skeleton=[list(p) for p in skeleton])
    batch = episode_collate([episode_pipeline(episode)])
    outputs = model.test_step(batch)
    return outputs[0]['pred_kpts'][:, :num_kpts]
