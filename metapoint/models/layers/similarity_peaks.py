"""Where support keypoint features match a query feature map best (a local soft-argmax)."""
import torch
import torch.nn.functional as F


@torch.no_grad()
def similarity_peak_points(support_feats: torch.Tensor, query_map: torch.Tensor, *,
                           temperature: float = 0.1, radius: int = 1) -> torch.Tensor:
    """Peak of the cosine similarity of each support keypoint feature over the query map.

    Args:
        support_feats: ``[N, K, C]``; query_map: ``[N, C, h, w]``.
        temperature: softmax temperature of the cosine similarities.
        radius: the soft-argmax window, in cells around the best cell.
    Returns:
        ``[N, K, 2]`` (x, y) in [0, 1]: the cell of highest cosine similarity, refined by the
        softmax(cos / T)-weighted mean of the cell centres ``((j + 0.5) / w, (i + 0.5) / h)``
        within ``radius`` cells of it (robust to several peaks). No gradient.
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
