"""Writing a synthetic MP-100-style data set folder (images + COCO json + splits + meta).

Layout written under ``out_dir`` (relied upon by the MP-100 dataset loader)::

    annotations/unified_ann_file.json                   all categories
    annotations/mp100_split{1..5}_{train,val,test}.json  same format, filtered by category
    images/<category folder>/<file>.jpg                  file_name is relative to images/
    splits.json                                          {"split1": {"train": [...], ...}, ...}
    meta.json                                            arguments, counts, timings, SupportCopy

COCO fields: image ``id, file_name, width, height``; annotation ``id, image_id, category_id,
bbox [x, y, w, h], keypoints [x, y, v] * K, num_keypoints, area, iscrowd`` (image pixels,
unlabelled keypoints are ``0, 0, 0``); category ``id, name, supercategory, keypoints,
skeleton`` (0-indexed). One image per annotation, ``image id == annotation id``, ids 1..N in
(category id, instance index) order. Everything except ``meta.json`` (timings, worker count) is
byte-identical for identical generation arguments, whatever the number of workers.
"""
import json
import multiprocessing as mp
import re
import shutil
import time
from functools import lru_cache
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import cv2
import numpy as np

from ..mp100_splits import MP100_SPLITS, SUBSETS, per_split_file_name
from .calibration import support_copy_pck
from .poses import CategorySpec, PoseSample, load_mp100_poses, random_pose_source
from .render import RenderConfig, make_category_style, render_instance

GENERATOR_NAME = 'metapoint.datasets.synthetic'
GENERATOR_VERSION = '1.0'
_OUTPUTS = ('annotations', 'images', 'splits.json', 'meta.json')


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------
def make_random_splits(cat_ids: Sequence[int], seed: int = 0) -> Dict[int, Dict[str, list]]:
    """Five MP-100-like splits of ``cat_ids`` (needs >= 3 ids).

    A seeded permutation is cut into 5 consecutive test blocks (disjoint, covering every id, about
    20% each); val = the next ``max(1, round(0.1 N))`` ids after the test block (cyclically),
    train = the rest. Lists are sorted. With fewer than 5 ids the test blocks cannot be both
    disjoint and non-empty: then test of split n is the single id ``perm[n % N]``.
    """
    ids = [int(i) for i in cat_ids]
    n = len(ids)
    if n < 3:
        raise ValueError('need at least 3 categories for train/val/test splits')
    perm = [ids[i] for i in np.random.default_rng([0x5B117, seed]).permutation(n)]
    if n >= 5:
        bounds = np.linspace(0, n, 6).round().astype(int)
        blocks = [(int(bounds[i]), int(bounds[i + 1])) for i in range(5)]
    else:
        blocks = [(i % n, i % n + 1) for i in range(5)]
    n_val = max(1, int(round(0.1 * n)))
    splits = {}
    for sn, (b0, b1) in enumerate(blocks, start=1):
        test = perm[b0:b1]
        n_val_s = min(n_val, n - len(test) - 1)
        val = [perm[(b1 + j) % n] for j in range(n_val_s)]
        train = [i for i in perm if i not in test and i not in val]
        splits[sn] = {'train': sorted(train), 'val': sorted(val), 'test': sorted(test)}
    return splits


def official_splits(present_ids: Sequence[int]) -> Dict[int, Dict[str, list]]:
    """The official MP-100 splits (official order), restricted to ``present_ids``."""
    present = set(int(i) for i in present_ids)
    return {n: {role: [c for c in s[role] if c in present] for role in SUBSETS}
            for n, s in MP100_SPLITS.items()}


# --------------------------------------------------------------------------------------------
# rendering jobs (module-level so multiprocessing can pickle them)
# --------------------------------------------------------------------------------------------
_STATE = {}


def _init_worker(seed: int, cfg: RenderConfig):
    cv2.setNumThreads(1)
    _STATE['seed'] = seed
    _STATE['cfg'] = cfg


@lru_cache(maxsize=None)
def _style(seed, cat_id, k):
    return make_category_style(seed, cat_id, k)


def _render_job(job):
    """job = (cat_id, idx, keypoints (K, 2), visibility (K,), skeleton) ->
    (jpeg bytes, keypoints (K, 3), bbox (4,), CPU seconds of this process)."""
    t0 = time.process_time()
    seed, cfg = _STATE['seed'], _STATE['cfg']
    cat_id, idx, kpts, vis, skeleton = job
    rng = np.random.default_rng([seed, cat_id, idx])
    res = render_instance(kpts, vis, skeleton, _style(seed, cat_id, len(vis)), rng, cfg)
    ok, buf = cv2.imencode('.jpg', res.image, [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality])
    if not ok:
        raise RuntimeError('JPEG encoding failed')
    return buf.tobytes(), res.keypoints, res.bbox, time.process_time() - t0


def render_samples(categories: Sequence[CategorySpec], samples: Sequence[PoseSample], seed: int,
                   cfg: RenderConfig, workers: int = 1):
    """Yield ``_render_job`` results for ``samples`` in order (``workers`` processes)."""
    skel = {c.id: tuple(c.skeleton) for c in categories}
    jobs = ((s.category_id, s.index, s.keypoints, s.visibility, skel[s.category_id])
            for s in samples)
    if workers <= 1:
        _init_worker(seed, cfg)
        for job in jobs:
            yield _render_job(job)
        return
    method = 'fork' if 'fork' in mp.get_all_start_methods() else None
    ctx = mp.get_context(method)
    chunk = max(1, min(64, len(samples) // (workers * 8)))
    with ctx.Pool(workers, initializer=_init_worker, initargs=(seed, cfg)) as pool:
        yield from pool.imap(_render_job, jobs, chunksize=chunk)


# --------------------------------------------------------------------------------------------
# COCO assembly
# --------------------------------------------------------------------------------------------
def _safe(name: str) -> str:
    return re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('_') or 'category'


def category_folder(cat: CategorySpec) -> str:
    """Image folder of a category: ``<id:03d>_<name>`` (names are not unique in MP-100)."""
    return f'{cat.id:03d}_{_safe(cat.name)}'


def _category_record(cat: CategorySpec) -> dict:
    return {'id': cat.id, 'name': cat.name, 'supercategory': cat.supercategory,
            'keypoints': list(cat.keypoint_names),
            'skeleton': [[int(a), int(b)] for a, b in cat.skeleton]}


def _round_box(bbox, size):
    x0 = max(0.0, np.floor(bbox[0] * 100) / 100)
    y0 = max(0.0, np.floor(bbox[1] * 100) / 100)
    x1 = min(float(size), np.ceil((bbox[0] + bbox[2]) * 100) / 100)
    y1 = min(float(size), np.ceil((bbox[1] + bbox[3]) * 100) / 100)
    return [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)]


def _dump(obj, path):
    with open(path, 'w') as f:
        json.dump(obj, f, separators=(',', ':'))
        f.write('\n')


def _subset(coco: dict, cat_order: Sequence[int]) -> dict:
    keep = set(cat_order)
    by_id = {c['id']: c for c in coco['categories']}
    anns = [a for a in coco['annotations'] if a['category_id'] in keep]
    img_ids = {a['image_id'] for a in anns}
    return {'info': coco['info'],
            'images': [im for im in coco['images'] if im['id'] in img_ids],
            'annotations': anns,
            'categories': [by_id[c] for c in cat_order if c in by_id]}


# --------------------------------------------------------------------------------------------
# main entry
# --------------------------------------------------------------------------------------------
def generate_dataset(out_dir, source: str = 'random', mp100_ann_dir=None, img_size: int = 256,
                     seed: int = 0, num_categories: int = 100, instances_per_category: int = 30,
                     max_instances_per_category: Optional[int] = None, workers: int = 1,
                     overwrite: bool = False, render_config: Optional[RenderConfig] = None,
                     calib_pairs: int = 2000,
                     log: Optional[Callable[[str], None]] = None) -> dict:
    """Generate the data set folder ``out_dir`` and return the content of its ``meta.json``.

    ``source='random'``: :func:`random_pose_source` categories 1..num_categories and
    :func:`make_random_splits`. ``source='mp100'``: :func:`load_mp100_poses` on
    ``mp100_ann_dir`` (one image per real annotation) and the official splits restricted to the
    categories present. ``render_config`` overrides the default :class:`RenderConfig` (its
    ``img_size`` is replaced by ``img_size``). Raises ``FileExistsError`` if ``out_dir`` already
    holds generator outputs and ``overwrite`` is False (with ``overwrite`` only those outputs
    are deleted).
    """
    t_start = time.perf_counter()
    log = log or (lambda msg: None)
    out = Path(out_dir)
    existing = [out / p for p in _OUTPUTS if (out / p).exists()]
    if existing and not overwrite:
        raise FileExistsError(f'{out} already holds generated data (use overwrite=True)')
    cfg = render_config or RenderConfig()
    cfg = RenderConfig(**{**cfg.__dict__, 'img_size': int(img_size)})

    if source == 'random':
        cats, samples = random_pose_source(num_categories, instances_per_category, seed)
        if max_instances_per_category is not None:
            samples = [s for s in samples if s.index < max_instances_per_category]
        splits = make_random_splits([c.id for c in cats], seed)
    elif source == 'mp100':
        if mp100_ann_dir is None:
            raise ValueError('source "mp100" needs mp100_ann_dir')
        cats, samples = load_mp100_poses(mp100_ann_dir, max_instances_per_category)
        splits = official_splits([c.id for c in cats])
    else:
        raise ValueError(f'unknown source {source!r}')
    samples = sorted(samples, key=lambda s: (s.category_id, s.index))
    cat_by_id = {c.id: c for c in cats}
    log(f'{source}: {len(cats)} categories, {len(samples)} instances, img_size {img_size}')

    for p in existing:
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    for c in cats:
        (out / 'images' / category_folder(c)).mkdir(parents=True, exist_ok=True)

    images, annotations = [], []
    render_cpu = 0.0
    t_render = time.perf_counter()
    for n, (s, (jpg, kpts, bbox, dt)) in enumerate(
            zip(samples, render_samples(cats, samples, seed, cfg, workers)), start=1):
        cat = cat_by_id[s.category_id]
        folder = category_folder(cat)
        file_name = f'{folder}/{_safe(cat.name)}_{s.index:05d}.jpg'
        with open(out / 'images' / file_name, 'wb') as f:
            f.write(jpg)
        render_cpu += dt
        box = _round_box(bbox, cfg.img_size)
        kp = np.round(kpts, 2)
        kp[kpts[:, 2] <= 0] = 0.0
        flat = [float(v) for v in kp.reshape(-1)]
        for i in range(2, len(flat), 3):
            flat[i] = int(flat[i])
        images.append({'id': n, 'file_name': file_name, 'width': cfg.img_size,
                       'height': cfg.img_size})
        ann = {'id': n, 'image_id': n, 'category_id': cat.id, 'bbox': box, 'keypoints': flat,
               'num_keypoints': int((kpts[:, 2] > 0).sum()),
               'area': round(box[2] * box[3], 2), 'iscrowd': 0}
        if s.source_id is not None:
            ann['source_ann_id'] = s.source_id
        annotations.append(ann)
        if n % 2000 == 0:
            log(f'  rendered {n}/{len(samples)}')
    t_render = time.perf_counter() - t_render

    info = {'description': 'synthetic MP-100-style CAPE data', 'generator': GENERATOR_NAME,
            'version': GENERATOR_VERSION, 'source': source, 'seed': int(seed),
            'img_size': int(cfg.img_size), 'skeleton_index_base': 0}
    coco = {'info': info, 'images': images, 'annotations': annotations,
            'categories': [_category_record(c) for c in cats]}
    _dump(coco, out / 'annotations' / 'unified_ann_file.json')
    split_counts = {}
    for sn, roles in splits.items():
        split_counts[f'split{sn}'] = {}
        for role in SUBSETS:
            sub = _subset(coco, roles[role])
            _dump(sub, out / 'annotations' / per_split_file_name(sn, role))
            split_counts[f'split{sn}'][role] = len(sub['annotations'])
    _dump({f'split{sn}': {role: list(map(int, roles[role])) for role in SUBSETS}
           for sn, roles in splits.items()}, out / 'splits.json')

    pck = support_copy_pck(coco, num_pairs=calib_pairs, seed=seed)
    n_img = max(1, len(images))
    meta = {
        'generator': GENERATOR_NAME, 'version': GENERATOR_VERSION,
        'args': {'source': source,
                 'mp100_ann_dir': None if mp100_ann_dir is None else str(mp100_ann_dir),
                 'img_size': int(img_size), 'seed': int(seed),
                 'num_categories': int(num_categories) if source == 'random' else None,
                 'instances_per_category': (int(instances_per_category)
                                            if source == 'random' else None),
                 'max_instances_per_category': max_instances_per_category,
                 'workers': int(workers)},
        'render_config': {k: (list(v) if isinstance(v, tuple) else v)
                          for k, v in cfg.__dict__.items()},
        'counts': {'categories': len(cats), 'images': len(images),
                   'annotations': len(annotations),
                   'labelled_keypoints': int(sum(a['num_keypoints'] for a in annotations)),
                   'splits': split_counts},
        'missing_official_categories': (sorted(set(range(1, 101)) - set(cat_by_id))
                                        if source == 'mp100' else []),
        'support_copy_pck@0.2': round(pck, 4),
        'support_copy': {'num_pairs': calib_pairs, 'seed': int(seed), 'thr': 0.2,
                         'ann_file': 'annotations/unified_ann_file.json'},
        'timing': {'render_wall_s': round(t_render, 2),
                   'render_cpu_ms_per_image': round(1000 * render_cpu / n_img, 3),
                   'elapsed_s': round(time.perf_counter() - t_start, 2)},
    }
    with open(out / 'meta.json', 'w') as f:
        json.dump(meta, f, indent=2)
        f.write('\n')
    log(f'SupportCopy PCK@0.2 = {pck:.4f}; {meta["timing"]}')
    return meta
