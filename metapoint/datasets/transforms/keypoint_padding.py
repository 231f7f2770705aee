"""Episode-level keypoint padding: how the slots K_c..K-1 of an episode are filled.

Also holds :class:`StructuralNeighbours`, the FMMP BFS neighbour table built from the padded
skeleton of every image.
"""

import numpy as np
import torch
from mmcv.transforms import BaseTransform

from metapoint.datasets.keypoint_padding_ops import (eqdiv_padding, mixup_padding,
                                                     structural_neighbours)
from metapoint.registry import TRANSFORMS

PADDING_TYPES = ('zero', 'eqdiv', 'mixup')


def _episode_rng(episode: dict) -> np.random.Generator:
    """The episode's generator when present (training), else a deterministic per-episode one.

    At test time (no ``'rng'``) the draw is seeded from (category id, first support ann id), so
    the same episode always gets the same padding, independent of worker seeding (avoids Q-F16).
    """
    rng = episode.get('rng')
    if rng is not None:
        return rng
    meta = episode['supports'][0].get('meta', {}) if episode.get('supports') else {}
    ann_id = int(meta.get('ann_id', 0)) % (2 ** 63)
    return np.random.default_rng([int(episode.get('category_id', 0)) % (2 ** 63), ann_id])


@TRANSFORMS.register_module()
class KeypointPadding(BaseTransform):
    """Fill the padded keypoint slots of every image of an episode.

    Operates on a packed episode (``supports`` / ``queries`` lists of packed instances) so that a
    random padding can share one draw between the supports and the query. Types:

    * ``'zero'``: padded slots stay at (0, 0) with visibility and weight 0 (CapeFormer, MetaPoint).
    * ``'eqdiv'``: FMMP equal division of every link (docs/methods.md, FMMP keypoint
      padding; test default).
    * ``'mixup'``: FMMP random interpolation on random links (docs/methods.md, FMMP
      keypoint padding; train default).

    Draws (eqdiv / mixup), ONE per episode, in the official order: ``lam ~ Beta(alpha, alpha)``
    [num], ``keep = random(num) < prob``, ``edge_ids ~ U{0..|E|-1}`` [num]. They come from
    ``episode['rng']`` when present (training), else from a generator seeded with (category id,
    first support ``meta['ann_id']``), so test episodes are reproducible. The same draw is applied
    to every support and query (official), each on its own endpoints.

    Per instance:

    * ``keypoints``: padded points (interpolations of that image's endpoints);
    * ``keypoint_weights`` (what the models treat as visible, the official ``target_weight``):
      padded weight = ``keep and w_a > 0 and w_b > 0`` (an interpolation of two in-crop points is
      in the crop); this visibility also decides the chain links, as officially;
    * ``keypoints_visible`` (annotation visibility): ``keep and v_a > 0 and v_b > 0``;
    * ``skeleton``: the image's padded link list (original links + chain links). Visibility
      differs per image, so links differ per image; officially every image keeps its own links.
      ``episode['skeleton']`` is set to the LAST support's padded skeleton (the official query
      layers use the last shot's table, Q-F4).
    * ``heatmaps`` are left untouched (padded slots stay zero; FMMP uses no heatmaps).

    Fallback: a category with an empty skeleton, or with K_c == num, gets zero padding (the
    episode and instances are left as loaded; ``inst['skeleton']`` is still written). Real
    keypoint count K_c comes from ``episode['num_kpts']``, not max(skeleton)+1 (avoids Q-F12).
    """

    def __init__(self, padding: str = 'zero', num: int = 70, prob: float = 1.0,
                 alpha: float = 1.0) -> None:
        super().__init__()
        if padding not in PADDING_TYPES:
            raise ValueError(f'unknown keypoint padding {padding!r}; available: {PADDING_TYPES}')
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f'prob must be in [0, 1], got {prob}')
        if alpha <= 0:
            raise ValueError(f'alpha must be > 0, got {alpha}')
        self.padding = padding
        self.num = num
        self.prob = float(prob)
        self.alpha = float(alpha)

    def draw(self, episode: dict, num_links: int) -> dict:
        """The per-episode draws (official order: beta, rand, randint)."""
        rng = _episode_rng(episode)
        lam = rng.beta(self.alpha, self.alpha, self.num)
        keep = rng.random(self.num) < self.prob
        edge_ids = rng.integers(0, max(num_links, 1), size=self.num)
        return dict(lam=lam, keep=keep, edge_ids=edge_ids)

    def _pad_instance(self, inst: dict, skeleton: list, k_c: int, draws: dict) -> list:
        kp = inst['keypoints'].detach().cpu().numpy().astype(np.float32)
        vis = inst['keypoints_visible'].detach().cpu().numpy()
        weights = inst['keypoint_weights'].detach().cpu().numpy()
        if self.padding == 'eqdiv':
            def pad(v):
                return eqdiv_padding(kp, v, skeleton, k_c, self.num, draws['keep'])
        else:
            def pad(v):
                return mixup_padding(kp, v, skeleton, k_c, self.num, draws['lam'],
                                     draws['keep'], draws['edge_ids'])
        new_kp, new_w, links = pad(weights)
        _, new_vis, _ = pad(vis)
        inst['keypoints'] = torch.from_numpy(np.ascontiguousarray(new_kp, np.float32)).to(
            inst['keypoints'].dtype)
        # real slots keep their exact values; padded ones are 0/1
        inst['keypoint_weights'] = torch.from_numpy(
            np.concatenate([weights[:k_c], (new_w[k_c:] > 0).astype(weights.dtype)])).to(
            inst['keypoint_weights'].dtype)
        inst['keypoints_visible'] = torch.from_numpy(
            np.concatenate([vis[:k_c], (new_vis[k_c:] > 0).astype(vis.dtype)])).to(
            inst['keypoints_visible'].dtype)
        inst['skeleton'] = links
        return links

    def transform(self, episode: dict) -> dict:
        k = episode['supports'][0]['keypoints'].shape[0]
        if k != self.num:
            raise ValueError(f'KeypointPadding(num={self.num}) got episodes with {k} slots; '
                             'set num to the dataset max_kpt_num')
        if self.padding == 'zero':
            # the loader already wrote zeros with visibility 0 in the padded slots
            return episode
        skeleton = [[int(a), int(b)] for a, b in episode.get('skeleton', [])]
        k_c = int(episode.get('num_kpts', k))
        draws = self.draw(episode, len(skeleton))
        insts = list(episode['supports']) + list(episode.get('queries', []))
        if not skeleton or k_c >= self.num:  # documented zero fallback
            for inst in insts:
                inst['skeleton'] = [list(p) for p in skeleton]
            return episode
        last_support = None
        for i, inst in enumerate(insts):
            links = self._pad_instance(inst, skeleton, k_c, draws)
            if i < len(episode['supports']):
                last_support = links
        episode['skeleton'] = [list(p) for p in last_support]
        return episode

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(padding={self.padding!r}, num={self.num}, '
                f'prob={self.prob}, alpha={self.alpha})')


@TRANSFORMS.register_module()
class StructuralNeighbours(BaseTransform):
    """Write the FMMP BFS neighbour table ``inst['neighbour_idx']`` (long [K, num]) per instance.

    Uses the instance's own padded skeleton ``inst['skeleton']`` (from KeypointPadding; the
    episode skeleton otherwise) and its ``keypoint_weights > 0`` as visibility (the official table
    uses ``target_weight``). See :func:`structural_neighbours` for the official quirk Q-F8
    (invisible nodes may appear as neighbours), kept for checkpoint parity. Run it after
    :class:`KeypointPadding`.
    """

    def __init__(self, num: int = 16, visibility_key: str = 'keypoint_weights') -> None:
        super().__init__()
        self.num = int(num)
        self.visibility_key = visibility_key

    def transform(self, episode: dict) -> dict:
        default = episode.get('skeleton', [])
        for inst in list(episode['supports']) + list(episode.get('queries', [])):
            vis = inst[self.visibility_key].detach().cpu().numpy()
            idx, _ = structural_neighbours(inst.get('skeleton', default), vis, self.num)
            inst['neighbour_idx'] = torch.from_numpy(idx)
        return episode

    def __repr__(self) -> str:
        return (f'{self.__class__.__name__}(num={self.num}, '
                f'visibility_key={self.visibility_key!r})')
