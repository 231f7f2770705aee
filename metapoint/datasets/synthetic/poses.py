"""Pose sources for the synthetic MP-100-style generator.

A pose source yields a list of :class:`CategorySpec` (keypoint layout + skeleton) and a list of
:class:`PoseSample` (one per image to render). Conventions used throughout the package:

* ``keypoints`` arrays are ``(K, 2)`` float64 ``(x, y)`` with x to the right and y DOWN (image
  convention). A pose sample's coordinates are in arbitrary units (template units for the random
  source, original photo pixels for the MP-100 source); only their relative geometry matters,
  the renderer normalises them.
* ``visibility`` arrays are ``(K,)`` int8 in {0, 1, 2} (COCO ``v``): 0 = unlabelled (coordinates
  meaningless, never drawn), 1 = labelled but occluded in the source photo, 2 = labelled, visible.
* skeletons are tuples of ``(a, b)`` pairs, ALWAYS 0-indexed into the category's keypoints.

Two sources:

* :func:`random_pose_source` -- own random categories: a random tree skeleton of 5..32 keypoints
  (plus up to 3 extra links between nearby keypoints), a per-category template pose built by
  forward kinematics of per-link (relative angle, length), and per-instance jitter of those.
* :func:`load_mp100_poses` -- real MP-100 poses and skeletons from COCO annotation files.
"""
import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

# Tag mixed into the pose RNG seed so that the pose RNG of instance (cat, idx) differs from the
# rendering RNG ``default_rng([seed, cat, idx])`` of the same instance.
_POSE_TAG = 0x9053
_TEMPLATE_TAG = 0x7E3A


@dataclass(frozen=True)
class CategorySpec:
    """One category: ``num_keypoints`` = K, ``skeleton`` = 0-indexed ``(a, b)`` pairs.

    ``keypoint_names`` is copied as is (it may be empty for real MP-100 categories, then K comes
    from the annotations).
    """
    id: int
    name: str
    supercategory: str
    num_keypoints: int
    keypoint_names: Tuple[str, ...] = ()
    skeleton: Tuple[Tuple[int, int], ...] = ()


@dataclass
class PoseSample:
    """One instance to render: ``keypoints`` (K, 2) float64, ``visibility`` (K,) int8.

    ``index`` is the 0-based instance index within its category (generation / file order);
    ``(seed, category_id, index)`` seeds the instance's renderer RNG. ``source_id`` is the
    original annotation id for the MP-100 source, ``None`` otherwise.
    """
    category_id: int
    index: int
    keypoints: np.ndarray
    visibility: np.ndarray
    source_id: Optional[int] = None
    extra: dict = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# skeleton index convention
# --------------------------------------------------------------------------------------------
def skeleton_index_base(skeleton: Sequence[Sequence[int]], num_keypoints: int) -> Optional[int]:
    """Index base (0 or 1) of ``skeleton`` for a category with K keypoints, ``None`` if unknown.

    An index equal to K means 1-indexed, an index 0 means 0-indexed; an empty skeleton or one
    using neither is ambiguous (``None``). Raises ``ValueError`` when both K and 0 occur or an
    index is outside [0, K].
    """
    flat = [int(i) for pair in skeleton for i in pair]
    if not flat:
        return None
    k = int(num_keypoints)
    if min(flat) < 0 or max(flat) > k:
        raise ValueError(f'skeleton index out of range [0, {k}]: {sorted(set(flat))}')
    has_k, has_zero = k in flat, 0 in flat
    if has_k and has_zero:
        raise ValueError(f'skeleton uses both 0 and K={k}: cannot tell its index base')
    return 1 if has_k else (0 if has_zero else None)


def skeleton_to_zero_indexed(skeleton: Sequence[Sequence[int]], num_keypoints: int,
                             default_base: int = 0) -> List[Tuple[int, int]]:
    """Return ``skeleton`` as 0-indexed ``(a, b)`` pairs for a category with K keypoints.

    The base comes from :func:`skeleton_index_base`; an ambiguous skeleton (neither 0 nor K
    used) is taken with ``default_base`` (0 = the convention of the redistributed MP-100
    files; :func:`load_mp100_poses` passes the base of the other categories of the same file).
    """
    pairs = [(int(a), int(b)) for a, b in skeleton]
    base = skeleton_index_base(pairs, num_keypoints)
    offset = default_base if base is None else base
    out = [(a - offset, b - offset) for a, b in pairs]
    if any(min(p) < 0 or max(p) >= num_keypoints for p in out):
        raise ValueError(f'skeleton {pairs} does not fit K={num_keypoints} with base {offset}')
    return out


# --------------------------------------------------------------------------------------------
# random source
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _RandomTemplate:
    parent: np.ndarray      # (K,) int, parent[0] = -1; parent[i] < i
    rel_angle: np.ndarray   # (K,) float, link direction relative to the parent link (rad)
    length: np.ndarray      # (K,) float, link length (template units)
    angle_sigma: float      # per-instance std of rel_angle (rad)
    length_sigma: float     # per-instance std of log(length)
    label_probs: Tuple[float, float, float]  # P(v=0), P(v=1), P(v=2) per keypoint


def _forward_kinematics(parent, rel_angle, length, root_angle=0.0):
    """Chain links into (K, 2) positions; link i goes from parent[i] to i."""
    k = len(parent)
    pos = np.zeros((k, 2))
    ang = np.zeros(k)
    ang[0] = root_angle
    for i in range(1, k):
        p = parent[i]
        ang[i] = ang[p] + rel_angle[i]
        pos[i] = pos[p] + length[i] * np.array([np.cos(ang[i]), np.sin(ang[i])])
    return pos


def _random_category(seed: int, cat_id: int):
    rng = np.random.default_rng([_TEMPLATE_TAG, seed, cat_id])
    k = int(rng.integers(5, 33))
    parent = np.full(k, -1)
    for i in range(1, k):
        # mostly chains (limbs), sometimes a branch from any earlier joint
        parent[i] = i - 1 if rng.random() < 0.7 else int(rng.integers(0, i))
    rel_angle = rng.uniform(-1.2, 1.2, size=k)
    rel_angle[0] = 0.0
    length = rng.uniform(0.5, 1.5, size=k)
    length[0] = 0.0
    template = _RandomTemplate(
        parent=parent, rel_angle=rel_angle, length=length,
        angle_sigma=float(rng.uniform(0.2, 0.6)), length_sigma=float(rng.uniform(0.1, 0.25)),
        label_probs=(0.06, 0.10, 0.84))
    edges = [(int(parent[i]), i) for i in range(1, k)]
    # a few extra links between close, not yet linked keypoints (loops like outlines / faces)
    n_extra = int(rng.integers(0, 4))
    if n_extra and k >= 4:
        pos = _forward_kinematics(parent, rel_angle, length)
        linked = {tuple(sorted(e)) for e in edges}
        cand = [(float(np.hypot(*(pos[a] - pos[b]))), a, b) for a in range(k)
                for b in range(a + 1, k) if (a, b) not in linked]
        cand.sort()
        cand = cand[:max(n_extra, 8)]
        pick = rng.choice(len(cand), size=min(n_extra, len(cand)), replace=False)
        edges += [(cand[j][1], cand[j][2]) for j in sorted(pick)]
    spec = CategorySpec(
        id=cat_id, name=f'synth_{cat_id:03d}', supercategory='synthetic', num_keypoints=k,
        keypoint_names=tuple(f'kp{i}' for i in range(k)), skeleton=tuple(edges))
    return spec, template


def _random_instance(template: _RandomTemplate, rng: np.random.Generator):
    k = len(template.parent)
    rel = template.rel_angle + rng.normal(0.0, template.angle_sigma, size=k)
    length = template.length * np.exp(rng.normal(0.0, template.length_sigma, size=k))
    kpts = _forward_kinematics(template.parent, rel, length)
    vis = rng.choice(3, size=k, p=template.label_probs).astype(np.int8)
    need = min(2, k) - int((vis > 0).sum())
    if need > 0:  # at least two labelled keypoints per instance
        unl = np.flatnonzero(vis == 0)
        vis[rng.choice(unl, size=need, replace=False)] = 2
    return kpts, vis


def random_pose_source(num_categories: int = 100, instances_per_category: int = 30,
                       seed: int = 0):
    """Random categories ``1..num_categories`` with ``instances_per_category`` poses each.

    Returns ``(categories, samples)``; sample ``i`` of category ``c`` is drawn with
    ``default_rng([_POSE_TAG, seed, c, i])`` (independent of every other sample).
    """
    if num_categories < 1 or instances_per_category < 1:
        raise ValueError('num_categories and instances_per_category must be >= 1')
    cats, samples = [], []
    for cid in range(1, num_categories + 1):
        spec, template = _random_category(seed, cid)
        cats.append(spec)
        for idx in range(instances_per_category):
            rng = np.random.default_rng([_POSE_TAG, seed, cid, idx])
            kpts, vis = _random_instance(template, rng)
            samples.append(PoseSample(cid, idx, kpts, vis))
    return cats, samples


# --------------------------------------------------------------------------------------------
# MP-100 source
# --------------------------------------------------------------------------------------------
def load_mp100_poses(ann_dir, max_instances_per_category: Optional[int] = None):
    """Real MP-100 poses from every ``*.json`` (COCO format) in ``ann_dir``, sorted by name.

    Annotations present in several files (same annotation id AND category id) are kept once, at
    their first occurrence; per category the first ``max_instances_per_category`` annotations in
    file order are kept. K = len(category keypoint names), or len(annotation keypoints) / 3 when
    the name list is empty. Skeletons are converted with :func:`skeleton_to_zero_indexed`
    (the first file that defines a category wins); a skeleton using neither index 0 nor K gets
    the base of the other categories of its file if they all agree, else 0. Returns
    ``(categories, samples)`` sorted by category id, samples in category-id then file order.
    """
    files = sorted(Path(ann_dir).glob('*.json'))
    if not files:
        raise FileNotFoundError(f'no *.json annotation file in {ann_dir}')
    cat_records = OrderedDict()
    file_of_cat = {}
    anns = OrderedDict()  # (ann id, cat id) -> annotation, first occurrence wins
    for fi, f in enumerate(files):
        with open(f) as fh:
            data = json.load(fh)
        for c in data.get('categories', []):
            if int(c['id']) not in cat_records:
                cat_records[int(c['id'])] = c
                file_of_cat[int(c['id'])] = fi
        for a in data.get('annotations', []):
            anns.setdefault((int(a['id']), int(a['category_id'])), a)

    per_cat = OrderedDict()
    for (_, cid), a in anns.items():
        per_cat.setdefault(cid, []).append(a)
    unknown = sorted(set(per_cat) - set(cat_records))
    if unknown:
        raise ValueError(f'annotations of undefined categories {unknown}')

    num_k = {}
    for cid, rec in cat_records.items():
        names = rec.get('keypoints') or []
        if names:
            num_k[cid] = len(names)
        elif per_cat.get(cid):
            num_k[cid] = len(per_cat[cid][0]['keypoints']) // 3
        # else: no keypoint names and no annotation: K unknown, nothing to render
    # ambiguous skeletons (using neither 0 nor K) take the base of the other categories of their
    # file when those agree, else 0
    file_bases = {}
    for cid, k in num_k.items():
        base = skeleton_index_base(cat_records[cid].get('skeleton') or [], k)
        if base is not None:
            file_bases.setdefault(file_of_cat[cid], set()).add(base)
    file_default = {fi: (1 if b == {1} else 0) for fi, b in file_bases.items()}

    cats, samples = [], []
    for cid in sorted(num_k):
        rec, k = cat_records[cid], num_k[cid]
        names = tuple(str(n) for n in (rec.get('keypoints') or []))
        cat_anns = per_cat.get(cid, [])
        skel = skeleton_to_zero_indexed(rec.get('skeleton') or [], k,
                                        file_default.get(file_of_cat[cid], 0))
        cats.append(CategorySpec(
            id=cid, name=str(rec.get('name', f'category_{cid}')),
            supercategory=str(rec.get('supercategory', '')), num_keypoints=k,
            keypoint_names=names, skeleton=tuple(skel)))
        if max_instances_per_category is not None:
            cat_anns = cat_anns[:max_instances_per_category]
        for idx, a in enumerate(cat_anns):
            kp = np.asarray(a['keypoints'], dtype=np.float64)
            if kp.size != 3 * k:
                raise ValueError(f'annotation {a["id"]} of category {cid} has {kp.size} '
                                 f'keypoint values, expected 3*{k}')
            kp = kp.reshape(k, 3)
            vis = np.clip(np.rint(kp[:, 2]), 0, 2).astype(np.int8)
            samples.append(PoseSample(cid, idx, kp[:, :2].copy(), vis, source_id=int(a['id'])))
    return cats, samples
