"""Assign meta-points to support keypoints (MetaPoint's matcher), one Hungarian solve per episode."""
from typing import Tuple

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from metapoint.models.layers.precision import float32_region
from metapoint.registry import TASK_UTILS
from metapoint.models.losses.slacked_l1 import layer_slacks

ASSIGN_MODES = ('nbipart', 'bipart')


@TASK_UTILS.register_module()
class MetaPointAssigner:
    """Match the M meta-points of the supports to the K keypoint slots.

    Cost of meta-point m for slot k, per shot s, averaged over shots (docs/methods.md, MetaPoint
    assignment):

        C_mk = l1 * w_k * mean_l relu(L1(P_l,m, y_k) - slack_l)
               - vp * w_k * log(sigma_m) - vn * (1 - w_k) * log(1 - sigma_m)

    with slack_l = (L - 1 - l) * slack (layer l of L meta-decoder layers), w the support target
    weights, sigma the meta-point visibility. Modes:

    * ``'nbipart'`` (official default): every one of the K slots (invisible and padded ones too)
      gets a distinct meta-point; needs M >= K.
    * ``'bipart'``: only the slots in ``assign_mask`` (the support co-visible keypoints) take part;
      the others are unassigned (index -1). The official code meant this and crashes (Q-M4).

    Returns ``meta_to_kp`` long [B, K] (meta index per slot, -1 when unassigned) and ``assigned``
    bool [B, K].
    """

    def __init__(self, l1_weight: float = 1.0, vp_weight: float = 0.1, vn_weight: float = 0.005,
                 slack: float = 0.1, mode: str = 'nbipart') -> None:
        if mode not in ASSIGN_MODES:
            raise ValueError(f'assigner mode must be one of {ASSIGN_MODES}, got {mode!r}')
        self.l1_weight, self.vp_weight, self.vn_weight = l1_weight, vp_weight, vn_weight
        self.slack = slack
        self.mode = mode

    @torch.no_grad()
    def cost(self, meta_points: torch.Tensor, meta_visible: torch.Tensor,
             keypoints: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Matching cost [B, M, K], averaged over shots.

        Args:
            meta_points: [B, S, L, M, 2] per-layer meta-points of every support shot.
            meta_visible: [B, S, M] clamped visibility probability of every meta-point.
            keypoints: [B, S, K, 2] support keypoints; weights: [B, S, K] their target weights.
        """
        num_layers = meta_points.shape[2]
        dist = (meta_points.unsqueeze(-2) - keypoints[:, :, None, None]).abs().sum(-1)
        slack = layer_slacks(num_layers, self.slack, dist)  # [L]
        cost_p = torch.relu(dist - slack.view(1, 1, -1, 1, 1)).mean(2)  # [B, S, M, K]
        w = weights.unsqueeze(2)  # [B, S, 1, K]
        p = meta_visible.unsqueeze(-1)  # [B, S, M, 1]
        cost = (self.l1_weight * w * cost_p - self.vp_weight * w * torch.log(p)
                - self.vn_weight * (1 - w) * torch.log(1 - p))
        return cost.mean(1)

    @torch.no_grad()
    @float32_region  # under autocast the costs are computed in float32
    def __call__(self, meta_points: torch.Tensor, meta_visible: torch.Tensor,
                 keypoints: torch.Tensor, weights: torch.Tensor,
                 assign_mask: torch.Tensor = None) -> Tuple[torch.Tensor, torch.Tensor]:
        cost = self.cost(meta_points, meta_visible, keypoints, weights).cpu().numpy()
        b, m, k = cost.shape
        meta_to_kp = np.full((b, k), -1, dtype=np.int64)
        assigned = np.zeros((b, k), dtype=bool)
        if self.mode == 'nbipart':
            if m < k:
                raise ValueError(f"'nbipart' assignment needs at least as many meta-points ({m}) as "
                                 f'keypoint slots ({k})')
            cols = [np.arange(k)] * b
        else:
            if assign_mask is None:
                raise ValueError("'bipart' assignment needs assign_mask (co-visible keypoints)")
            mask = assign_mask.bool().cpu().numpy()
            cols = [np.flatnonzero(mask[i]) for i in range(b)]
        for i in range(b):  # one small Hungarian solve per episode (scipy, host side)
            rows, picked = linear_sum_assignment(cost[i][:, cols[i]])
            meta_to_kp[i, cols[i][picked]] = rows
            assigned[i, cols[i][picked]] = True
        device = meta_points.device
        return torch.from_numpy(meta_to_kp).to(device), torch.from_numpy(assigned).to(device)


def gather_by_assignment(meta_seq: torch.Tensor, meta_to_kp: torch.Tensor,
                         gate: torch.Tensor) -> torch.Tensor:
    """Per slot, the assigned meta-point's row of ``meta_seq``, zeroed where ``gate`` is False.

    Args:
        meta_seq: [B, M, C]; meta_to_kp: long [B, K] (-1 = unassigned); gate: [B, K].
    Returns:
        [B, K, C].
    """
    idx = meta_to_kp.clamp(min=0).unsqueeze(-1).expand(-1, -1, meta_seq.shape[-1])
    out = torch.gather(meta_seq, 1, idx)
    keep = (gate.bool() & (meta_to_kp >= 0)).unsqueeze(-1).to(out.dtype)
    return out * keep
