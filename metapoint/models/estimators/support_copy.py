"""SupportCopy: the non-learned floor of every CAPE result table."""
from typing import Optional

import torch

from metapoint.registry import MODELS
from metapoint.structures import EpisodeBatch
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
    anyway). It has no parameters and no criterion; run it with ``tools/test.py``.
    """

    def extract_features(self, batch: EpisodeBatch):
        """No image features: the prediction uses the support keypoints only."""
        return None, None

    def encode_support(self, support_feats, batch: EpisodeBatch) -> dict:
        """Mean support layout ``[B, K, 2]`` over the shots that annotate each keypoint."""
        vis = batch.support_keypoints_visible > 0  # [B, S, K]
        mean = visibility_weighted_shot_mean(batch.support_keypoints, vis, floor=1)
        seen = vis.any(1)[..., None]
        return dict(layout=torch.where(seen, mean, torch.full_like(mean, 0.5)))

    def decode_queries(self, query_feats, support: dict, batch: EpisodeBatch,
                       init_points: Optional[torch.Tensor] = None) -> dict:
        return dict(points=[batch.per_query(support['layout'])])
