"""Collate episodes into one batch of stacked tensors.

Batch layout (B episodes, S shots, Q queries per episode, K padded keypoint slots):

``inputs``
    ``support_imgs`` uint8 [B, S, 3, H, W], ``query_imgs`` uint8 [B, Q, 3, H, W]
``data_samples``
    ``support_keypoints`` [B, S, K, 2] / ``query_keypoints`` [B, Q, K, 2]: normalised crop (x, y);
    ``*_keypoints_visible`` [B, *, K]: annotation visibility (the metric's mask);
    ``*_keypoint_weights`` [B, *, K]: target weights w (what the models treat as visible);
    ``*_heatmaps`` [B, *, K, h, w]: when the pipeline generated heatmaps;
    ``*_neighbour_idx`` long [B, *, K, N]: FMMP BFS table, when StructuralNeighbours ran;
    ``num_kpts`` long [B]: real keypoints K_c; ``category_id`` long [B];
    ``skeleton``: list of B long tensors [E_b, 2] (0-indexed links);
    ``support_metas`` / ``query_metas``: B lists of per-image meta dicts (see PackCAPEInstance).
"""
from typing import List, Sequence

import torch

from metapoint.registry import FUNCTIONS

_STACKED = ('keypoints', 'keypoints_visible', 'keypoint_weights', 'heatmaps', 'neighbour_idx')


def _stack(episodes: Sequence[dict], role: str, key: str) -> torch.Tensor:
    return torch.stack([torch.stack([inst[key] for inst in ep[role]]) for ep in episodes])


@FUNCTIONS.register_module()
def episode_collate(episodes: List[dict]) -> dict:
    """Stack a list of packed episodes; all must have the same S, Q and K."""
    shapes = {(len(ep['supports']), len(ep['queries'])) for ep in episodes}
    if len(shapes) != 1:
        raise ValueError(f'episodes with different (shots, queries) {sorted(shapes)} cannot be '
                         'batched; use batch_size=1 for evaluation with reduced queries')
    inputs = dict(support_imgs=_stack(episodes, 'supports', 'img'),
                  query_imgs=_stack(episodes, 'queries', 'img'))
    samples = {}
    for role, prefix in (('supports', 'support'), ('queries', 'query')):
        for key in _STACKED:
            if key in episodes[0][role][0]:
                samples[f'{prefix}_{key}'] = _stack(episodes, role, key)
        samples[f'{prefix}_metas'] = [[inst['meta'] for inst in ep[role]] for ep in episodes]
    samples['num_kpts'] = torch.tensor([ep['num_kpts'] for ep in episodes], dtype=torch.long)
    samples['category_id'] = torch.tensor([ep['category_id'] for ep in episodes],
                                          dtype=torch.long)
    samples['skeleton'] = [torch.tensor(ep['skeleton'], dtype=torch.long).reshape(-1, 2)
                           for ep in episodes]
    return dict(inputs=inputs, data_samples=samples)
