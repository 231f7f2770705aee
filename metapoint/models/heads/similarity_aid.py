"""The optional similarity aid: a dense appearance signal for backbones trained from scratch."""
from typing import Dict, List, Sequence

import torch
from torch import nn

from metapoint.registry import MODELS
from ..layers.keypoint_pooling import heatmap_pool
from ..layers.point_ops import sample_point_features
from ..layers.shot_fusion import visibility_weighted_shot_mean
from ..layers.similarity_peaks import similarity_peak_points
from ..losses.similarity_heatmap import similarity_heatmap_loss

SUPPORT_FEATURES = ('heatmap', 'point')


@MODELS.register_module()
class SimilarityAid(nn.Module):
    """Support keypoint features matched against the query map: a loss and, optionally, start
    points. NOT part of any paper method; off unless a config sets ``similarity_aid``.

    For each requested feature level (an index into the model's level list; MetaPoint and FMMP
    order levels deepest first, so -1 is the finest), the feature of support keypoint k is taken
    from the support map (``support_features='heatmap'``: pooled with the support's target
    heatmap; ``'point'``: bilinear sample at the keypoint), averaged over the shots that see it,
    and compared by cosine similarity with every cell of the query map of that level.

    * ``loss_sim{i}`` (x ``weight``) for level ``levels[i]``: cross-entropy of
      softmax(similarity / ``temperature``) against a Gaussian (``sigma`` cells) at the query
      keypoint, on real slots (k < K_c) visible in some support shot and weighted in the query.
    * ``init_points=True``: the peak of the similarity of ``levels[0]`` (local soft-argmax within
      ``init_radius`` cells, no gradient) is handed to the model as start points ``[B*Q, K, 2]``
      in training and at test time; the model decides where it uses them (docs of each model).
    No parameters: a model's state dict is the same with or without the aid.
    """

    def __init__(self, levels: Sequence[int] = (-1,), support_features: str = 'heatmap',
                 temperature: float = 0.1, sigma: float = 1.0, weight: float = 1.0,
                 init_points: bool = False, init_radius: int = 1) -> None:
        super().__init__()
        if support_features not in SUPPORT_FEATURES:
            raise ValueError(f'SimilarityAid support_features must be one of {SUPPORT_FEATURES},'
                             f' got {support_features!r}')
        if not levels:
            raise ValueError('SimilarityAid needs at least one level')
        self.levels = tuple(int(lv) for lv in levels)
        self.support_features = support_features
        self.temperature, self.sigma, self.weight = temperature, sigma, weight
        self.init_points, self.init_radius = init_points, init_radius

    def _level(self, maps: List[torch.Tensor], level: int) -> torch.Tensor:
        if not -len(maps) <= level < len(maps):
            raise ValueError(f'SimilarityAid level {level} outside the model\'s {len(maps)} '
                             'feature levels')
        return maps[level]

    def keypoint_features(self, support_map: torch.Tensor, batch) -> torch.Tensor:
        """support_map ``[B*S, C, h, w]`` -> ``[B*Q, K, C]`` shot-fused support features."""
        b, s, k = batch.support_keypoint_weights.shape
        if self.support_features == 'heatmap':
            if batch.support_heatmaps is None:
                raise KeyError("SimilarityAid(support_features='heatmap') needs support heatmaps"
                               ': add GenerateCAPETarget to the pipeline or use '
                               "support_features='point'")
            f = heatmap_pool(support_map, batch.support_heatmaps.flatten(0, 1))
        else:
            f = sample_point_features([support_map], batch.support_keypoints.flatten(0, 1))
        fused = visibility_weighted_shot_mean(f.view(b, s, k, -1),
                                              batch.support_keypoint_weights > 0, floor=1)
        return batch.per_query(fused)

    def prepare(self, support_maps: List[torch.Tensor], query_maps: List[torch.Tensor],
                batch) -> dict:
        """Features per level (and start points) for one batch: ``features`` list of
        ``[B*Q, K, C]``, ``query_maps`` list of ``[B*Q, C, h, w]``, ``init_points`` or None."""
        feats = [self.keypoint_features(self._level(support_maps, lv), batch)
                 for lv in self.levels]
        maps = [self._level(query_maps, lv) for lv in self.levels]
        init = similarity_peak_points(feats[0], maps[0], temperature=self.temperature,
                                      radius=self.init_radius) if self.init_points else None
        return dict(features=feats, query_maps=maps, init_points=init)

    def loss(self, state: dict, batch) -> Dict[str, torch.Tensor]:
        """``loss_sim{i}`` per level of ``levels``."""
        q_kpts = batch.flat_queries(batch.query_keypoints)
        q_w = batch.flat_queries(batch.query_keypoint_weights)
        slots = torch.arange(batch.num_slots, device=q_w.device)
        real = slots[None] < batch.per_query(batch.num_kpts.to(q_w.device))[:, None]
        seen = batch.per_query(batch.support_keypoint_weights.amax(1) > 0)
        mask = seen & (q_w > 0) & real
        return {f'loss_sim{i}': self.weight * similarity_heatmap_loss(
                    f, m, q_kpts, mask, temperature=self.temperature, sigma=self.sigma)
                for i, (f, m) in enumerate(zip(state['features'], state['query_maps']))}
