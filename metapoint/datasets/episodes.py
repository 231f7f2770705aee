"""Episode generation: which instances form the supports and queries of each episode.

An episode is (num_shots supports + num_queries queries) of one category. Instances are referred to
by their index in the dataset's instance list.

* Training (:func:`draw_train_episodes`): class-balanced, re-drawn every epoch from
  ``(seed, epoch)`` only, so a resumed run draws the same episodes.
* Evaluation (:func:`make_eval_episodes`): per category ``num_episodes`` draws of S+Q distinct
  instances from a *local* ``random.Random(seed)``. With seed 1 and the official category and
  instance order this is the official ``make_paired_samples`` procedure (which re-seeds the global
  RNG instead; we never touch it), so the list is identical across runs and world sizes.
"""
from __future__ import annotations

import random
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from mmengine.logging import print_log


class Episode(NamedTuple):
    """One episode: instance indices (supports first) and a seed for its random augmentations."""
    category_id: int
    support_indices: Tuple[int, ...]
    query_indices: Tuple[int, ...]
    seed: int


class EpisodeError(ValueError):
    """An episode that cannot be formed (too few instances of a category)."""


def draw_train_episodes(cat_to_indices: Dict[int, Sequence[int]], num_shots: int, seed: int,
                        epoch: int, episodes_per_category: Optional[int] = None) -> List[Episode]:
    """Class-balanced (S supports + 1 query) episodes of one epoch, shuffled.

    Every category gets N episodes, N = the largest instance count over categories (the official
    oversampling of rare categories) unless ``episodes_per_category`` is given. Each episode holds
    S+1 distinct instances. Deterministic in (seed, epoch).
    """
    need = num_shots + 1
    small = {c: len(v) for c, v in cat_to_indices.items() if len(v) < need}
    if small:
        raise EpisodeError(
            f'training episodes need num_shots+1={need} instances per category; categories '
            f'with fewer: {small} (category id: instance count)')
    if not cat_to_indices:
        raise EpisodeError('no training category has any instance')
    n_per_cat = episodes_per_category or max(len(v) for v in cat_to_indices.values())
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(epoch)])
    cats, members = [], []
    for cid, idxs in cat_to_indices.items():
        idxs = np.asarray(idxs, dtype=np.int64)
        # a random permutation per row; its first S+1 columns are S+1 distinct instances
        order = np.argsort(rng.random((n_per_cat, len(idxs))), axis=1)[:, :need]
        members.append(idxs[order])
        cats.append(np.full(n_per_cat, cid, dtype=np.int64))
    members = np.concatenate(members)
    cats = np.concatenate(cats)
    perm = rng.permutation(len(cats))
    seeds = rng.integers(0, 2**31 - 1, size=len(cats))
    return [
        Episode(int(cats[i]), tuple(int(x) for x in members[i, :num_shots]),
                (int(members[i, num_shots]), ), int(seeds[j]))
        for j, i in enumerate(perm)
    ]


def make_eval_episodes(cat_to_indices: Dict[int, Sequence[int]], num_shots: int,
                       num_queries: int, num_episodes: int, seed: int = 1,
                       insufficient: str = 'error') -> List[Episode]:
    """Fixed evaluation episodes, category by category in ``cat_to_indices`` order.

    Args:
        insufficient: what to do with a category holding fewer than S+Q instances: 'error'
            (default, raises naming the category) or 'reduce' (use Q' = n - S queries for that
            category, logged; a category with n <= S still raises).
    """
    if insufficient not in ('error', 'reduce'):
        raise ValueError(f"insufficient must be 'error' or 'reduce', got {insufficient!r}")
    if num_shots < 1 or num_queries < 1 or num_episodes < 1:
        raise ValueError('num_shots, num_queries and num_episodes must be >= 1, got '
                         f'{num_shots}, {num_queries}, {num_episodes}')
    rng = random.Random(seed)
    episodes = []
    for cid, idxs in cat_to_indices.items():
        idxs = list(idxs)
        q = num_queries
        if len(idxs) < num_shots + num_queries:
            if insufficient == 'error' or len(idxs) <= num_shots:
                raise EpisodeError(
                    f'category {cid} has {len(idxs)} instance(s); an evaluation episode needs '
                    f'num_shots+num_queries={num_shots + num_queries}'
                    + (" (set insufficient='reduce' to use fewer queries)"
                       if len(idxs) > num_shots else ''))
            q = len(idxs) - num_shots
            print_log(f'category {cid}: {len(idxs)} instances < {num_shots}+{num_queries}; '
                      f'using {q} queries per episode', logger='current', level=30)
        for e in range(num_episodes):
            pick = rng.sample(idxs, num_shots + q)
            episodes.append(Episode(cid, tuple(pick[:num_shots]), tuple(pick[num_shots:]),
                                    len(episodes)))
    return episodes
