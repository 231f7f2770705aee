"""Tests of the synthetic MP-100-style generator (metapoint.datasets.synthetic)."""
import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from metapoint.datasets.mp100_splits import MP100_SPLITS
from metapoint.datasets.synthetic import (MARKER_COLOURS, MARKER_POOL, RenderConfig,
                                          generate_dataset, make_category_style,
                                          make_random_splits, pair_pck, render_instance,
                                          skeleton_index_base, skeleton_to_zero_indexed,
                                          support_copy_pck)

from tests.helpers import MP100_ANN_DIR, REPO, require

# split4 val holds category 18 ('face', EMPTY keypoint-name list, K = 19 from the annotations)
MP100_FILE = MP100_ANN_DIR / 'mp100_split4_val.json'
SLICE_CATS = (1, 6, 18)


def _tiny_random(out, seed=0, workers=1, **kw):
    args = dict(source='random', img_size=64, seed=seed, num_categories=6,
                instances_per_category=4, workers=workers, calib_pairs=50)
    args.update(kw)
    return generate_dataset(out, **args)


def _tree_bytes(root):
    """{relative path: bytes} of every generated file except meta.json (timings)."""
    root = Path(root)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob('*'))
            if p.is_file() and p.name != 'meta.json'}


@pytest.fixture(scope='module')
def random_set(tmp_path_factory):
    out = tmp_path_factory.mktemp('random_w1')
    _tiny_random(out)
    return out


def _load(path):
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------------
def test_random_source_deterministic_across_runs_and_workers(random_set, tmp_path):
    _tiny_random(tmp_path / 'again')
    _tiny_random(tmp_path / 'w2', workers=2)
    _tiny_random(tmp_path / 'seed1', seed=1)
    ref = _tree_bytes(random_set)
    assert len([k for k in ref if k.endswith('.jpg')]) == 24
    assert _tree_bytes(tmp_path / 'again') == ref
    assert _tree_bytes(tmp_path / 'w2') == ref
    other = _tree_bytes(tmp_path / 'seed1')
    uni = 'annotations/unified_ann_file.json'
    assert other[uni] != ref[uni]
    jpgs = [k for k in ref if k.endswith('.jpg')]
    assert all(other[k] != ref[k] for k in jpgs if k in other)


def test_overwrite_protection(random_set, tmp_path):
    with pytest.raises(FileExistsError):
        _tiny_random(random_set)
    out = tmp_path / 'ow'
    _tiny_random(out, num_categories=5)
    _tiny_random(out, overwrite=True, num_categories=3, instances_per_category=2)
    assert len(list((out / 'images').rglob('*.jpg'))) == 6
    assert len(_load(out / 'annotations/unified_ann_file.json')['categories']) == 3


# ----------------------------------------------------------------------------------------------
# structure of the written data set
# ----------------------------------------------------------------------------------------------
def _check_coco(root, img_size):
    from xtcocotools.coco import COCO
    root = Path(root)
    path = root / 'annotations' / 'unified_ann_file.json'
    coco = COCO(str(path))
    data = _load(path)
    assert data['info']['skeleton_index_base'] == 0
    cats = {c['id']: c for c in data['categories']}
    ann_ids = [a['id'] for a in data['annotations']]
    img_ids = [im['id'] for im in data['images']]
    assert ann_ids == sorted(set(ann_ids)) and img_ids == sorted(set(img_ids))
    assert len(coco.getAnnIds()) == len(ann_ids) and len(coco.getImgIds()) == len(img_ids)
    images = {im['id']: im for im in data['images']}
    num_k = {}
    for a in data['annotations']:
        num_k.setdefault(a['category_id'], len(a['keypoints']) // 3)
    for cid, c in cats.items():
        k = len(c['keypoints']) or num_k[cid]
        for s in c['skeleton']:
            assert len(s) == 2 and all(0 <= i < k for i in s)
    for a in data['annotations']:
        c = cats[a['category_id']]
        k = len(c['keypoints']) or num_k[c['id']]
        assert len(a['keypoints']) == 3 * k
        kp = np.array(a['keypoints'], dtype=float).reshape(k, 3)
        assert set(np.unique(kp[:, 2])) <= {0, 1, 2}
        assert np.all(kp[kp[:, 2] == 0] == 0)
        assert a['num_keypoints'] == int((kp[:, 2] > 0).sum())
        assert a['iscrowd'] == 0
        x, y, w, h = a['bbox']
        assert w > 0 and h > 0 and a['area'] == pytest.approx(w * h, abs=0.01)
        assert x >= 0 and y >= 0 and x + w <= img_size + 1e-6 and y + h <= img_size + 1e-6
        lab = kp[kp[:, 2] > 0]
        assert np.all(lab[:, 0] >= x - 1e-6) and np.all(lab[:, 0] <= x + w + 1e-6)
        assert np.all(lab[:, 1] >= y - 1e-6) and np.all(lab[:, 1] <= y + h + 1e-6)
        im = images[a['image_id']]
        assert a['image_id'] == a['id']
        assert (im['width'], im['height']) == (img_size, img_size)
        assert im['file_name'].count('/') == 1 and im['file_name'].endswith('.jpg')
        pix = cv2.imread(str(root / 'images' / im['file_name']))
        assert pix is not None and pix.shape == (img_size, img_size, 3)
    return data


def _check_split_files(root, data):
    splits = _load(Path(root) / 'splits.json')
    assert sorted(splits) == [f'split{i}' for i in range(1, 6)]
    all_ids = {c['id'] for c in data['categories']}
    tests = []
    for name, roles in splits.items():
        assert sorted(roles) == ['test', 'train', 'val']
        ids = roles['train'] + roles['val'] + roles['test']
        assert len(ids) == len(set(ids)) and set(ids) == all_ids
        tests += roles['test']
        for role, cat_ids in roles.items():
            sub = _load(Path(root) / 'annotations' / f'mp100_{name}_{role}.json')
            assert [c['id'] for c in sub['categories']] == cat_ids
            assert {a['category_id'] for a in sub['annotations']} == set(cat_ids)
            n_expected = sum(1 for a in data['annotations'] if a['category_id'] in cat_ids)
            assert len(sub['annotations']) == n_expected == len(sub['images'])
    return splits, tests


def test_random_source_structure(random_set):
    data = _check_coco(random_set, 64)
    assert len(data['categories']) == 6 and len(data['annotations']) == 24
    for c in data['categories']:
        assert 5 <= len(c['keypoints']) <= 32 and len(c['skeleton']) >= len(c['keypoints']) - 1
    splits, tests = _check_split_files(random_set, data)
    assert sorted(tests) == sorted(c['id'] for c in data['categories'])  # disjoint, covering
    assert all(roles[r] for roles in splits.values() for r in roles)
    meta = _load(random_set / 'meta.json')
    assert meta['counts']['images'] == 24 and meta['args']['seed'] == 0
    assert 0.0 <= meta['support_copy_pck@0.2'] <= 1.0


@pytest.mark.parametrize('n', [3, 4, 5, 7, 10, 23, 100])
def test_random_splits(n):
    ids = list(range(1, n + 1))
    splits = make_random_splits(ids, seed=3)
    assert sorted(splits) == [1, 2, 3, 4, 5]
    tests = []
    for roles in splits.values():
        assert all(roles[r] for r in ('train', 'val', 'test'))
        both = roles['train'] + roles['val'] + roles['test']
        assert sorted(both) == ids
        tests += roles['test']
    assert set(tests) == set(ids)
    if n >= 5:
        assert len(tests) == n
    if n == 100:
        assert [len(splits[1][r]) for r in ('train', 'val', 'test')] == [70, 10, 20]
    assert splits == make_random_splits(ids, seed=3) != make_random_splits(ids, seed=4)


def test_official_split_table():
    tests = []
    for roles in MP100_SPLITS.values():
        assert [len(roles[r]) for r in ('train', 'val', 'test')] == [70, 10, 20]
        assert sorted(roles['train'] + roles['val'] + roles['test']) == list(range(1, 101))
        tests += roles['test']
    assert sorted(tests) == list(range(1, 101))
    assert MP100_SPLITS[1]['test'][:3] == [10, 77, 24] and MP100_SPLITS[5]['val'][-1] == 17


# ----------------------------------------------------------------------------------------------
# MP-100 source
# ----------------------------------------------------------------------------------------------
def _mp100_slice(folder, per_cat=5, one_indexed=False, duplicate=False):
    """Write a small slice of a real MP-100 file (SLICE_CATS x per_cat annotations); skips the
    calling test when the shared annotations are absent."""
    data = _load(require(MP100_FILE))
    anns = []
    for cid in SLICE_CATS:
        anns += [a for a in data['annotations'] if a['category_id'] == cid][:per_cat]
    img_ids = {a['image_id'] for a in anns}
    cats = [dict(c) for c in data['categories'] if c['id'] in SLICE_CATS]
    if one_indexed:
        for c in cats:
            c['skeleton'] = [[a + 1, b + 1] for a, b in c['skeleton']]
    part = {'info': data['info'], 'images': [im for im in data['images'] if im['id'] in img_ids],
            'annotations': anns, 'categories': cats}
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / 'a_part.json', 'w') as f:
        json.dump(part, f)
    if duplicate:  # same annotations again in a second file (must be deduplicated)
        with open(folder / 'b_copy.json', 'w') as f:
            json.dump(part, f)
    return part


def _pairwise(p):
    return np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))


def test_mp100_source_keeps_real_layout(tmp_path):
    src = _mp100_slice(tmp_path / 'ann', duplicate=True)
    src_cats = {c['id']: c for c in src['categories']}
    assert src_cats[18]['keypoints'] == []  # the empty-name category is part of the slice
    out = tmp_path / 'out'
    meta = generate_dataset(out, source='mp100', mp100_ann_dir=tmp_path / 'ann', img_size=96,
                            render_config=RenderConfig(aspect_jitter=0.0), calib_pairs=20)
    data = _check_coco(out, 96)
    assert meta['counts']['images'] == len(src['annotations']) == 15
    assert len(data['images']) == len(data['annotations']) == 15
    cats = {c['id']: c for c in data['categories']}
    assert sorted(cats) == sorted(SLICE_CATS)
    for cid, c in cats.items():
        assert c['name'] == src_cats[cid]['name']
        assert c['keypoints'] == src_cats[cid]['keypoints']
        assert c['skeleton'] == src_cats[cid]['skeleton']  # shared files are 0-indexed
    by_src = {a['id']: a for a in src['annotations']}
    for a in data['annotations']:
        orig = by_src[a['source_ann_id']]
        assert a['category_id'] == orig['category_id']
        k0 = np.array(orig['keypoints'], float).reshape(-1, 3)
        k1 = np.array(a['keypoints'], float).reshape(-1, 3)
        assert k1.shape == k0.shape
        assert np.array_equal(k1[:, 2], np.clip(np.rint(k0[:, 2]), 0, 2))
        lab = k0[:, 2] > 0
        if lab.sum() >= 2:  # similarity transform: pairwise distances scale uniformly
            d0, d1 = _pairwise(k0[lab, :2]), _pairwise(k1[lab, :2])
            big = d0 > 0.05 * d0.max()
            ratio = d1[big] / d0[big]
            assert ratio.std() / ratio.mean() < 0.02
    splits = _load(out / 'splits.json')
    for n, roles in MP100_SPLITS.items():
        for role, ids in roles.items():
            assert splits[f'split{n}'][role] == [i for i in ids if i in SLICE_CATS]
    assert meta['missing_official_categories'] == sorted(set(range(1, 101)) - set(SLICE_CATS))

    capped = generate_dataset(tmp_path / 'capped', source='mp100', mp100_ann_dir=tmp_path / 'ann',
                              img_size=64, max_instances_per_category=2, calib_pairs=10)
    assert capped['counts']['images'] == 6
    capped_src = {a['source_ann_id'] for a in
                  _load(tmp_path / 'capped/annotations/unified_ann_file.json')['annotations']}
    first_two = {a['id'] for cid in SLICE_CATS
                 for a in [x for x in src['annotations'] if x['category_id'] == cid][:2]}
    assert capped_src == first_two


def test_mp100_one_indexed_skeleton_converted(tmp_path):
    """Categories 1 and 6 become unambiguously 1-indexed (they use index K); category 18's
    shifted skeleton uses neither 0 nor K and follows the other categories of its file."""
    src0 = _mp100_slice(tmp_path / 'ann0', per_cat=2)
    _mp100_slice(tmp_path / 'ann1', per_cat=2, one_indexed=True)
    generate_dataset(tmp_path / 'out', source='mp100', mp100_ann_dir=tmp_path / 'ann1',
                     img_size=64, calib_pairs=10)
    data = _load(tmp_path / 'out/annotations/unified_ann_file.json')
    want = {c['id']: c['skeleton'] for c in src0['categories']}
    assert {c['id']: c['skeleton'] for c in data['categories']} == want


def test_skeleton_index_rule():
    assert skeleton_to_zero_indexed([[1, 2], [2, 3]], 3) == [(0, 1), (1, 2)]  # uses K -> 1-based
    assert skeleton_to_zero_indexed([[0, 1], [1, 2]], 3) == [(0, 1), (1, 2)]  # uses 0
    assert skeleton_to_zero_indexed([[1, 2]], 4) == [(1, 2)]  # ambiguous -> default 0-based
    assert skeleton_to_zero_indexed([[1, 2]], 4, default_base=1) == [(0, 1)]
    assert skeleton_index_base([[1, 2]], 4) is None and skeleton_index_base([[1, 4]], 4) == 1
    assert skeleton_to_zero_indexed([], 4) == []
    with pytest.raises(ValueError):
        skeleton_to_zero_indexed([[0, 3]], 3)
    with pytest.raises(ValueError):
        skeleton_to_zero_indexed([[1, 5]], 3)


# ----------------------------------------------------------------------------------------------
# rendering
# ----------------------------------------------------------------------------------------------
def test_markers_drawn_at_keypoints():
    """Without distractors / occluders / photometric noise, every labelled keypoint has a pixel
    of its own marker colour next to it; the unlabelled keypoint is written as 0, 0, 0."""
    k = 6
    ang = np.linspace(0, 2 * np.pi, k, endpoint=False)
    kpts = np.stack([np.cos(ang), np.sin(ang)], 1) * 10
    vis = np.array([2, 2, 1, 2, 0, 2])
    cfg = RenderConfig(img_size=128, distractor_range=(0, 0), occluder_prob=0.0,
                       photometric=False, scale_range=(0.8, 0.8))
    for cat in range(1, 6):
        style = make_category_style(0, cat, k)
        res = render_instance(kpts, vis, [(i, (i + 1) % k) for i in range(k)], style,
                              np.random.default_rng([0, cat, 0]), cfg)
        img = res.image.astype(int)
        r = int(np.ceil(1.3 * res.marker_radius))
        assert res.keypoints.shape == (k, 3) and np.array_equal(res.keypoints[:, 2], vis)
        assert np.all(res.keypoints[4] == 0)
        for i in np.flatnonzero(vis):
            x, y = np.rint(res.keypoints[i, :2]).astype(int)
            patch = img[y - r:y + r + 1, x - r:x + r + 1].reshape(-1, 3)
            colour = np.array(MARKER_COLOURS[MARKER_POOL[style.marker_ids[i]][1]])
            assert np.abs(patch - colour).max(1).min() <= 25, (cat, i)


def test_category_style_fixed_and_from_global_pool():
    a, b = make_category_style(0, 7, 20), make_category_style(0, 7, 20)
    assert a == b
    assert len(set(a.marker_ids)) == 20 and all(0 <= i < len(MARKER_POOL) for i in a.marker_ids)
    assert make_category_style(0, 8, 20).marker_ids != a.marker_ids
    assert make_category_style(1, 7, 20) != a


# ----------------------------------------------------------------------------------------------
# SupportCopy calibration
# ----------------------------------------------------------------------------------------------
def _ann(i, cat, bbox, kps):
    flat = [float(v) for p in kps for v in p]
    return {'id': i, 'image_id': i, 'category_id': cat, 'bbox': bbox, 'keypoints': flat}


def test_support_copy_pck_known_values(tmp_path):
    box = [0, 0, 100, 100]
    s = _ann(1, 1, box, [(10, 10, 2), (50, 50, 2), (90, 90, 2)])
    q = _ann(2, 1, box, [(10, 10, 2), (80, 50, 2), (90, 90, 2)])  # middle one 0.3 away
    assert pair_pck(s, q) == pytest.approx(2 / 3)
    assert pair_pck(s, q, thr=0.31) == pytest.approx(1.0)
    path = tmp_path / 'a.json'
    path.write_text(json.dumps({'annotations': [s, q]}))
    assert support_copy_pck(str(path), num_pairs=50, seed=0) == pytest.approx(2 / 3)
    # exact similarity (scale 2, shift) of a non-square box: crop coordinates are identical
    s2 = _ann(3, 2, [0, 0, 100, 50], [(10, 10, 2), (60, 40, 1), (0, 0, 0)])
    q2 = _ann(4, 2, [200, 100, 200, 100], [(220, 120, 2), (320, 180, 2), (5, 5, 2)])
    assert pair_pck(s2, q2) == pytest.approx(1.0)
    assert support_copy_pck({'annotations': [s2, q2]}, num_pairs=20) == pytest.approx(1.0)
    # mixture: per-pair mean over pairs drawn from both categories
    mixed = support_copy_pck({'annotations': [s, q, s2, q2]}, num_pairs=400, seed=1)
    assert 2 / 3 < mixed < 1.0
    # no co-labelled keypoint -> no valid pair
    q3 = _ann(5, 3, box, [(1, 1, 0)])
    assert np.isnan(support_copy_pck({'annotations': [_ann(6, 3, box, [(1, 1, 2)]), q3]}, 10))


# ----------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------
def test_cli(tmp_path):
    spec = importlib.util.spec_from_file_location(
        'make_synthetic_mp100', REPO / 'tools/dataset_converters/make_synthetic_mp100.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / 'cli'
    argv = ['--out', str(out), '--img-size', '48', '--num-categories', '4',
            '--instances-per-category', '3', '--seed', '5', '--calib-pairs', '20']
    mod.main(argv)
    meta = _load(out / 'meta.json')
    assert meta['args']['img_size'] == 48 and meta['args']['seed'] == 5
    assert meta['counts']['images'] == 12
    with pytest.raises(FileExistsError):
        mod.main(argv)
    mod.main(argv + ['--overwrite', '--max-instances-per-category', '2'])
    assert _load(out / 'meta.json')['counts']['images'] == 8
