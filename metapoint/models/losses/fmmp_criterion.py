"""FMMP's loss: per-layer L1 on real keypoints plus a weighted L1 on padded slots."""
from typing import Dict

import torch
from torch import nn

from metapoint.registry import MODELS


@MODELS.register_module()
class FMMPCriterion(nn.Module):
    """``l1_loss_real`` / ``l1_loss_mix`` (docs/methods.md, FMMP loss).

    For every query: ``sum_l sum_k w_k r_k |p^l_k - y_k|_1 / max(sum_k w_k r_k, 0.1)``, averaged
    over queries, with r_k = [k < K_c] (real slots) for ``l1_loss_real`` and 1 - r_k (padded
    slots, times ``mix_weight``) for ``l1_loss_mix``; w = the query's keypoint weights after
    padding (query visibility only, official Q-F15).

    Args:
        mix_weight: weight of the padded-slot term (0.5).
    Inputs: outputs with ``'points'`` (list over layers of ``[B*Q, K, 2]``) and the batch.
    """

    def __init__(self, mix_weight: float = 0.5) -> None:
        super().__init__()
        self.mix_weight = mix_weight

    def forward(self, outputs: dict, batch) -> Dict[str, torch.Tensor]:
        pred = torch.stack(outputs['points'], 1)  # [B*Q, L, K, 2]
        gt = batch.flat_queries(batch.query_keypoints)  # [B*Q, K, 2]
        w = batch.flat_queries(batch.query_keypoint_weights).to(pred.dtype)
        num_kpts = batch.per_query(batch.num_kpts.to(pred.device))
        slots = torch.arange(gt.shape[1], device=pred.device)
        real = (slots[None] < num_kpts[:, None]).to(pred.dtype)
        err = (pred - gt[:, None]).abs().sum(-1)  # [B*Q, L, K]

        def term(mask):
            m = (w * mask)[:, None]
            return ((err * m).sum(-1) / m.sum(-1).clamp(min=0.1)).sum(-1).mean()

        return dict(l1_loss_real=term(real), l1_loss_mix=self.mix_weight * term(1 - real))
