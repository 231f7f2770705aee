"""CapeFormer's loss: similarity heatmap MSE, proposal L1 and per-layer L1 (quirk CF8)."""
from typing import Dict

import torch
import torch.nn.functional as F
from torch import nn

from metapoint.registry import MODELS


def weighted_l1(points: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
                normaliser: torch.Tensor) -> torch.Tensor:
    """``mean_n sum_k w_nk (|dx| + |dy|)_nk / norm_n`` for points / target ``[N, K, 2]``,
    weights ``[N, K]`` and a per-sample normaliser ``[N]``."""
    return (((points - target).abs().sum(-1) * weights).sum(-1) / normaliser).mean()


@MODELS.register_module()
class CapeFormerCriterion(nn.Module):
    """``heatmap_loss``, ``proposal_loss`` and ``l1_loss_layer{l}`` (the official names).

    With ``w = query target weight x support mask`` (the product of the shots' target weights)
    and the per-query normaliser ``n = sum_k w_k`` (1 when 0):

    * ``l1_loss_layer{l}`` = ``layer_weight`` x mean over queries of
      ``sum_k w_k (|dx| + |dy|) / n`` for the reported points of layer l;
    * ``proposal_loss`` = ``proposal_weight`` x the same for the global soft-argmax proposal;
    * ``heatmap_loss`` = ``heatmap_weight`` x mean over queries of
      ``sum_k w_k mean_u (sigmoid(S_k(u)) - H_k(u))^2 / n``, where H is the query target heatmap
      resized bilinearly to the similarity grid (``align_corners=False``: it samples pixels, it
      does not average them) and divided by its maximum + 1e-10.

    A query-visible keypoint that the supports do not all see gets no loss.

    Args:
        heatmap_weight: weight of the heatmap term (official 2.0; 0 drops the term and the need
            for query heatmaps).
        proposal_weight / layer_weight: weights of the L1 terms (official 1.0).
    Inputs: :meth:`CapeFormer.decode_queries` outputs (``points``, ``proposals_global``,
    ``similarity_map``, ``support_mask``) and the batch (query keypoints, weights, heatmaps).
    """

    def __init__(self, heatmap_weight: float = 2.0, proposal_weight: float = 1.0,
                 layer_weight: float = 1.0) -> None:
        super().__init__()
        self.heatmap_weight = heatmap_weight
        self.proposal_weight = proposal_weight
        self.layer_weight = layer_weight

    def forward(self, outputs: dict, batch) -> Dict[str, torch.Tensor]:
        target = batch.flat_queries(batch.query_keypoints)  # [N, K, 2]
        weights = batch.flat_queries(batch.query_keypoint_weights) * outputs['support_mask']
        normaliser = weights.sum(-1)
        normaliser = torch.where(normaliser == 0, torch.ones_like(normaliser), normaliser)
        losses = {}
        if self.heatmap_weight:
            losses['heatmap_loss'] = self.heatmap_weight * self.heatmap_loss(
                outputs['similarity_map'], batch, weights, normaliser)
        losses['proposal_loss'] = self.proposal_weight * weighted_l1(
            outputs['proposals_global'], target, weights, normaliser)
        for i, points in enumerate(outputs['points']):
            losses[f'l1_loss_layer{i}'] = self.layer_weight * weighted_l1(
                points, target, weights, normaliser)
        return losses

    @staticmethod
    def heatmap_loss(similarity: torch.Tensor, batch, weights: torch.Tensor,
                     normaliser: torch.Tensor) -> torch.Tensor:
        """similarity ``[N, K, h, w]`` raw S; weights ``[N, K]``; normaliser ``[N]``."""
        if batch.query_heatmaps is None:
            raise KeyError('CapeFormerCriterion needs query heatmaps (EpisodeBatch.query_heatmaps)'
                           ' for its heatmap loss: add GenerateCAPETarget to the pipeline, or set '
                           'heatmap_weight=0')
        h, w = similarity.shape[-2:]
        target = F.interpolate(batch.flat_queries(batch.query_heatmaps), size=(h, w),
                               mode='bilinear', align_corners=False)
        target = target / (target.amax((-1, -2), keepdim=True) + 1e-10)
        err = F.mse_loss(similarity.sigmoid(), target, reduction='none') * weights[..., None, None]
        return ((err.flatten(2).sum(-1) / (h * w)).sum(-1) / normaliser).mean()
