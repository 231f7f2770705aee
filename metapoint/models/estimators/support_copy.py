"""SupportCopy: the non-learned floor of every CAPE result table."""
from typing import Dict

import torch

from metapoint.registry import MODELS
from ..layers.shot_fusion import visibility_weighted_shot_mean
from .base import BaseCAPEEstimator


@MODELS.register_module()
class SupportCopy(BaseCAPEEstimator):
    """Predict, for every query, the support keypoints' crop coordinates (mean over shots).

    This is a real baseline, not a placeholder: because crops are centred on the box and scaled by
    its size, copying the support layout scores whatever the categories' pose regularity gives for
    free (aligned faces score high, articulated animals low). A learned model has to beat it to show
    it used the query image at all. Shots are averaged over those where the keypoint is annotated;
    a keypoint annotated in no shot is predicted at the crop centre (it is masked out of the metric
    anyway). It has no parameters and no loss; run it with ``tools/test.py``.
    """

    def predict_points(self, inputs: Dict[str, torch.Tensor], data_samples: dict) -> torch.Tensor:
        kpts = data_samples['support_keypoints']  # [B, S, K, 2]
        vis = data_samples['support_keypoints_visible'] > 0  # [B, S, K]
        mean = visibility_weighted_shot_mean(kpts, vis, floor=1)
        seen = vis.any(1)[..., None]
        mean = torch.where(seen, mean, torch.full_like(mean, 0.5))  # [B, K, 2]
        num_queries = inputs['query_imgs'].shape[1]
        return mean.unsqueeze(1).expand(-1, num_queries, -1, -1).contiguous()
