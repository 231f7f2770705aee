"""FMMP keypoint padding (eqdiv / mixup / zero) and the BFS neighbour table (docs/methods.md)."""

import numpy as np
import pytest
import torch

from tests.helpers import MP100_MINI, load_official_functions, require

from metapoint.datasets.collate import episode_collate
from metapoint.datasets.keypoint_padding_ops import (eqdiv_padding, mixup_padding,
                                                     structural_neighbours, zero_padding)
from metapoint.datasets.transforms.keypoint_padding import KeypointPadding, StructuralNeighbours

CASES = ('small_all_nonzero', 'small_some_zero', 'small_kp_len_equals_Kc')


@pytest.fixture(scope='module')
def functions():
    return load_official_functions()


def _run(kind, inp):
    kp, vis = inp['keypoint'].numpy(), inp['visible'].numpy()
    args = (kp, vis, inp['se_pairs'], inp['category_keypoint_num'], inp['K_max'])
    if kind == 'zero':
        return zero_padding(*args)
    if kind == 'eqdiv':
        return eqdiv_padding(*args, keep=inp['nonzero_padding'].numpy())
    return mixup_padding(*args, lam=inp['mixup_lam'].numpy(), keep=inp['nonzero_padding'].numpy(),
                         edge_ids=inp['selected_se_pair_idx'].numpy())


@pytest.mark.parametrize('case', CASES)
@pytest.mark.parametrize('kind', ('zero', 'eqdiv', 'mixup'))
def test_official_padding_and_bfs(functions, case, kind):
    entry = functions['fmmp_padding'][case]
    ref = entry[kind]
    kp, vis, links = _run(kind, entry['inputs'])
    np.testing.assert_allclose(kp, ref['keypoint'].numpy(), atol=1e-6, rtol=0)
    np.testing.assert_array_equal(vis, ref['visible'].numpy())
    assert links == [list(map(int, p)) for p in ref['se_pairs']]
    idx, depth = structural_neighbours(links, vis, num=16)
    assert idx.dtype == np.int64 and depth.dtype == np.int64
    np.testing.assert_array_equal(idx, ref['headwise_refpoint_idx_and_order'][0].numpy())
    np.testing.assert_array_equal(depth, ref['headwise_refpoint_idx_and_order'][1].numpy())


def test_official_bfs_big_chain(functions):
    entry = functions['side_ref_idx_big_chain']
    idx, depth = structural_neighbours(entry['se_pairs'], entry['visible'].numpy(), num=16)
    np.testing.assert_array_equal(idx, entry['output'][0].numpy())
    np.testing.assert_array_equal(depth, entry['output'][1].numpy())
    # Q-F8 (kept): invisible node 18 is never expanded but appears as a neighbour of 19
    assert (idx[18] == 18).all() and 18 in idx[19]


def test_ops_empty_skeleton_falls_back_to_zero():
    kp = np.random.default_rng(0).random((5, 2)).astype(np.float32)
    vis = np.ones(5, np.float32)
    for out in (eqdiv_padding(kp, vis, [], 5, 8, keep=np.ones(8, bool)),
                mixup_padding(kp, vis, [], 5, 8, np.full(8, .5), np.ones(8, bool),
                              np.zeros(8, int))):
        assert out[0].shape == (8, 2) and (out[0][5:] == 0).all() and (out[1][5:] == 0).all()
        assert out[2] == []


# ------------------------------------------------------------------ episode-level transform
K, KC = 12, 4
SKEL = [[0, 1], [1, 2], [2, 3]]


def _inst(seed, invisible=()):
    g = np.random.default_rng(seed)
    kp = np.zeros((K, 2), np.float32)
    kp[:KC] = g.random((KC, 2))
    vis = np.zeros(K, np.float32)
    vis[:KC] = 1
    vis[list(invisible)] = 0
    return dict(keypoints=torch.from_numpy(kp), keypoints_visible=torch.from_numpy(vis),
                keypoint_weights=torch.from_numpy(vis.copy()), meta=dict(ann_id=seed))


def _episode(rng=None, invisible_query=(), skeleton=SKEL, shots=2):
    ep = dict(supports=[_inst(i) for i in range(shots)], queries=[_inst(9, invisible_query)],
              category_id=3, num_kpts=KC, skeleton=[list(p) for p in skeleton])
    if rng is not None:
        ep['rng'] = rng
    return ep


def _weights_on_link(inst, a, b, slot):
    """Interpolation weight t with p = t * y_a + (1 - t) * y_b, or None if p is off the line."""
    ya, yb, p = (inst['keypoints'][i].double().numpy() for i in (a, b, slot))
    d = ya - yb
    t = float(np.dot(p - yb, d) / np.dot(d, d))
    return t if np.allclose(t * ya + (1 - t) * yb, p, atol=1e-5) else None


def test_mixup_one_draw_for_all_images():
    ep = KeypointPadding('mixup', num=K)(_episode(np.random.default_rng(5), invisible_query=(3,)))
    insts = ep['supports'] + ep['queries']
    # every padded slot is the SAME interpolation of the same link in every image
    for slot in range(KC, K):
        found = None
        for a, b in SKEL:
            ts = [_weights_on_link(inst, a, b, slot) for inst in insts]
            if all(t is not None for t in ts):
                found = ts
                break
        assert found is not None, slot
        assert np.allclose(found, found[0], atol=1e-5) and 0 <= found[0] <= 1
    # visibility uses each image's own endpoints: query keypoint 3 is invisible
    q = ep['queries'][0]
    s = ep['supports'][0]
    assert s['keypoint_weights'][KC:].sum() == K - KC  # prob 1, all endpoints visible
    assert q['keypoint_weights'][KC:].sum() < K - KC
    assert torch.equal(q['keypoint_weights'][KC:], q['keypoints_visible'][KC:])
    # per-image links; episode skeleton = last support's
    assert q['skeleton'] != s['skeleton'] and q['skeleton'][:3] == SKEL
    assert ep['skeleton'] == ep['supports'][-1]['skeleton']
    assert all(min(p) >= 0 and max(p) < K for p in q['skeleton'])


def test_draw_reproducible_from_episode_rng():
    a = KeypointPadding('mixup', num=K)(_episode(np.random.default_rng(11)))
    b = KeypointPadding('mixup', num=K)(_episode(np.random.default_rng(11)))
    c = KeypointPadding('mixup', num=K)(_episode(np.random.default_rng(12)))
    assert torch.equal(a['queries'][0]['keypoints'], b['queries'][0]['keypoints'])
    assert not torch.equal(a['queries'][0]['keypoints'], c['queries'][0]['keypoints'])
    # no rng (test mode): deterministic per episode
    d = KeypointPadding('mixup', num=K)(_episode())
    e = KeypointPadding('mixup', num=K)(_episode())
    assert torch.equal(d['queries'][0]['keypoints'], e['queries'][0]['keypoints'])


def test_eqdiv_transform_matches_ops():
    ep = KeypointPadding('eqdiv', num=K)(_episode())
    s = _inst(0)
    kp, vis, links = eqdiv_padding(s['keypoints'].numpy(), s['keypoint_weights'].numpy(), SKEL,
                                   KC, K, keep=np.ones(K, bool))
    np.testing.assert_allclose(ep['supports'][0]['keypoints'].numpy(), kp, atol=1e-7)
    np.testing.assert_array_equal(ep['supports'][0]['keypoint_weights'].numpy(), vis)
    assert ep['supports'][0]['skeleton'] == links


def test_zero_fallback_for_empty_skeleton_and_full_category():
    for ep, kc in ((_episode(np.random.default_rng(0), skeleton=[]), KC),
                   (_episode(np.random.default_rng(0)), K)):
        ep['num_kpts'] = kc
        before = [inst['keypoints'].clone() for inst in ep['supports'] + ep['queries']]
        out = KeypointPadding('mixup', num=K)(ep)
        for inst, kp in zip(out['supports'] + out['queries'], before):
            assert torch.equal(inst['keypoints'], kp)
            assert inst['keypoint_weights'][KC:].sum() == 0 or kc == K
        out = StructuralNeighbours()(out)
        assert out['queries'][0]['neighbour_idx'].shape == (K, 16)


def test_prob_below_one_drops_some_padded_points():
    ep = KeypointPadding('mixup', num=K, prob=0.5)(_episode(np.random.default_rng(3)))
    w = ep['supports'][0]['keypoint_weights'][KC:]
    assert 0 < w.sum() < K - KC
    for inst in ep['supports'] + ep['queries']:  # same keep mask everywhere
        assert torch.equal(inst['keypoint_weights'][KC:], w)


def test_invalid_arguments():
    with pytest.raises(ValueError, match='unknown keypoint padding'):
        KeypointPadding('bogus')
    with pytest.raises(ValueError, match='prob'):
        KeypointPadding('mixup', prob=1.5)


def test_structural_neighbours_and_collate():
    eps = []
    for seed in (1, 2):
        ep = KeypointPadding('mixup', num=K)(_episode(np.random.default_rng(seed)))
        ep = StructuralNeighbours(num=16)(ep)
        for inst in ep['supports'] + ep['queries']:
            idx = inst['neighbour_idx']
            assert idx.dtype == torch.long and idx.shape == (K, 16)
            ref, _ = structural_neighbours(inst['skeleton'], inst['keypoint_weights'].numpy())
            assert torch.equal(idx, torch.from_numpy(ref))
            assert torch.equal(idx[:, 0], torch.arange(K))
        for inst in ep['supports'] + ep['queries']:
            inst['img'] = torch.zeros(3, 4, 4, dtype=torch.uint8)
        eps.append(ep)
    batch = episode_collate(eps)['inputs']
    assert batch.support_neighbour_idx.shape == (2, 2, K, 16)
    assert batch.query_neighbour_idx.shape == (2, 1, K, 16)
    assert batch.support_neighbour_idx.dtype == torch.long


# ------------------------------------------------------------------ real mini dataset
def test_mini_dataset_eqdiv_episode():
    from metapoint.datasets import MP100Dataset
    root = require(MP100_MINI)
    pipe = [dict(type='LoadImage'), dict(type='GetBBoxCenterScale', padding=1.25),
            dict(type='TopdownAffine', input_size=(256, 256)),
            dict(type='GenerateCAPETarget', heatmap_size=(64, 64), sigma=2),
            dict(type='PackCAPEInstance')]
    ds = MP100Dataset(ann_file='annotations/mp100_mini.json', data_root=str(root),
                      data_prefix=dict(img='images'), split_file='splits.json', subset='test',
                      max_kpt_num=70, skip_oversized_categories=True,
                      insufficient_instances='reduce', num_shots=1, num_queries=1,
                      num_episodes=1, test_mode=True, pipeline=pipe,
                      episode_pipeline=[dict(type='KeypointPadding', padding='eqdiv', num=70),
                                        dict(type='StructuralNeighbours')])
    ep = ds[0]
    kc = ep['num_kpts']
    n_links_checked = 0
    for inst in ep['supports'] + ep['queries']:
        assert inst['keypoints'].shape == (70, 2) and inst['neighbour_idx'].shape == (70, 16)
        w = inst['keypoint_weights']
        links = inst['skeleton']
        base = [list(p) for p in ds.categories[ep['category_id']].skeleton]
        assert links[:len(base)] == base
        # eqdiv layout: link j owns slots kc + j*n .. kc + (j+1)*n - 1; on a visible link those
        # padded points are visible, lie on the segment a-b and are chained a -> ... -> b
        n = (70 - kc) // len(base)
        for j, (a, b) in enumerate(base):
            if not (w[a] > 0 and w[b] > 0) or n == 0:
                continue
            ya, yb = inst['keypoints'][a].double(), inst['keypoints'][b].double()
            slots = list(range(kc + j * n, kc + (j + 1) * n))
            assert (w[slots] == 1).all()
            for k, slot in enumerate(slots):
                t = (k + 1) / (n + 1)
                assert torch.allclose(t * ya + (1 - t) * yb, inst['keypoints'][slot].double(),
                                      atol=1e-5)
            assert [a, slots[0]] in links and [slots[-1], b] in links
            n_links_checked += 1
    assert n_links_checked > 0
    batch = episode_collate([ep])['inputs']
    assert batch.support_neighbour_idx.shape == (1, 1, 70, 16)
