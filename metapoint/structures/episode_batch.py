"""One batch of CAPE episodes: the images, keypoints and metadata every model receives.

Shapes: B episodes, S support shots, Q queries per episode, K padded keypoint slots, H x W the
crop size, h x w the heatmap size. Keypoints are normalised crop coordinates (x, y) in [0, 1]
(pixel x / W, y / H of the crop the pipeline made).
"""
from dataclasses import dataclass, field, fields, replace
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

_OPTIONAL_TENSORS = ('support_heatmaps', 'query_heatmaps', 'support_neighbour_idx',
                     'query_neighbour_idx')


@dataclass
class EpisodeBatch:
    """A batch of episodes as :func:`~metapoint.datasets.episode_collate` builds it.

    Images (uint8 from the loader, float normalised after the data preprocessor):
        support_imgs ``[B, S, 3, H, W]``; query_imgs ``[B, Q, 3, H, W]``.
    Keypoints, per role (``support_*`` ``[B, S, ...]``, ``query_*`` ``[B, Q, ...]``):
        ``*_keypoints`` ``[..., K, 2]`` normalised crop (x, y);
        ``*_keypoints_visible`` ``[..., K]`` annotation visibility (the metric's mask);
        ``*_keypoint_weights`` ``[..., K]`` target weights w (what the models treat as visible;
        padded slots may be weighted, see ``KeypointPadding``);
        ``*_heatmaps`` ``[..., K, h, w]`` when the pipeline made heatmaps, else None;
        ``*_neighbour_idx`` long ``[..., K, N]`` FMMP's structural table, else None.
    Per episode:
        num_kpts long ``[B]`` real keypoints K_c (slots >= K_c are padding);
        category_id long ``[B]``; skeleton: B long tensors ``[E_b, 2]`` (0-indexed links).
    Metadata (host only): support_metas / query_metas, B lists of per-image dicts
        (``warp_mat``, ``input_size``, ``ann_id``, ``gt_keypoints``, ``bbox_size``, ...; see
        ``PackCAPEInstance``).
    """

    support_imgs: torch.Tensor
    query_imgs: torch.Tensor
    support_keypoints: torch.Tensor
    query_keypoints: torch.Tensor
    support_keypoints_visible: torch.Tensor
    query_keypoints_visible: torch.Tensor
    support_keypoint_weights: torch.Tensor
    query_keypoint_weights: torch.Tensor
    num_kpts: torch.Tensor
    category_id: torch.Tensor
    skeleton: List[torch.Tensor] = field(default_factory=list)
    support_metas: List[List[Dict[str, Any]]] = field(default_factory=list)
    query_metas: List[List[Dict[str, Any]]] = field(default_factory=list)
    support_heatmaps: Optional[torch.Tensor] = None
    query_heatmaps: Optional[torch.Tensor] = None
    support_neighbour_idx: Optional[torch.Tensor] = None
    query_neighbour_idx: Optional[torch.Tensor] = None

    # ------------------------------------------------------------------ sizes
    @property
    def num_episodes(self) -> int:
        """B."""
        return self.support_imgs.shape[0]

    @property
    def num_shots(self) -> int:
        """S."""
        return self.support_imgs.shape[1]

    @property
    def num_queries(self) -> int:
        """Q (queries per episode)."""
        return self.query_imgs.shape[1]

    @property
    def num_slots(self) -> int:
        """K (padded keypoint slots)."""
        return self.support_keypoints.shape[2]

    # ------------------------------------------------------------------ helpers
    def per_query(self, value: torch.Tensor) -> torch.Tensor:
        """``[B, ...]`` per-episode value -> ``[B*Q, ...]``, repeated for each of its queries."""
        return value.repeat_interleave(self.num_queries, 0)

    def flat_queries(self, value: torch.Tensor) -> torch.Tensor:
        """``[B, Q, ...]`` -> ``[B*Q, ...]`` (episode-major, the order of the query images)."""
        return value.flatten(0, 1)

    def select_episodes(self, index) -> 'EpisodeBatch':
        """Only the episodes ``index`` (an int, slice or list of episode positions)."""
        if isinstance(index, int):
            index = [index]
        positions = list(range(self.num_episodes))[index] if isinstance(index, slice) \
            else list(index)
        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                changes[f.name] = value[positions]
            elif isinstance(value, list):
                changes[f.name] = [value[i] for i in positions]
        return replace(self, **changes)

    def select_queries(self, index) -> 'EpisodeBatch':
        """The same episodes with only the queries ``index`` of each (an int, slice or list of
        query positions); supports are shared, not copied."""
        if isinstance(index, int):
            index = [index]
        positions = list(range(self.num_queries))[index] if isinstance(index, slice) \
            else list(index)
        changes = {f.name: getattr(self, f.name)[:, positions] for f in fields(self)
                   if f.name.startswith('query_') and f.name != 'query_metas'
                   and getattr(self, f.name) is not None}
        changes['query_metas'] = [[metas[i] for i in positions] for metas in self.query_metas]
        return replace(self, **changes)

    def replace(self, **changes) -> 'EpisodeBatch':
        """A copy with some fields replaced (the others shared, not copied)."""
        return replace(self, **changes)

    def to(self, device, non_blocking: bool = False) -> 'EpisodeBatch':
        """Tensors moved to ``device``; metadata stays on the host."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, torch.Tensor):
                moved[f.name] = value.to(device, non_blocking=non_blocking)
            elif f.name == 'skeleton':
                moved[f.name] = [t.to(device, non_blocking=non_blocking) for t in value]
        return replace(self, **moved)

    def __post_init__(self) -> None:
        b, s = self.support_imgs.shape[:2]
        q = self.query_imgs.shape[1]
        expected = dict(support_keypoints=(b, s), support_keypoints_visible=(b, s),
                        support_keypoint_weights=(b, s), query_keypoints=(b, q),
                        query_keypoints_visible=(b, q), query_keypoint_weights=(b, q),
                        support_heatmaps=(b, s), query_heatmaps=(b, q),
                        support_neighbour_idx=(b, s), query_neighbour_idx=(b, q))
        for name, lead in expected.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape[:2]) != lead:
                raise ValueError(f'EpisodeBatch.{name} has shape {tuple(value.shape)}; its first '
                                 f'two dims must be {lead} (B episodes, '
                                 f"{'S shots' if name.startswith('support') else 'Q queries'})")
        k = self.support_keypoints.shape[2]
        for name in ('query_keypoints', 'support_keypoint_weights', 'query_keypoint_weights',
                     'support_keypoints_visible', 'query_keypoints_visible'):
            if getattr(self, name).shape[2] != k:
                raise ValueError(f'EpisodeBatch.{name} has {getattr(self, name).shape[2]} '
                                 f'keypoint slots, support_keypoints has {k}')


def _identity_metas(num: int, size: Sequence[int], keypoints: torch.Tensor,
                    visible: torch.Tensor) -> List[Dict[str, Any]]:
    """Metas of crops that ARE the image (identity warp): GT = keypoints in crop pixels."""
    w, h = size
    metas = []
    for i in range(num):
        px = keypoints[i].detach().cpu().numpy().astype(np.float32) * np.array([w, h], np.float32)
        metas.append(dict(ann_id=-1, warp_mat=np.array([[1, 0, 0], [0, 1, 0]], np.float32),
                          input_size=(w, h), gt_keypoints=px,
                          keypoints_visible=visible[i].detach().cpu().numpy(),
                          bbox_size=float(max(w, h))))
    return metas


def make_episode_batch(support_imgs: torch.Tensor, query_imgs: torch.Tensor,
                       support_keypoints: torch.Tensor,
                       query_keypoints: Optional[torch.Tensor] = None, *,
                       support_weights: Optional[torch.Tensor] = None,
                       query_weights: Optional[torch.Tensor] = None,
                       support_visible: Optional[torch.Tensor] = None,
                       query_visible: Optional[torch.Tensor] = None,
                       num_kpts=None, category_id=None, skeleton=None,
                       **optional) -> EpisodeBatch:
    """Build an :class:`EpisodeBatch` from tensors, filling what a caller does not have.

    Args:
        support_imgs ``[B, S, 3, H, W]``, query_imgs ``[B, Q, 3, H, W]``;
        support_keypoints ``[B, S, K, 2]``; query_keypoints ``[B, Q, K, 2]`` (default: all 0.5,
            for inference without ground truth).
        support_weights / query_weights ``[..., K]``: default = the visibility, else all ones.
        support_visible / query_visible ``[..., K]``: default = weights > 0.
        num_kpts: int or ``[B]`` (default K); category_id: int or ``[B]`` (default -1);
        skeleton: B lists of links (default none).
        optional: ``support_heatmaps``, ``query_heatmaps``, ``support_neighbour_idx``,
            ``query_neighbour_idx``.
    Metas describe identity crops: ground truth in crop pixels, so a metric on the result
    compares crop coordinates.
    """
    unknown = set(optional) - set(_OPTIONAL_TENSORS)
    if unknown:
        raise TypeError(f'make_episode_batch: unknown field(s) {sorted(unknown)}; optional '
                        f'fields are {list(_OPTIONAL_TENSORS)}')
    b, s = support_imgs.shape[:2]
    q = query_imgs.shape[1]
    k = support_keypoints.shape[2]
    if query_keypoints is None:
        query_keypoints = support_keypoints.new_full((b, q, k, 2), 0.5)

    def weights_of(weights, visible, lead):
        if weights is None:
            weights = visible.float() if visible is not None else \
                support_keypoints.new_ones(*lead, k)
        if visible is None:
            visible = (weights > 0).float()
        return weights, visible

    support_weights, support_visible = weights_of(support_weights, support_visible, (b, s))
    query_weights, query_visible = weights_of(query_weights, query_visible, (b, q))
    device = support_keypoints.device
    num_kpts = torch.as_tensor(k if num_kpts is None else num_kpts, dtype=torch.long,
                               device=device).expand(b).clone()
    category_id = torch.as_tensor(-1 if category_id is None else category_id,
                                  dtype=torch.long, device=device).expand(b).clone()
    skeleton = [torch.as_tensor(links, dtype=torch.long).reshape(-1, 2)
                for links in (skeleton if skeleton is not None else [[]] * b)]
    size = (support_imgs.shape[-1], support_imgs.shape[-2])
    return EpisodeBatch(
        support_imgs=support_imgs, query_imgs=query_imgs,
        support_keypoints=support_keypoints, query_keypoints=query_keypoints,
        support_keypoints_visible=support_visible, query_keypoints_visible=query_visible,
        support_keypoint_weights=support_weights, query_keypoint_weights=query_weights,
        num_kpts=num_kpts, category_id=category_id, skeleton=skeleton,
        support_metas=[_identity_metas(s, size, support_keypoints[i], support_visible[i])
                       for i in range(b)],
        query_metas=[_identity_metas(q, size, query_keypoints[i], query_visible[i])
                     for i in range(b)],
        **optional)
