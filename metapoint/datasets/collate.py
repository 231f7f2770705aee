"""Collate packed episodes into one :class:`~metapoint.structures.EpisodeBatch`."""
from typing import List, Sequence

import torch

from metapoint.registry import FUNCTIONS
from metapoint.structures import EpisodeBatch

_STACKED = ('keypoints', 'keypoints_visible', 'keypoint_weights', 'heatmaps', 'neighbour_idx')


def _stack(episodes: Sequence[dict], role: str, key: str) -> torch.Tensor:
    return torch.stack([torch.stack([inst[key] for inst in ep[role]]) for ep in episodes])


@FUNCTIONS.register_module()
def episode_collate(episodes: List[dict]) -> dict:
    """Stack a list of packed episodes (all with the same S, Q and K) into
    ``dict(inputs=EpisodeBatch)``, the form mmengine's data preprocessor and model take."""
    shapes = {(len(ep['supports']), len(ep['queries'])) for ep in episodes}
    if len(shapes) != 1:
        raise ValueError(f'episodes with different (shots, queries) {sorted(shapes)} cannot be '
                         'batched; use batch_size=1 for evaluation with reduced queries')
    fields = dict(support_imgs=_stack(episodes, 'supports', 'img'),
                  query_imgs=_stack(episodes, 'queries', 'img'))
    for role, prefix in (('supports', 'support'), ('queries', 'query')):
        for key in _STACKED:
            if key in episodes[0][role][0]:
                fields[f'{prefix}_{key}'] = _stack(episodes, role, key)
        fields[f'{prefix}_metas'] = [[inst['meta'] for inst in ep[role]] for ep in episodes]
    fields['num_kpts'] = torch.tensor([ep['num_kpts'] for ep in episodes], dtype=torch.long)
    fields['category_id'] = torch.tensor([ep['category_id'] for ep in episodes],
                                         dtype=torch.long)
    fields['skeleton'] = [torch.tensor(ep['skeleton'], dtype=torch.long).reshape(-1, 2)
                          for ep in episodes]
    return dict(inputs=EpisodeBatch(**fields))
