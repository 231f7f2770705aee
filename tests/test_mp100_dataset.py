"""MP100Dataset on real files: the MP-100 val/test annotations and mp100_mini (real photos).

Counts asserted here were measured on the shared test data (``tests.helpers.MP100_ANN_DIR`` and
``MP100_MINI``) and are explained: the loader keeps every annotation except the ones the official protocol drops, and
every drop is listed in ``dataset.report``.
"""
import copy
import json
import random
import re
from collections import Counter

import numpy as np
import pytest
import torch

from tests.helpers import MP100_ANN_DIR, MP100_MINI, mp100_ann_file, require

from metapoint.datasets import (MP100_SPLITS, AnnotationError, Episode, EpisodeError,
                                EpisodeSampler, MP100Dataset, draw_train_episodes, episode_collate,
                                make_eval_episodes)
from metapoint.utils.geometry import crop_to_image, image_to_crop

FILES = [(n, s) for n in range(1, 6) for s in ('val', 'test')]

# Annotations dropped by the official rule (a negative box width/height gives x2 = x1 after
# sanitising): all of category 18, whose boxes are stored as [x, y, -w, -h].
SKIPPED_18_SPLIT4_VAL = [1800000000001530, 1800000000005760, 1800000000013846,
                         1800000000015842, 1800000000015984, 1800000000019879]
SKIPPED_18_SPLIT5_TEST = [1800000000001530, 1800000000019879]
# (split, subset) -> (annotations in the file, instances kept, skipped ids)
EXPECTED_COUNTS = {
    (1, 'val'): (2000, 2000, []), (1, 'test'): (2000, 2000, []),
    (2, 'val'): (2000, 2000, []), (2, 'test'): (2000, 2000, []),
    (3, 'val'): (2000, 2000, []), (3, 'test'): (2000, 2000, []),
    (4, 'val'): (2000, 1994, SKIPPED_18_SPLIT4_VAL), (4, 'test'): (2000, 2000, []),
    (5, 'val'): (2000, 2000, []), (5, 'test'): (2000, 1998, SKIPPED_18_SPLIT5_TEST),
}
ZERO_BOX = 'zero-area bbox after clipping'

# mp100_mini README table: category id -> (K, #skeleton links, #instances)
MINI_TABLE = {
    1: (17, 19, 12), 2: (17, 19, 5), 3: (17, 16, 14), 4: (26, 27, 12), 5: (21, 23, 3),
    6: (14, 14, 9), 7: (14, 15, 4), 8: (14, 13, 6), 9: (16, 15, 4), 10: (16, 15, 5),
    11: (40, 27, 5), 12: (15, 14, 3), 13: (17, 16, 4), 14: (17, 16, 4), 15: (68, 64, 2),
    16: (68, 64, 3), 17: (68, 64, 2), 18: (68, 64, 4), 19: (19, 13, 2), 20: (29, 28, 2),
    21: (98, 94, 4), 22: (106, 99, 2), 23: (21, 20, 4), 24: (21, 20, 2), 25: (21, 20, 4),
    26: (21, 20, 10), 27: (17, 19, 2), 28: (32, 25, 2), 29: (35, 26, 2), 30: (9, 8, 2),
    31: (22, 18, 3), 32: (15, 14, 2), 33: (17, 17, 2), 34: (20, 20, 2), 35: (23, 22, 2),
    36: (37, 38, 2), 37: (8, 9, 2),
}
MINI_TRAIN = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 21, 22, 27, 33, 34,
              35, 37]
MINI_TEST = [19, 20, 23, 24, 25, 26, 28, 29, 30, 31, 32, 36]
INPUT = 256
HM = 64


def official_bbox(bbox, img_w, img_h):
    """docs/methods.md, instance loading, written out independently of the loader:
    [x1, y1, w', h'] or None."""
    x, y, w, h = bbox
    x1, y1 = max(0.0, x), max(0.0, y)
    x2 = min(img_w - 1.0, x1 + max(0.0, w - 1.0))
    y2 = min(img_h - 1.0, y1 + max(0.0, h - 1.0))
    if x2 > x1 and y2 > y1:
        return [x1, y1, x2 - x1, y2 - y1]
    return None


def mini_pipeline(rotation=False, heatmaps=True):
    pipe = [dict(type='LoadImage'), dict(type='GetBBoxCenterScale', padding=1.25)]
    if rotation:
        pipe.append(dict(type='RandomScaleRotation', scale_factor=0.15, rot_factor=15,
                         rot_prob=1.0))
    pipe += [dict(type='TopdownAffine', input_size=(INPUT, INPUT)),
             dict(type='GenerateCAPETarget', heatmap_size=(HM, HM), sigma=2,
                  with_heatmap=heatmaps),
             dict(type='PackCAPEInstance')]
    return pipe


def mini_dataset(subset, **kw):
    root = require(MP100_MINI)
    args = dict(ann_file='annotations/mp100_mini.json', data_root=str(root),
                data_prefix=dict(img='images'), split_file='splits.json', subset=subset,
                max_kpt_num=106, num_shots=1, num_queries=1, num_episodes=1, pipeline=[],
                test_mode=subset == 'test')
    args.update(kw)
    return MP100Dataset(**args)


# ------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def raw_files():
    """The 10 real annotation files as parsed json, keyed (split, subset)."""
    require(MP100_ANN_DIR)
    out = {}
    for n, s in FILES:
        with open(mp100_ann_file(n, s), encoding='utf-8') as f:
            out[(n, s)] = json.load(f)
    return out


@pytest.fixture(scope='module')
def real_datasets():
    """Lazily loaded test-mode datasets of the real files (no images, no pipeline)."""
    cache = {}

    def get(n, s):
        if (n, s) not in cache:
            cache[(n, s)] = MP100Dataset(str(mp100_ann_file(n, s)), test_mode=True,
                                         check_images=False, pipeline=[], num_episodes=1,
                                         num_queries=15)
        return cache[(n, s)]

    return get


@pytest.fixture(scope='module')
def mini_test_packed():
    """The 12 mp100_mini test episodes (1 shot, 1 query) through the full test pipeline."""
    ds = mini_dataset('test', pipeline=mini_pipeline(),
                      episode_pipeline=[dict(type='KeypointPadding', num=106)])
    return ds, [ds[i] for i in range(len(ds))]


# --------------------------------------------------------------------- real MP-100 files
@pytest.mark.parametrize('split,subset', FILES)
def test_real_file_counts(split, subset, raw_files, real_datasets):
    raw = raw_files[(split, subset)]
    ds = real_datasets(split, subset)
    n_ann, n_kept, skipped = EXPECTED_COUNTS[(split, subset)]
    n_cat = 20 if subset == 'test' else 10

    # categories: the official list of this split and role, in the official order
    assert list(ds.categories) == MP100_SPLITS[split][subset]
    assert len(ds.categories) == n_cat
    file_counts = Counter(a['category_id'] for a in raw['annotations'])
    assert len(raw['annotations']) == n_ann
    if subset == 'test':
        assert file_counts == {c: 100 for c in MP100_SPLITS[split]['test']}

    # kept + skipped = the file; every skip is explained in the report
    assert len(ds.instances) == n_kept
    assert sorted(ds.report.skipped.get(ZERO_BOX, [])) == skipped
    assert ds.report.num_skipped == n_ann - n_kept
    assert ds.report.skipped_categories == {}
    kept = Counter(i['category_id'] for i in ds.instances)
    anns = {a['id']: a for a in raw['annotations']}
    imgs = {i['id']: i for i in raw['images']}
    for ann_id in skipped:
        a = anns[ann_id]
        im = imgs[a['image_id']]
        assert a['category_id'] == 18 and a['bbox'][2] < 0 and a['bbox'][3] < 0
        assert official_bbox(a['bbox'], im['width'], im['height']) is None
    expected_kept = Counter({c: v for c, v in file_counts.items()})
    expected_kept.subtract(Counter(anns[i]['category_id'] for i in skipped))
    assert kept == +expected_kept

    # every skeleton of the shared files is 0-indexed and the report says so
    assert ds.report.skeleton_base == {'0': MP100_SPLITS[split][subset]}
    # one evaluation episode per category, each with 1 support + 15 queries
    assert [e.category_id for e in ds.episodes] == MP100_SPLITS[split][subset]
    assert all(len(e.support_indices) == 1 and len(e.query_indices) == 15 for e in ds.episodes)


def test_test_files_cover_all_categories(raw_files):
    ids = [c['id'] for n in range(1, 6) for c in raw_files[(n, 'test')]['categories']]
    assert sorted(ids) == list(range(1, 101))
    assert sum(len(raw_files[f]['annotations']) for f in FILES) == 20000


def test_empty_keypoint_name_categories(raw_files, real_datasets):
    empty = {}
    for f in FILES:
        for c in raw_files[f]['categories']:
            if not c['keypoints']:
                empty.setdefault(c['id'], []).append(f)
    assert empty == {18: [(4, 'val'), (5, 'test')], 40: [(4, 'test')]}
    for (n, s), cid, k in (((4, 'test'), 40, 68), ((5, 'test'), 18, 19), ((4, 'val'), 18, 19)):
        ds = real_datasets(n, s)
        cat = ds.categories[cid]
        assert (cat.num_kpts, cat.keypoint_names) == (k, [])
        insts = [i for i in ds.instances if i['category_id'] == cid]
        assert insts and all(i['num_kpts'] == k for i in insts)
        # real slots carry visibility; the padded slots K_c..69 are empty
        vis = np.concatenate([i['keypoints_visible'] for i in insts])
        assert vis[:, :k].sum() > 0 and vis[:, k:].sum() == 0
        # the annotation-derived count agrees with the skeleton indices
        assert max(max(p) for p in cat.skeleton) < k


# -------------------------------------------------------------------- skeleton index base
def _copy_with(raw, tmp_path, name, edit):
    data = copy.deepcopy(raw)
    cats = {c['id']: c for c in data['categories']}
    edit(cats)
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding='utf-8')
    return path


def test_skeleton_index_base_auto(raw_files, tmp_path):
    raw = raw_files[(1, 'test')]
    orig = {c['id']: c['skeleton'] for c in raw['categories']}
    # Woodpecker (14, K=15) and swivelchair (39, K=13) use indices 0..K-1
    assert {i for p in orig[14] for i in p} >= {0, 14}

    def edit(cats):
        cats[14]['skeleton'] = [[a + 1, b + 1] for a, b in cats[14]['skeleton']]
        cats[39]['skeleton'] = []

    path = _copy_with(raw, tmp_path, 'split1_test_mixed_base.json', edit)
    ds = MP100Dataset(str(path), test_mode=True, check_images=False, pipeline=[],
                      num_episodes=1, skeleton_index_base='auto')
    assert ds.categories[14].skeleton == orig[14]
    assert ds.categories[14].skeleton_index_base == 1
    assert ds.categories[39].skeleton == [] and ds.categories[39].skeleton_index_base is None
    others = [c for c in MP100_SPLITS[1]['test'] if c not in (14, 39)]
    assert ds.report.skeleton_base == {'0': others, '1': [14], 'empty': [39]}
    for c in others:
        assert ds.categories[c].skeleton == orig[c]
    assert '1-indexed skeleton categories: [14]' in ds.report.summary()

    # explicit base 0 on the 1-indexed copy: index K=15 is out of range for category 14
    with pytest.raises(AnnotationError, match=rf'{re.escape(str(path))}: category 14: .*'
                       r'out of range for 15 keypoints'):
        MP100Dataset(str(path), test_mode=True, check_images=False, pipeline=[],
                     num_episodes=1, skeleton_index_base=0)

    # ambiguous: bed (84, K=10) with indices in 1..3 (neither 0 nor K)
    amb = _copy_with(raw, tmp_path, 'ambiguous.json',
                     lambda cats: cats[84].update(skeleton=[[1, 2], [2, 3]]))
    with pytest.raises(AnnotationError, match=rf'{re.escape(str(amb))}: category 84: cannot '
                       r'decide the skeleton index base \(min index 1, max 3, 10 keypoints\)'):
        MP100Dataset(str(amb), test_mode=True, check_images=False, pipeline=[], num_episodes=1)


# ------------------------------------------------------------------------ unified protocol
def test_unified_file_split_order(raw_files, tmp_path):
    merged = {'images': {}, 'annotations': {}, 'categories': {}}
    for n, s in reversed(FILES):  # split 5 first: file order differs from the official order
        for key, table in merged.items():
            for entry in raw_files[(n, s)][key]:
                if entry['id'] in table:
                    assert table[entry['id']] == entry  # same id, same content in every file
                table.setdefault(entry['id'], entry)
    data = {k: list(v.values()) for k, v in merged.items()}
    assert (len(data['categories']), len(data['images']), len(data['annotations'])) == \
        (100, 13412, 14175)
    file_order = [c['id'] for c in data['categories']]
    path = tmp_path / 'unified.json'
    path.write_text(json.dumps(data), encoding='utf-8')

    per_cat = Counter(a['category_id'] for a in data['annotations'])
    for subset, total in (('test', 3180), ('val', 2000)):
        official = MP100_SPLITS[1][subset]
        assert [c for c in file_order if c in official] != official
        ds = MP100Dataset(str(path), split=1, subset=subset, test_mode=True, check_images=False,
                          pipeline=[], num_episodes=1)
        assert list(ds.categories) == official
        assert list(ds.cat_to_indices) == official
        assert [e.category_id for e in ds.episodes] == official
        assert ds.report.num_skipped == 0
        # a category holds all its annotations of every merged file (val files hold more)
        assert Counter(i['category_id'] for i in ds.instances) == {c: per_cat[c] for c in official}
        assert len(ds.instances) == total
    # split 1 test categories that also appear in another split's val file hold >100 instances
    assert per_cat[10] == 100 and per_cat[2] == 212


# --------------------------------------------------------------------------- mp100_mini
def test_mini_counts():
    raw = json.loads((require(MP100_MINI) / 'annotations' / 'mp100_mini.json').read_text())
    assert Counter(a['category_id'] for a in raw['annotations']) == \
        {c: v[2] for c, v in MINI_TABLE.items()}
    for subset, ids in (('train', MINI_TRAIN), ('test', MINI_TEST)):
        ds = mini_dataset(subset)
        assert list(ds.categories) == ids
        assert {c: r.num_kpts for c, r in ds.categories.items()} == \
            {c: MINI_TABLE[c][0] for c in ids}
        assert {c: len(r.skeleton) for c, r in ds.categories.items()} == \
            {c: MINI_TABLE[c][1] for c in ids}
        assert {c: len(v) for c, v in ds.cat_to_indices.items()} == \
            {c: MINI_TABLE[c][2] for c in ids}
        assert ds.report.skipped == {} and ds.report.skeleton_base == {'0': ids}
    assert len(mini_dataset('train').instances) == 117
    assert len(mini_dataset('test').instances) == 37
    # with 70 padded slots the WFLW (98) and LaPa (106) faces are skipped and reported
    small = mini_dataset('train', max_kpt_num=70, skip_oversized_categories=True)
    assert list(small.categories) == [c for c in MINI_TRAIN if c not in (21, 22)]
    assert small.report.skipped_categories == {'more than max_kpt_num=70 keypoints': [21, 22]}
    assert len(small.instances) == 117 - 4 - 2
    with pytest.raises(AnnotationError, match=r'category 21 \(face_wflw\) has 98 keypoints'):
        mini_dataset('train', max_kpt_num=70)


def test_mini_pipeline_and_collate(mini_test_packed):
    ds, episodes = mini_test_packed
    assert len(episodes) == 12
    batch = episode_collate(episodes)['inputs']
    B, K = 12, 106
    expect = {
        'support_imgs': ((B, 1, 3, INPUT, INPUT), torch.uint8),
        'query_imgs': ((B, 1, 3, INPUT, INPUT), torch.uint8),
    }
    for role in ('support', 'query'):
        expect[f'{role}_keypoints'] = ((B, 1, K, 2), torch.float32)
        expect[f'{role}_keypoints_visible'] = ((B, 1, K), torch.float32)
        expect[f'{role}_keypoint_weights'] = ((B, 1, K), torch.float32)
        expect[f'{role}_heatmaps'] = ((B, 1, K, HM, HM), torch.float32)
    expect['num_kpts'] = ((B, ), torch.long)
    expect['category_id'] = ((B, ), torch.long)
    for key, (shape, dtype) in expect.items():
        t = getattr(batch, key)
        assert (tuple(t.shape), t.dtype) == (shape, dtype), key
    assert batch.category_id.tolist() == MINI_TEST
    assert batch.num_kpts.tolist() == [MINI_TABLE[c][0] for c in MINI_TEST]
    assert isinstance(batch.skeleton, list) and len(batch.skeleton) == B
    for c, sk in zip(MINI_TEST, batch.skeleton):
        assert sk.dtype == torch.long and tuple(sk.shape) == (MINI_TABLE[c][1], 2)
        assert sk.tolist() == ds.categories[c].skeleton
    for role in ('support', 'query'):
        metas = getattr(batch, f'{role}_metas')
        assert len(metas) == B and all(len(m) == 1 for m in metas)
        assert [m[0]['category_id'] for m in metas] == MINI_TEST
        assert all(m[0]['input_size'] == (INPUT, INPUT) for m in metas)
        assert getattr(batch, f'{role}_imgs').float().std() > 10  # real pixels, not empty

        kpts = getattr(batch, f'{role}_keypoints')
        vis = getattr(batch, f'{role}_keypoints_visible')
        w = getattr(batch, f'{role}_keypoint_weights')
        n_kpts = batch.num_kpts
        slot = torch.arange(K)[None, None, :]
        real = slot < n_kpts[:, None, None]
        assert torch.all(vis[~real] == 0) and torch.all(w[~real] == 0)
        assert torch.all(w <= vis)
        on = vis > 0
        assert on.sum() > 200
        # every labelled keypoint is inside its box, so inside the 1.25-padded crop
        assert torch.all((kpts[on] >= 0) & (kpts[on] <= 1))
        # ... and on the heatmap grid, so its weight is kept
        assert torch.equal(w, vis)

        # heatmap peak at the keypoint: argmax within 1 heatmap pixel of keypoint * 64 / 256
        hms = getattr(batch, f'{role}_heatmaps')
        assert torch.all(hms[~real] == 0)
        b_idx, s_idx, k_idx = torch.nonzero(w > 0, as_tuple=True)
        maps = hms[b_idx, s_idx, k_idx].flatten(1)
        peak = maps.argmax(1)
        peak_xy = torch.stack([peak % HM, peak // HM], 1).float()
        target = kpts[b_idx, s_idx, k_idx] * HM
        assert torch.all((peak_xy - target).abs() <= 1.0)
        assert torch.allclose(maps.max(1).values, torch.ones(len(peak)))


def test_bbox_sanitisation_rule_real(raw_files, real_datasets):
    raw = raw_files[(1, 'test')]
    ds = real_datasets(1, 'test')
    anns = {a['id']: a for a in raw['annotations']}
    imgs = {i['id']: i for i in raw['images']}
    clipped = 0
    for inst in ds.instances:
        a = anns[inst['ann_id']]
        im = imgs[a['image_id']]
        x1, y1, w, h = official_bbox(a['bbox'], im['width'], im['height'])
        np.testing.assert_allclose(inst['bbox'][0], [x1, y1, x1 + w, y1 + h], atol=1e-3)
        assert inst['bbox_size'] == pytest.approx(max(w, h), abs=1e-3)
        bx, by, bw, bh = a['bbox']
        clipped += not np.allclose([x1, y1, w, h], [bx, by, bw - 1, bh - 1], atol=1e-3)
    assert len(ds.instances) == 2000 and clipped == 4  # 4 boxes cross the image border


def test_center_scale_after_pipeline(mini_test_packed):
    ds, episodes = mini_test_packed
    raw = json.loads((MP100_MINI / 'annotations' / 'mp100_mini.json').read_text())
    anns = {a['id']: a for a in raw['annotations']}
    imgs = {i['id']: i for i in raw['images']}
    checked = 0
    for ep in episodes:
        for inst in ep['supports'] + ep['queries']:
            meta = inst['meta']
            a = anns[meta['ann_id']]
            im = imgs[a['image_id']]
            x1, y1, w, h = official_bbox(a['bbox'], im['width'], im['height'])
            np.testing.assert_allclose(meta['center'], [x1 + w / 2, y1 + h / 2], rtol=1e-5)
            np.testing.assert_allclose(meta['scale'], [1.25 * max(w, h)] * 2, rtol=1e-5)
            assert meta['bbox_size'] == pytest.approx(max(w, h), rel=1e-5)
            assert meta['rotation'] == 0.0
            checked += 1
    assert checked == 24


def _roundtrip_error(packed):
    meta = packed['meta']
    vis = packed['keypoints_visible'].numpy() > 0
    back = crop_to_image(packed['keypoints'].numpy()[None], meta['warp_mat'][None],
                         meta['input_size'])[0]
    err = np.abs(back - meta['gt_keypoints'])[vis]
    # the other direction: image -> normalised crop agrees with the packed keypoints
    fwd = image_to_crop(meta['gt_keypoints'][None], meta['warp_mat'][None],
                        meta['input_size'])[0]
    fwd_err = np.abs(fwd - packed['keypoints'].numpy())[vis] * INPUT
    return vis.sum(), err.max(), fwd_err.max()


def test_geometry_crop_roundtrip():
    plain = mini_dataset('test', pipeline=mini_pipeline(heatmaps=False))
    rot = mini_dataset('test', pipeline=mini_pipeline(rotation=True, heatmaps=False))
    rotations = []
    for i in range(0, len(plain.instances), 6):
        n_vis, err, fwd_err = _roundtrip_error(plain.load_instance(i))
        assert n_vis > 0 and err < 0.5 and fwd_err < 0.5
        packed = rot.load_instance(i, rng=np.random.default_rng(i))
        n_vis, err, fwd_err = _roundtrip_error(packed)
        assert n_vis > 0 and err < 0.5 and fwd_err < 0.5
        rotations.append(packed['meta']['rotation'])
    assert len(rotations) == 7 and min(abs(r) for r in rotations) > 0.1  # rot_prob=1
    # the same rng seed gives the same augmentation
    a = rot.load_instance(0, rng=np.random.default_rng(0))
    b = rot.load_instance(0, rng=np.random.default_rng(0))
    assert a['meta']['rotation'] == b['meta']['rotation'] and torch.equal(a['img'], b['img'])

    # image_to_crop inverts crop_to_image for arbitrary rotated crops
    rng = np.random.default_rng(0)
    from metapoint.utils.geometry import crop_warp_matrix
    mats = np.stack([crop_warp_matrix(rng.uniform(50, 500, 2), rng.uniform(50, 400, 2),
                                      rng.uniform(-45, 45), (256, 192)) for _ in range(5)])
    pts = rng.uniform(0, 1, (5, 7, 2))
    img_pts = crop_to_image(pts, mats, (256, 192))
    np.testing.assert_allclose(image_to_crop(img_pts, mats, (256, 192)), pts, atol=1e-9)


# ------------------------------------------------------------------------------ episodes
def test_eval_episodes_official_and_deterministic(real_datasets):
    ds = real_datasets(1, 'test')
    c2i = ds.cat_to_indices
    random.seed(12345)
    random.random()
    before = random.getstate()
    first = make_eval_episodes(c2i, 1, 15, 20, seed=1)
    second = make_eval_episodes(c2i, 1, 15, 20, seed=1)
    assert random.getstate() == before  # the global RNG is never touched
    assert first == second and len(first) == 20 * 20

    # the official make_paired_samples: global random.seed(1), then random.sample per episode
    try:
        random.seed(1)
        official = [(cid, random.sample(list(idxs), 16)) for cid, idxs in c2i.items()
                    for _ in range(20)]
    finally:
        random.setstate(before)
    assert [(e.category_id, list(e.support_indices + e.query_indices)) for e in first] == official
    assert [e.seed for e in first] == list(range(400))
    for e in first:
        members = e.support_indices + e.query_indices
        assert len(set(members)) == 16
        assert all(ds.instances[i]['category_id'] == e.category_id for i in members)
    # the dataset's own list (num_episodes=1) comes from the same function and seed
    assert ds.episodes == make_eval_episodes(c2i, 1, 15, 1, seed=1)
    assert make_eval_episodes(c2i, 1, 15, 20, seed=2) != first


def test_eval_episodes_two_rank_union(monkeypatch):
    from mmengine.dataset import DefaultSampler
    path = str(mp100_ann_file(1, 'test'))

    def build():
        return MP100Dataset(path, valid_class_ids=[10, 77, 24], test_mode=True,
                            check_images=False, pipeline=[], num_episodes=5)

    ds = build()
    assert len(ds) == 15
    shards, lists = [], []
    for rank in (0, 1):
        monkeypatch.setattr('mmengine.dataset.sampler.get_dist_info', lambda r=rank: (r, 2))
        rank_ds = build()  # every rank builds its own dataset: same episodes
        lists.append(rank_ds.episodes)
        shards.append(list(DefaultSampler(rank_ds, shuffle=False)))
    assert lists[0] == lists[1] == ds.episodes
    assert shards[0] == [0, 2, 4, 6, 8, 10, 12, 14] and shards[1] == [1, 3, 5, 7, 9, 11, 13, 0]
    # mmengine collect_results: zip over ranks, then truncate to the dataset size
    union = [i for pair in zip(*shards) for i in pair][:len(ds)]
    assert union == list(range(len(ds)))
    assert [lists[0][i] for i in union] == ds.episodes


@pytest.fixture(scope='module')
def mini_train():
    return mini_dataset('train', check_images=False)


def test_train_episodes_balanced_and_deterministic(mini_train):
    c2i = mini_train.cat_to_indices
    e0 = draw_train_episodes(c2i, 1, seed=3, epoch=0)
    assert e0 == draw_train_episodes(c2i, 1, seed=3, epoch=0)
    assert e0 != draw_train_episodes(c2i, 1, seed=3, epoch=1)
    assert e0 != draw_train_episodes(c2i, 1, seed=4, epoch=0)
    # class-balanced: every category as many episodes as the largest one has instances (14)
    assert Counter(e.category_id for e in e0) == {c: 14 for c in MINI_TRAIN}
    assert len(e0) == 25 * 14
    assert [e.category_id for e in e0[:25]] != MINI_TRAIN[:25]  # shuffled over categories
    for e in e0:
        members = e.support_indices + e.query_indices
        assert len(members) == 2 and len(set(members)) == 2
        assert all(mini_train.instances[i]['category_id'] == e.category_id for i in members)
    # a 2-instance category uses both instances, in both roles over the epoch
    small = [e for e in e0 if e.category_id == 15]
    assert {i for e in small for i in e.support_indices} == set(c2i[15])
    # episodes_per_category shortens the epoch, still balanced
    short = draw_train_episodes(c2i, 1, seed=3, epoch=0, episodes_per_category=3)
    assert Counter(e.category_id for e in short) == {c: 3 for c in MINI_TRAIN}
    # the dataset's integer indexing uses the epoch-0 draw of its episode seed
    assert mini_train.episodes == draw_train_episodes(c2i, 1, seed=1, epoch=0)


def test_episode_sampler_sharding(mini_train, monkeypatch):
    def sampler(rank, world, seed=7):
        monkeypatch.setattr('metapoint.datasets.samplers.get_dist_info', lambda: (rank, world))
        return EpisodeSampler(mini_train, seed=seed, episodes_per_category=3)

    single = sampler(0, 1)
    full = list(single)
    assert len(full) == len(single) == 75
    assert all(isinstance(e, Episode) for e in full)
    assert full == single.episodes(0)
    ranks = [sampler(0, 2), sampler(1, 2)]
    shards = [list(s) for s in ranks]
    assert [len(s) for s in ranks] == [38, 38] and [len(s) for s in shards] == [38, 38]
    interleaved = [e for pair in zip(*shards) for e in pair]
    assert interleaved[:75] == full
    assert interleaved[75] == full[0]  # the list is padded by wrapping
    # disjoint shards apart from the wrap-padding, covering the single-rank list
    assert set(shards[0]).isdisjoint(shards[1][:-1])
    assert set(shards[0]) | set(shards[1]) == set(full)

    # set_epoch re-draws; every rank draws the same epoch list
    for s in ranks + [single]:
        s.set_epoch(1)
    full1 = list(single)
    assert full1 != full and Counter(e.category_id for e in full1) == {c: 3 for c in MINI_TRAIN}
    assert [e for pair in zip(*[list(s) for s in ranks]) for e in pair][:75] == full1

    # resumability: a fresh sampler with the same seed and epoch yields the same episodes
    again = sampler(1, 2)
    again.set_epoch(1)
    assert list(again) == list(ranks[1])
    assert list(sampler(0, 1, seed=8)) != full


def test_eval_insufficient_instances_reduce_and_error(mm_logs):
    ds = mini_dataset('test', num_queries=15, num_episodes=2, insufficient_instances='reduce')
    expected_q = {c: min(15, MINI_TABLE[c][2] - 1) for c in MINI_TEST}
    assert [(e.category_id, len(e.query_indices)) for e in ds.episodes] == \
        [(c, expected_q[c]) for c in MINI_TEST for _ in range(2)]
    msgs = [r.getMessage() for r in mm_logs if r.levelname == 'WARNING']
    assert 'category 26: 10 instances < 1+15; using 9 queries per episode' in msgs
    assert sum('queries per episode' in m for m in msgs) == 12
    with pytest.raises(EpisodeError, match=r'mp100_mini\.json: category 19 has 2 instance\(s\); '
                       r'an evaluation episode needs num_shots\+num_queries=16'):
        mini_dataset('test', num_queries=15, insufficient_instances='error')
    # even 'reduce' cannot form an episode without a query
    with pytest.raises(EpisodeError, match=r'category 19 has 2 instance\(s\)'):
        mini_dataset('test', num_shots=2, insufficient_instances='reduce')
