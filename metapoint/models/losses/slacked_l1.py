"""MetaPoint's slacked regression losses and meta-point visibility losses.

Coordinates are normalised crop (x, y); L1 = |dx| + |dy|. Layer l of L gets the slack
``(L - 1 - l) * slack`` (0.2, 0.1, 0.0 for L = 3 and slack 0.1): early layers are only asked to be
roughly right (the paper's slacked regression loss).
"""
from typing import Dict

import torch


def layer_slacks(num_layers: int, slack: float, like: torch.Tensor) -> torch.Tensor:
    """[L] slack per layer: (L - 1 - l) * slack."""
    steps = torch.arange(num_layers - 1, -1, -1, dtype=like.dtype, device=like.device)
    return steps * slack


def meta_point_losses(meta_points: torch.Tensor, meta_visible: torch.Tensor,
                      meta_to_kp: torch.Tensor, assigned: torch.Tensor,
                      keypoints: torch.Tensor, weights: torch.Tensor, *, l1_weight: float,
                      vp_weight: float, vn_weight: float, meta_weight: float,
                      slack: float) -> Dict[str, torch.Tensor]:
    """Losses of the query's meta-points against the keypoints they were assigned to.

    Args:
        meta_points: [B, L, M, 2] query meta-points of every meta-decoder layer.
        meta_visible: [B, M] clamped visibility probabilities.
        meta_to_kp: long [B, K]; assigned: bool [B, K] (slots with an assigned meta-point).
        keypoints: [B, K, 2] query keypoints; weights: [B, K] query target weights.
    Returns:
        ``loss_m{l}`` per layer (per-keypoint hinge, averaged over visible keypoints and divided
        by L, as the official code), ``loss_vp`` (assigned visible keypoints' meta-points pushed
        to visible) and ``loss_vn`` (the rest, including every unassigned meta-point, pushed to
        invisible), each averaged over the batch and scaled by its weights.
    """
    b, num_layers, m, _ = meta_points.shape
    idx = meta_to_kp.clamp(min=0)
    pts = torch.gather(meta_points, 2, idx[:, None, :, None].expand(-1, num_layers, -1, 2))
    w = weights * assigned.to(weights.dtype)  # [B, K]
    dist = (pts - keypoints.unsqueeze(1)).abs().sum(-1)  # [B, L, K]
    hinge = torch.relu(dist - layer_slacks(num_layers, slack, dist).view(1, -1, 1))
    per_layer = (hinge * w.unsqueeze(1)).sum(-1) / w.sum(-1, keepdim=True).clamp(min=1)
    per_layer = per_layer / num_layers  # [B, L]
    losses = {f'loss_m{l}': per_layer[:, l].mean() * l1_weight * meta_weight
              for l in range(num_layers)}

    vis_assigned = torch.gather(meta_visible, 1, idx)  # [B, K]
    a = assigned.to(weights.dtype)
    loss_vp = -(w * torch.log(vis_assigned)).sum(-1)
    loss_vn = -((1 - weights) * a * torch.log(1 - vis_assigned)).sum(-1)
    unassigned = _unassigned_mask(meta_visible, meta_to_kp, assigned)
    loss_vu = -(unassigned.to(weights.dtype) * torch.log(1 - meta_visible)).sum(-1)
    losses['loss_vp'] = loss_vp.mean() * vp_weight * meta_weight
    losses['loss_vn'] = (loss_vn + loss_vu).mean() * vn_weight * meta_weight
    return losses


def _unassigned_mask(meta_visible: torch.Tensor, meta_to_kp: torch.Tensor,
                     assigned: torch.Tensor) -> torch.Tensor:
    """bool [B, M]: meta-points that no slot was assigned to."""
    used = torch.zeros_like(meta_visible, dtype=torch.bool)
    rows = torch.arange(meta_to_kp.shape[0], device=meta_to_kp.device)[:, None].expand_as(meta_to_kp)
    used[rows[assigned], meta_to_kp[assigned]] = True
    return ~used


def refine_losses(ref_points: torch.Tensor, keypoints: torch.Tensor, covisible: torch.Tensor, *,
                  l1_weight: float, ref_weight: float, slack: float) -> Dict[str, torch.Tensor]:
    """Slacked L1 of the refined points on the co-visible keypoints.

    Args:
        ref_points: [B, L, K, 2] refine-decoder points per layer; keypoints: [B, K, 2] query GT;
        covisible: [B, K] support-and-query visible slots.
    Returns:
        ``loss_r{l}``: per episode relu(mean over co-visible keypoints of L1 - slack_l), averaged
        over the episodes that have a co-visible keypoint (official ``nanmean``). When no episode
        of the batch has one, the loss is 0 (with the graph kept), not NaN as officially (Q-M11).
    """
    num_layers = ref_points.shape[1]
    c = covisible.to(ref_points.dtype)  # [B, K]
    count = c.sum(-1)  # [B]
    dist = (ref_points - keypoints.unsqueeze(1)).abs().sum(-1)  # [B, L, K]
    mean = (dist * c.unsqueeze(1)).sum(-1) / count.clamp(min=1).unsqueeze(1)  # [B, L]
    hinge = torch.relu(mean - layer_slacks(num_layers, slack, mean).view(1, -1))
    has = (count > 0).to(ref_points.dtype)  # episodes without co-visible keypoint are dropped
    per_layer = (hinge * has.unsqueeze(1)).sum(0) / has.sum().clamp(min=1)
    return {f'loss_r{l}': per_layer[l] * l1_weight * ref_weight for l in range(num_layers)}
