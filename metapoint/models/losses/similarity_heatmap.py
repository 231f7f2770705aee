"""Optional auxiliary loss: support-keypoint / query-map similarity heatmaps (a CPU-budget aid).

Not part of the MetaPoint method. It gives a backbone trained from scratch a direct, dense
appearance signal (CapeFormer-style): the feature of support keypoint k, pooled from one level of
the support's feature map with its target heatmap, is compared by cosine similarity with every
position of the same level of the query map; a softmax over positions must put its mass where
the query's target heatmap of keypoint k is. Off by default (``MetaPoint(aux_heatmap_cfg=None)``).
"""
from typing import Dict

import torch
import torch.nn.functional as F

from ..layers.shot_fusion import visibility_weighted_shot_mean


def pool_keypoint_features(feat: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
    """feat [N, C, h, w], heatmaps [N, K, H, W] -> [N, K, C]: heatmap-weighted mean of ``feat``.

    The map is resized bilinearly (align_corners=False) to the heatmap size first, as
    :class:`~metapoint.models.heads.HeatmapKeypointPooling` does. An all-zero heatmap gives a
    zero feature.
    """
    hm = heatmaps / (heatmaps.sum((-1, -2), keepdim=True) + 1e-8)
    up = F.interpolate(feat, size=heatmaps.shape[-2:], mode='bilinear', align_corners=False)
    return hm.flatten(2) @ up.flatten(2).transpose(1, 2)


def keypoint_target_maps(keypoints: torch.Tensor, size, sigma: float = 1.0) -> torch.Tensor:
    """keypoints [N, K, 2] normalised crop (x, y) -> [N, K, h, w] Gaussians summing to 1.

    Cell (i, j) of an h x w map covers [j, j+1) / w x [i, i+1) / h (align_corners=False), so its
    centre is ((j + 0.5) / w, (i + 0.5) / h); ``sigma`` is in cells.
    """
    h, w = size
    xs = (torch.arange(w, device=keypoints.device, dtype=keypoints.dtype) + 0.5) / w
    ys = (torch.arange(h, device=keypoints.device, dtype=keypoints.dtype) + 0.5) / h
    dx = (xs.view(1, 1, 1, w) - keypoints[..., 0, None, None]) * w
    dy = (ys.view(1, 1, h, 1) - keypoints[..., 1, None, None]) * h
    g = torch.exp(-(dx ** 2 + dy ** 2) / (2 * sigma ** 2))
    return g / g.sum((-1, -2), keepdim=True).clamp(min=1e-12)


def similarity_heatmap_loss(support_feats: torch.Tensor, query_map: torch.Tensor,
                            query_keypoints: torch.Tensor, mask: torch.Tensor, *,
                            temperature: float = 0.1, sigma: float = 1.0) -> torch.Tensor:
    """Cross-entropy between softmax(cos(f_k, q(u)) / T) over positions u and a target Gaussian.

    Args:
        support_feats: [N, K, C] support keypoint features (already repeated per query).
        query_map: [N, C, h, w] query feature map of the same level.
        query_keypoints: [N, K, 2] query keypoints, normalised crop (x, y).
        mask: [N, K] bool, the keypoints that count (support and query visible).
        temperature: softmax temperature of the cosine similarities.
        sigma: target Gaussian width in cells of the map.

    Returns:
        scalar: mean over the counted keypoints of ``-sum_u t_k(u) log p_k(u)``, t_k the
        :func:`keypoint_target_maps` of the query keypoint; 0 (graph kept) when nothing counts.
    """
    n, c, h, w = query_map.shape
    q = F.normalize(query_map.flatten(2), dim=1)  # [N, C, h*w]
    s = F.normalize(support_feats, dim=-1)  # [N, K, C]
    logp = torch.log_softmax((s @ q) / temperature, -1)  # [N, K, h*w]
    target = keypoint_target_maps(query_keypoints.to(logp.dtype), (h, w), sigma).flatten(2)
    ce = -(target * logp).sum(-1)  # [N, K]
    weight = mask.to(ce.dtype)
    return (ce * weight).sum() / weight.sum().clamp(min=1)


def support_level_features(support_map: torch.Tensor, support_heatmaps: torch.Tensor,
                           support_weights: torch.Tensor, num_queries: int) -> torch.Tensor:
    """Shot-averaged support keypoint features of one level, repeated per query.

    support_map [B*S, C, h, w], support_heatmaps [B, S, K, H, W], support_weights [B, S, K]
    -> [B*Q, K, C] (mean over the shots where the keypoint is visible).
    """
    b, s, k = support_weights.shape
    f = pool_keypoint_features(support_map, support_heatmaps.flatten(0, 1)).view(b, s, k, -1)
    return shot_mean_per_query(f, support_weights, num_queries)


def shot_mean_per_query(feats: torch.Tensor, support_weights: torch.Tensor,
                        num_queries: int) -> torch.Tensor:
    """feats [B, S, K, C] -> [B*Q, K, C]: mean over the shots where the keypoint is visible
    (``support_weights`` [B, S, K] > 0; 0 when none), repeated for the Q queries of each episode.
    """
    f = visibility_weighted_shot_mean(feats, support_weights > 0, floor=1)
    return f.repeat_interleave(num_queries, 0)


@torch.no_grad()
def similarity_peak_points(support_feats: torch.Tensor, query_map: torch.Tensor, *,
                           temperature: float = 0.1, radius: int = 1) -> torch.Tensor:
    """Where each support keypoint feature best matches the query map: [N, K, 2] (x, y) in [0, 1].

    The cell of highest cosine similarity, refined by the softmax(cos / T)-weighted mean of the
    cell centres within ``radius`` cells of it (a local soft-argmax, robust to several peaks).
    No gradient (the refine decoder detaches its initial points anyway).
    """
    n, c, h, w = query_map.shape
    q = F.normalize(query_map.flatten(2), dim=1)
    sim = F.normalize(support_feats, dim=-1) @ q  # [N, K, h*w]
    peak = sim.argmax(-1)  # [N, K]
    py, px = peak // w, peak % w
    ys = torch.arange(h, device=sim.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=sim.device).view(1, 1, 1, w)
    near = ((ys - py[..., None, None]).abs() <= radius) & \
        ((xs - px[..., None, None]).abs() <= radius)  # [N, K, h, w]
    logits = (sim / temperature).masked_fill(~near.flatten(2), float('-inf'))
    p = torch.softmax(logits, -1).view(n, -1, h, w)
    cx = (torch.arange(w, device=sim.device, dtype=p.dtype) + 0.5) / w
    cy = (torch.arange(h, device=sim.device, dtype=p.dtype) + 0.5) / h
    return torch.stack([(p.sum(-2) * cx).sum(-1), (p.sum(-1) * cy).sum(-1)], -1)


def aux_heatmap_losses(support_maps, query_maps, support_heatmaps: torch.Tensor,
                       support_weights: torch.Tensor, query_keypoints: torch.Tensor,
                       mask: torch.Tensor, num_queries: int, *, levels=(-1,),
                       temperature: float = 0.1, sigma: float = 1.0, weight: float = 1.0
                       ) -> Dict[str, torch.Tensor]:
    """``loss_sim{i}`` for each requested pyramid level (index into the deepest-first lists).

    Args:
        support_maps / query_maps: lists of [B*S, C, h, w] / [B*Q, C, h, w] (deepest first).
        support_heatmaps: [B, S, K, H, W] (the model's pooling heatmaps); support_weights [B, S, K].
        query_keypoints: [B*Q, K, 2]; mask: [B*Q, K] bool; num_queries: Q.
    """
    losses = {}
    for i, lvl in enumerate(levels):
        f = support_level_features(support_maps[lvl], support_heatmaps, support_weights,
                                   num_queries)
        losses[f'loss_sim{i}'] = weight * similarity_heatmap_loss(
            f, query_maps[lvl], query_keypoints, mask, temperature=temperature, sigma=sigma)
    return losses
