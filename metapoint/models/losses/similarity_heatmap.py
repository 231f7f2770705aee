"""Similarity-heatmap loss: a softmax over a query map of support/query cosine similarities
against a Gaussian at the query keypoint (the loss of :class:`~metapoint.models.SimilarityAid`)."""
import torch
import torch.nn.functional as F


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
