"""Fusing the S support shots of an episode into one value per keypoint slot."""
import torch


def visibility_weighted_shot_mean(values: torch.Tensor, weights: torch.Tensor,
                                  floor: float) -> torch.Tensor:
    """Mean of ``values`` over the shot axis (dim 1), each shot weighted by its visibility.

    Args:
        values: [B, S, ..., K, C] per-shot values (features, embeddings or coordinates).
        weights: [B, S, ..., K] shot weights (0/1 visibility, or the target weights w).
        floor: lower bound of the weight sum. FMMP's official fusion uses 0.1, the MetaPoint and
            SupportCopy means use 1; with 0/1 weights both give the plain mean over the shots
            that see a keypoint, and 0 for a keypoint no shot sees.
    Returns:
        [B, ..., K, C]: ``sum_s w_s * v_s / max(sum_s w_s, floor)``.
    """
    w = weights.to(values.dtype)
    return (values * w[..., None]).sum(1) / w.sum(1).clamp(min=floor)[..., None]
