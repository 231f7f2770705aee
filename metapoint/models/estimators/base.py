"""Base class of every CAPE estimator: mmengine ``BaseModel`` with loss / predict / tensor modes."""
from abc import ABCMeta, abstractmethod
from typing import Dict, List, Union

import numpy as np
import torch
from mmengine.model import BaseModel

from metapoint.utils.geometry import crop_to_image


class BaseCAPEEstimator(BaseModel, metaclass=ABCMeta):
    """A CAPE model: given supports with keypoints, predict the same keypoints on the queries.

    Subclasses implement :meth:`predict_points` (and :meth:`loss` when trainable). Inputs follow
    :func:`~metapoint.datasets.episode_collate`: ``inputs['support_imgs']`` [B, S, 3, H, W] and
    ``inputs['query_imgs']`` [B, Q, 3, H, W]; one batch item is one episode, so a model can encode
    an episode's supports once and its Q queries in one batch (episode-batched evaluation).

    Modes of :meth:`forward`:
        ``'loss'``: dict of loss tensors; ``'tensor'``: points [B, Q, K, 2] normalised crop
        coordinates; ``'predict'``: one dict per episode for :class:`~metapoint.evaluation.CAPEMetric`
        with the predictions mapped back to original image pixels.
    """

    def forward(self, inputs: Dict[str, torch.Tensor], data_samples: dict = None,
                mode: str = 'tensor') -> Union[Dict[str, torch.Tensor], list, torch.Tensor]:
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            points = self.predict_points(inputs, data_samples)
            return self.pack_predictions(points, data_samples)
        if mode == 'tensor':
            return self.predict_points(inputs, data_samples)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    @abstractmethod
    def predict_points(self, inputs: Dict[str, torch.Tensor], data_samples: dict) -> torch.Tensor:
        """Predicted query keypoints [B, Q, K, 2], normalised crop coordinates (x, y)."""

    def loss(self, inputs: Dict[str, torch.Tensor], data_samples: dict) -> Dict[str, torch.Tensor]:
        raise NotImplementedError(f'{type(self).__name__} is not trainable')

    @staticmethod
    def pack_predictions(points: torch.Tensor, data_samples: dict) -> List[dict]:
        """Map [B, Q, K, 2] crop predictions to image pixels; one metric input dict per episode."""
        points = points.detach().float().cpu().numpy()
        outputs = []
        for b, metas in enumerate(data_samples['query_metas']):
            warp = np.stack([m['warp_mat'] for m in metas]).astype(np.float64)
            pred = crop_to_image(points[b], warp, metas[0]['input_size'])
            outputs.append(dict(
                category_id=int(data_samples['category_id'][b]),
                num_kpts=int(data_samples['num_kpts'][b]),
                query_ann_ids=[int(m['ann_id']) for m in metas],
                pred_kpts=pred.astype(np.float32),
                gt_kpts=np.stack([m['gt_keypoints'] for m in metas]),
                query_vis=data_samples['query_keypoints_visible'][b].cpu().numpy(),
                support_vis=data_samples['support_keypoints_visible'][b].cpu().numpy(),
                bbox_size=np.array([m['bbox_size'] for m in metas], dtype=np.float32)))
        return outputs
