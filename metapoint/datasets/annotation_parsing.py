"""Parse and validate an MP-100-style COCO keypoint file into category and instance records.

Conventions (see ``docs/data.md``):

* keypoints and boxes are in original image pixels, (x, y);
* ``K`` is the padded slot count ``max_kpt_num``; ``K_c`` the real keypoint count of category c;
* skeletons are returned 0-indexed, whatever the file uses (``skeleton_index_base``; with
  ``'auto'``, a file's own ``info.skeleton_index_base`` of 0 or 1 applies to all its categories).

Bad input raises :class:`AnnotationError` naming the file and the annotation / category id.
Instances the official protocol drops (no box, zero-area box, no labelled keypoint) are skipped,
counted in :class:`ParseReport` and logged by the caller.
"""
from __future__ import annotations

import json
import os.path as osp
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from .mp100_splits import MP100_SPLITS, parse_per_split_file_name

SkeletonBase = Union[str, int]


class AnnotationError(ValueError):
    """A malformed annotation file; the message names the file and the offending id."""


class UndecidableSkeletonBaseError(AnnotationError):
    """``skeleton_index_base='auto'`` cannot tell if a category's skeleton is 0- or 1-indexed."""


@dataclass
class CategoryRecord:
    """One category: ``num_kpts`` real keypoints and a 0-indexed skeleton of [a, b] pairs."""
    id: int
    name: str
    num_kpts: int
    skeleton: List[List[int]]
    keypoint_names: List[str]
    skeleton_index_base: Optional[int]  # 0, 1, or None for an empty skeleton


@dataclass
class ParseReport:
    """Counts of what the parser skipped or decided, for logging."""
    skipped: Dict[str, List[int]] = field(default_factory=dict)  # reason -> annotation ids
    skeleton_base: Dict[str, List[int]] = field(default_factory=dict)  # '0'/'1'/'empty' -> cat ids
    skipped_categories: Dict[str, List[int]] = field(default_factory=dict)
    #: 0 / 1 when 'auto' took the base from the file's ``info.skeleton_index_base``
    declared_skeleton_base: Optional[int] = None

    def skip(self, reason: str, ann_id: int) -> None:
        self.skipped.setdefault(reason, []).append(ann_id)

    @property
    def num_skipped(self) -> int:
        return sum(len(v) for v in self.skipped.values())

    def summary(self) -> str:
        parts = []
        for reason, ids in self.skipped.items():
            parts.append(f'skipped {len(ids)} annotation(s) ({reason}; first ids {ids[:5]})')
        for reason, ids in self.skipped_categories.items():
            parts.append(f'skipped {len(ids)} categor(y/ies) ({reason}: {ids})')
        base = ', '.join(f'{k}-indexed: {len(v)}' if k != 'empty' else f'empty: {len(v)}'
                         for k, v in sorted(self.skeleton_base.items()))
        if base:
            if self.declared_skeleton_base is not None:
                base += (f' (base {self.declared_skeleton_base} for every category, from the '
                         "file's info.skeleton_index_base)")
            parts.append(f'skeletons {base}')
            one = self.skeleton_base.get('1')
            if one:
                parts.append(f'1-indexed skeleton categories: {one}')
        return '; '.join(parts) if parts else 'nothing skipped'


_BUILD_UNIFIED = ('python tools/dataset_converters/build_mp100_unified.py <folder of '
                  'mp100_split{1..5}_{train,val,test}.json> <data_root>/annotations/'
                  'unified_ann_file.json')
_ADD_LINKS = ('python tools/dataset_converters/add_mp100_skeletons.py <data_root>/annotations/'
              'unified_ann_file.json <data_root>/annotations/mp100_all_link_0412.json '
              '--source <MP-100 files with a skeleton for every category>')
#: file name -> how to obtain or build that file (appended to the missing-file error)
ANN_FILE_HINTS = {
    'mp100_all_link_0412.json': (
        "FMMP's unified MP-100 file with skeleton links for the categories whose MP-100 "
        'skeleton is empty. Use the file of the official FMMP release, or build one: '
        f'(a) {_BUILD_UNIFIED}, then (b) {_ADD_LINKS}. A rebuilt file may link those '
        'categories differently from the official one (docs/annotation_files.md).'),
    'unified_ann_file.json': (
        "MetaPoint's unified MP-100 file (all 100 categories once). Use the file of the "
        f'official MetaPoint release, or build one from the official per-split files: '
        f'{_BUILD_UNIFIED} (docs/annotation_files.md). The synthetic sets write their own: '
        'bash scripts.sh synthetic / synthetic-real.'),
}


def missing_file_hint(path: str) -> str:
    """How to obtain or build the annotation file ``path`` ('' when its name is not known)."""
    name = osp.basename(path)
    if name in ANN_FILE_HINTS:
        return ANN_FILE_HINTS[name]
    split = parse_per_split_file_name(name)
    if split is not None and split[0] in MP100_SPLITS:
        return ('an official MP-100 per-split file: it comes with the MP-100 release '
                '(annotations/mp100_split{1..5}_{train,val,test}.json).')
    return ''


def load_json(path: str) -> dict:
    """Read a COCO json with errors that name the file (and, if missing, how to get it)."""
    if not osp.isfile(path):
        hint = missing_file_hint(path)
        raise FileNotFoundError(f'annotation file not found: {path}'
                                + (f'\n  {osp.basename(path)}: {hint}' if hint else ''))
    try:
        with open(path, 'r', encoding='utf-8') as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise AnnotationError(f'{path}: malformed JSON ({e})') from e
    if not isinstance(data, dict):
        raise AnnotationError(f'{path}: expected a JSON object at top level, got {type(data).__name__}')
    for key in ('images', 'annotations', 'categories'):
        if key not in data or not isinstance(data[key], list):
            raise AnnotationError(f'{path}: missing or non-list "{key}" field')
    return data


def resolve_skeleton(raw: Sequence, num_kpts: int, base: SkeletonBase, cat_id: int,
                     path: str) -> tuple:
    """Convert a category skeleton to 0-indexed pairs.

    Args:
        raw: list of [a, b] index pairs as stored in the file (may be empty or None).
        num_kpts: K_c, the category's keypoint count.
        base: 0, 1 or 'auto'. 'auto' decides per category: an index equal to K_c means the file
            is 1-indexed, an index 0 means 0-indexed; neither (or both) is ambiguous.
    Returns:
        (pairs, decided_base) with pairs a list of [a, b] in [0, K_c) and decided_base 0, 1 or
        None for an empty skeleton.
    """
    raw = raw or []
    pairs = []
    for link in raw:
        if (not isinstance(link, (list, tuple)) or len(link) != 2
                or not all(isinstance(i, (int, np.integer)) for i in link)):
            raise AnnotationError(
                f'{path}: category {cat_id}: skeleton entry {link!r} is not a pair of integers')
        pairs.append([int(link[0]), int(link[1])])
    if not pairs:
        return [], None
    flat = [i for p in pairs for i in p]
    lo, hi = min(flat), max(flat)
    if base == 'auto':
        if lo < 0 or hi > num_kpts:
            raise AnnotationError(
                f'{path}: category {cat_id}: skeleton index out of range (min {lo}, max {hi}) '
                f'for {num_kpts} keypoints')
        if hi == num_kpts and lo >= 1:
            base = 1
        elif lo == 0 and hi < num_kpts:
            base = 0
        else:
            raise UndecidableSkeletonBaseError(
                f'{path}: category {cat_id}: cannot decide the skeleton index base (min index '
                f'{lo}, max {hi}, {num_kpts} keypoints); set skeleton_index_base to 0 or 1 '
                '(or info.skeleton_index_base in the file)')
    elif base not in (0, 1):
        raise ValueError(f"skeleton_index_base must be 0, 1 or 'auto', got {base!r}")
    out = [[a - base, b - base] for a, b in pairs]
    bad = [p for p in out if not (0 <= p[0] < num_kpts and 0 <= p[1] < num_kpts)]
    if bad:
        raise AnnotationError(
            f'{path}: category {cat_id}: skeleton index out of range for {num_kpts} keypoints '
            f'with index base {base}: {[[a + base, b + base] for a, b in bad[:5]]}')
    return out, base


def file_skeleton_base(data: dict, path: str, base: SkeletonBase) -> Optional[int]:
    """The index base ``'auto'`` takes from the file: ``info.skeleton_index_base`` (0 or 1).

    None when ``base`` is explicit (0 / 1: the caller's setting wins) or the file declares none;
    then 'auto' decides per category. A declared value other than 0 or 1 is an error.
    """
    info = data.get('info')
    if base != 'auto' or not isinstance(info, dict) or 'skeleton_index_base' not in info:
        return None
    declared = info['skeleton_index_base']
    if isinstance(declared, bool) or declared not in (0, 1):
        raise AnnotationError(f'{path}: info.skeleton_index_base must be 0 or 1, got {declared!r}')
    return int(declared)


def resolve_file_skeleton(raw: Sequence, num_kpts: int, base: SkeletonBase,
                          declared: Optional[int], cat_id: int, path: str) -> tuple:
    """:func:`resolve_skeleton` with the file's declared base (see :func:`file_skeleton_base`)
    in place of ``'auto'``; an error then says where the base came from."""
    if declared is None:
        return resolve_skeleton(raw, num_kpts, base, cat_id, path)
    try:
        return resolve_skeleton(raw, num_kpts, declared, cat_id, path)
    except AnnotationError as e:
        raise AnnotationError(f"{e} (index base from the file's info.skeleton_index_base)") from e


def sanitise_bbox(bbox: Sequence[float], img_w: float, img_h: float) -> Optional[np.ndarray]:
    """Official MP-100 box cleaning; returns [x1, y1, w', h'] or None when the box is empty.

    x1 = max(0, x), y1 = max(0, y), x2 = min(W-1, x1 + max(0, w-1)), y2 = min(H-1, y1 + max(0, h-1));
    kept iff x2 > x1 and y2 > y1.
    """
    x, y, w, h = (float(v) for v in bbox)
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(img_w - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(img_h - 1.0, y1 + max(0.0, h - 1.0))
    if x2 > x1 and y2 > y1:
        return np.array([x1, y1, x2 - x1, y2 - y1], dtype=np.float32)
    return None


def annotation_keypoint_lengths(data: dict, ids: Optional[Sequence[int]] = None
                                ) -> Dict[int, int]:
    """Category id -> length of the first non-empty ``keypoints`` list of its annotations.

    An empty list is a 'no keypoints' annotation, not K = 0. ``ids`` restricts the categories.
    """
    wanted = None if ids is None else set(ids)
    ann_len: Dict[int, int] = {}
    for ann in data['annotations']:
        if not isinstance(ann, dict):
            continue  # reported by the instance parser
        cid = ann.get('category_id')
        if (wanted is None or cid in wanted) and cid not in ann_len \
                and isinstance(ann.get('keypoints'), list) and ann['keypoints']:
            ann_len[cid] = len(ann['keypoints'])
    return ann_len


def category_num_kpts(cat: dict, ann_len: Dict[int, int], path: str) -> int:
    """K_c: the length of the keypoint-name list, else ``len(keypoints) / 3`` of an annotation.

    Some MP-100 categories have an empty name list. ``ann_len`` comes from
    :func:`annotation_keypoint_lengths`.
    """
    cid = cat['id']
    names = cat.get('keypoints') or []
    if names:
        return len(names)
    if cid not in ann_len:
        raise AnnotationError(
            f'{path}: category {cid}: empty keypoint-name list and no annotation to take '
            'the keypoint count from')
    if ann_len[cid] % 3:
        raise AnnotationError(
            f'{path}: category {cid}: empty keypoint-name list and annotation keypoint '
            f'length {ann_len[cid]} is not a multiple of 3')
    return ann_len[cid] // 3


def parse_categories(data: dict, path: str, ids: Optional[Sequence[int]], max_kpt_num: int,
                     skeleton_index_base: SkeletonBase, skip_oversized: bool,
                     report: ParseReport) -> 'OrderedDict[int, CategoryRecord]':
    """Build the category records, in ``ids`` order (or file order when ``ids`` is None)."""
    by_id = OrderedDict()
    for cat in data['categories']:
        if not isinstance(cat, dict) or 'id' not in cat:
            raise AnnotationError(f'{path}: category entry without an id: {str(cat)[:80]}')
        if cat['id'] in by_id:
            raise AnnotationError(f'{path}: duplicate category id {cat["id"]}')
        by_id[cat['id']] = cat
    if ids is None:
        ids = list(by_id)
    else:
        ids = [int(i) for i in ids]
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise AnnotationError(
                f'{path}: valid_class_ids {missing} are not categories of this file '
                f'(it has {len(by_id)} categories: {sorted(by_id)[:10]}...)')
        if len(set(ids)) != len(ids):
            raise ValueError(f'valid_class_ids has duplicates: {ids}')

    ann_len = annotation_keypoint_lengths(data, ids)
    declared = file_skeleton_base(data, path, skeleton_index_base)
    report.declared_skeleton_base = declared
    cats = OrderedDict()
    for cid in ids:
        cat = by_id[cid]
        names = list(cat.get('keypoints') or [])
        num_kpts = category_num_kpts(cat, ann_len, path)
        if num_kpts > max_kpt_num:
            if skip_oversized:
                report.skipped_categories.setdefault(
                    f'more than max_kpt_num={max_kpt_num} keypoints', []).append(cid)
                continue
            raise AnnotationError(
                f'{path}: category {cid} ({cat.get("name")}) has {num_kpts} keypoints, more than '
                f'max_kpt_num={max_kpt_num}; raise max_kpt_num or set skip_oversized_categories')
        skeleton, base = resolve_file_skeleton(cat.get('skeleton'), num_kpts,
                                               skeleton_index_base, declared, cid, path)
        report.skeleton_base.setdefault('empty' if base is None else str(base), []).append(cid)
        cats[cid] = CategoryRecord(
            id=cid, name=str(cat.get('name', cid)), num_kpts=num_kpts, skeleton=skeleton,
            keypoint_names=names, skeleton_index_base=base)
    return cats


def parse_instances(data: dict, path: str, cats: 'OrderedDict[int, CategoryRecord]',
                    max_kpt_num: int, img_prefix: str, report: ParseReport) -> List[dict]:
    """Instance records in image-file order, then annotation order within an image.

    Each record holds ``keypoints`` [1, K, 2] and ``keypoints_visible`` [1, K] (min(1, v)) padded
    to K = max_kpt_num, ``bbox`` [1, 4] xyxy of the sanitised box, ``bbox_size`` = max(w', h').
    """
    images = OrderedDict()
    for img in data['images']:
        if not isinstance(img, dict) or 'id' not in img:
            raise AnnotationError(f'{path}: image entry without an id: {str(img)[:80]}')
        images[img['id']] = img
    anns_by_img: Dict[int, List[dict]] = {}
    seen_ids = set()
    for ann in data['annotations']:
        if not isinstance(ann, dict) or 'id' not in ann:
            raise AnnotationError(f'{path}: annotation entry without an id: {str(ann)[:80]}')
        if ann['id'] in seen_ids:
            raise AnnotationError(f'{path}: duplicate annotation id {ann["id"]}')
        seen_ids.add(ann['id'])
        if ann.get('category_id') not in cats:
            continue
        if ann.get('image_id') not in images:
            raise AnnotationError(
                f'{path}: annotation {ann["id"]} refers to unknown image id {ann.get("image_id")}')
        anns_by_img.setdefault(ann['image_id'], []).append(ann)

    records = []
    for img_id, img in images.items():
        for ann in anns_by_img.get(img_id, []):
            rec = _parse_instance(ann, img, cats[ann['category_id']], path, max_kpt_num,
                                  img_prefix, report)
            if rec is not None:
                records.append(rec)
    return records


def _parse_instance(ann: dict, img: dict, cat: CategoryRecord, path: str, max_kpt_num: int,
                    img_prefix: str, report: ParseReport) -> Optional[dict]:
    ann_id = ann['id']
    kpts = ann.get('keypoints')
    if kpts is None or len(kpts) == 0:
        report.skip('no keypoints', ann_id)
        return None
    if len(kpts) != 3 * cat.num_kpts:
        raise AnnotationError(
            f'{path}: annotation {ann_id} (category {cat.id}): keypoint list has {len(kpts)} '
            f'values, expected 3*K = {3 * cat.num_kpts}')
    try:
        arr = np.asarray(kpts, dtype=np.float32).reshape(cat.num_kpts, 3)
    except (TypeError, ValueError) as e:
        raise AnnotationError(f'{path}: annotation {ann_id}: non-numeric keypoints ({e})') from e
    if not np.isfinite(arr).all():
        raise AnnotationError(f'{path}: annotation {ann_id}: non-finite keypoint values')
    if arr.max() <= 0 or ann.get('num_keypoints', 1) == 0 or not (arr[:, 2] > 0).any():
        report.skip('no labelled keypoint', ann_id)
        return None
    bbox = ann.get('bbox')
    if bbox is None or len(bbox) != 4:
        report.skip('no bbox', ann_id)
        return None
    for key in ('width', 'height', 'file_name'):
        if key not in img:
            raise AnnotationError(f'{path}: image {img["id"]} has no "{key}" field')
    if ann.get('area', 1) == 0:
        report.skip('zero area', ann_id)
        return None
    clean = sanitise_bbox(bbox, img['width'], img['height'])
    if clean is None:
        report.skip('zero-area bbox after clipping', ann_id)
        return None
    x1, y1, w, h = clean
    keypoints = np.zeros((1, max_kpt_num, 2), dtype=np.float32)
    visible = np.zeros((1, max_kpt_num), dtype=np.float32)
    keypoints[0, :cat.num_kpts] = arr[:, :2]
    visible[0, :cat.num_kpts] = np.minimum(1.0, arr[:, 2])
    return dict(
        ann_id=int(ann_id),
        image_id=img['id'],
        img_path=osp.join(img_prefix, img['file_name']),
        category_id=cat.id,
        num_kpts=cat.num_kpts,
        bbox=np.array([[x1, y1, x1 + w, y1 + h]], dtype=np.float32),
        bbox_size=float(max(w, h)),
        keypoints=keypoints,
        keypoints_visible=visible,
    )
