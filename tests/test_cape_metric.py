"""Tests of the MP-100 CAPE metric (metapoint.evaluation)."""
import json
import logging
from fractions import Fraction as F

import numpy as np
import pytest
import torch

from metapoint.evaluation import (CAPEMetric, auc_per_pair, epe_per_pair, format_pck_table,
                                  nme_per_pair, normalised_distances, pair_masks, pck_per_pair,
                                  summarize_cape)
from metapoint.registry import METRICS

THRS = (0.05, 0.1, 0.15, 0.2, 0.25)


def _episode(cat, ann_ids, offsets, query_vis, support_vis, bbox, num_kpts, seed=0):
    """Build an episode dict: gt random, pred = gt + the given pixel offsets."""
    offsets = np.asarray(offsets, dtype=np.float64)
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 500, size=offsets.shape).round()  # integers: exact offsets
    return dict(
        category_id=cat,
        query_ann_ids=list(ann_ids),
        pred_kpts=gt + offsets,
        gt_kpts=gt,
        query_vis=np.asarray(query_vis),
        support_vis=np.asarray(support_vis),
        bbox_size=np.asarray(bbox, dtype=np.float64),
        num_kpts=num_kpts)


def hand_episodes():
    """4 pairs in 3 episodes, 2 categories; distances chosen so every value is known by hand."""
    # Episode A: category 1, 5 real keypoints + 1 padding slot, 2 shots, 2 queries.
    # support AND = [1, 1, 0, 1, 1, 0] (kp 2 is invisible in shot 1)
    ep_a = _episode(
        cat=1,
        ann_ids=[101, 102],
        offsets=[
            # a0, bbox 100: kp0 5px=0.05 (== thr), kp1 0.12, kp2 support-invisible (0 offset),
            # kp3 query-invisible (0 offset), kp4 0.30, slot 5 padding
            [[3, 4], [0, 12], [0, 0], [0, 0], [0, 30], [0, 0]],
            # a1, bbox 200: kp0 0, kp1 20px=0.1 (== thr), kp2 support-invisible, kp3 50px=0.25,
            # kp4 100px=0.5
            [[0, 0], [20, 0], [0, 0], [30, 40], [0, 100], [0, 0]],
        ],
        query_vis=[[1, 1, 1, 0, 1, 0], [1, 1, 1, 1, 1, 0]],
        support_vis=[[1, 1, 1, 1, 1, 0], [1, 1, 0, 1, 1, 0]],
        bbox=[100, 200],
        num_kpts=5,
        seed=1)
    # Episode B: category 2, 3 real keypoints + 3 padding slots (huge offsets, vis 0), bbox 50:
    # kp0 10px=0.2 (== thr), kp1 1px=0.02, kp2 7.5px=0.15 (== thr)
    ep_b = _episode(
        cat=2,
        ann_ids=[201],
        offsets=[[[6, 8], [0, 1], [0, 7.5], [1000, 0], [0, 1000], [999, 999]]],
        query_vis=[[1, 1, 1, 0, 0, 0]],
        support_vis=[[1, 1, 1, 0, 0, 0]],
        bbox=[50],
        num_kpts=3,
        seed=2)
    # Episode C: category 2, K=4 only (tests padding across episodes): empty mask
    ep_c = _episode(
        cat=2,
        ann_ids=[202],
        offsets=[[[0, 0], [0, 0], [0, 0], [0, 0]]],
        query_vis=[[1, 0, 1, 0]],
        support_vis=[[0, 1, 0, 0]],
        bbox=[80],
        num_kpts=4,
        seed=3)
    return [ep_a, ep_b, ep_c]


# per-pair values computed by hand (pairs a0, a1, b0, c0)
PCK_PAIRS = {
    0.05: [F(0, 3), F(1, 4), F(1, 3), F(0)],
    0.1: [F(1, 3), F(1, 4), F(1, 3), F(0)],
    0.15: [F(2, 3), F(2, 4), F(1, 3), F(0)],
    0.2: [F(2, 3), F(2, 4), F(2, 3), F(0)],
    0.25: [F(2, 3), F(2, 4), F(3, 3), F(0)],
}
NME_PAIRS = [(0.05 + 0.12 + 0.30) / 3, (0 + 0.1 + 0.25 + 0.5) / 4, (0.2 + 0.02 + 0.15) / 3, 0.0]
EPE_PAIRS = [(5 + 12 + 30) / 3, (0 + 20 + 50 + 100) / 4, (10 + 1 + 7.5) / 3, 0.0]
# AUC: number of hits at thresholds i/20, i = 0..19, summed, / (20 * |M|)
AUC_PAIRS = [F(0 + 0 + 1 + 2 * 4 + 3 * 13, 3 * 20), F(0 + 1 + 1 + 2 * 3 + 3 * 5 + 4 * 9, 4 * 20),
             F(0 + 1 + 1 + 1 + 2 + 3 * 15, 3 * 20), F(0)]


def _approx(x):
    return pytest.approx(float(x), rel=1e-12, abs=1e-12)


def _run(episodes, **kwargs):
    metric = CAPEMetric(**kwargs)
    metric.process({}, episodes)
    return metric, metric.compute_metrics(metric.results)


def test_hand_computed_zero(mm_logs):
    metric, res = _run(hand_episodes())
    assert len(metric.results) == 3  # one result per episode
    assert sorted(res) == sorted([f'PCK@{t:g}' for t in THRS] + [
        'mPCK', 'mPCK_5thr', 'NME', 'AUC', 'EPE', 'num_pairs', 'num_empty_pairs'])
    expected = {t: sum(v) / 4 for t, v in PCK_PAIRS.items()}
    assert expected[0.05] == F(7, 48) and expected[0.2] == F(11, 24)  # sanity of the table
    for t in THRS:
        assert res[f'PCK@{t:g}'] == _approx(expected[t]), t
    assert res['mPCK'] == _approx(F(58, 192))
    assert res['mPCK_5thr'] == _approx(F(35, 100))
    assert res['NME'] == _approx(sum(NME_PAIRS) / 4)
    assert res['EPE'] == _approx(sum(EPE_PAIRS) / 4)
    assert AUC_PAIRS[0] == F(4, 5) and AUC_PAIRS[1] == F(59, 80) and AUC_PAIRS[2] == F(5, 6)
    assert res['AUC'] == _approx(sum(AUC_PAIRS) / 4)
    assert res['num_pairs'] == 4 and res['num_empty_pairs'] == 1
    pc = metric.last_per_category
    assert set(pc) == {1, 2}
    assert pc[1]['PCK@0.2'] == _approx(F(7, 12)) and pc[1]['num_pairs'] == 2
    assert pc[2]['PCK@0.2'] == _approx(F(1, 3)) and pc[2]['num_pairs'] == 2
    warnings = [r.getMessage() for r in mm_logs if r.levelno == logging.WARNING]
    assert any('1 of 4 pairs have an empty evaluation mask' in m and '202' in m
               for m in warnings), warnings


def test_hand_computed_skip(mm_logs):
    metric, res = _run(hand_episodes(), empty_mask='skip')
    for t in THRS:
        assert res[f'PCK@{t:g}'] == _approx(sum(PCK_PAIRS[t][:3]) / 3), t
    assert res['PCK@0.05'] == _approx(F(7, 36))
    assert res['PCK@0.2'] == _approx(F(11, 18))
    assert res['mPCK'] == _approx(sum(sum(PCK_PAIRS[t][:3]) for t in THRS[:4]) / 12)
    assert res['mPCK_5thr'] == _approx(sum(sum(PCK_PAIRS[t][:3]) for t in THRS) / 15)
    assert res['NME'] == _approx(sum(NME_PAIRS[:3]) / 3)
    assert res['EPE'] == _approx(sum(EPE_PAIRS[:3]) / 3)
    assert res['AUC'] == _approx(sum(AUC_PAIRS[:3]) / 3)
    assert res['num_pairs'] == 3 and res['num_empty_pairs'] == 1
    pc = metric.last_per_category
    assert pc[1]['PCK@0.2'] == _approx(F(7, 12)) and pc[1]['num_pairs'] == 2
    assert pc[2]['PCK@0.2'] == _approx(F(2, 3)) and pc[2]['num_pairs'] == 1
    warnings = [r.getMessage() for r in mm_logs if r.levelno == logging.WARNING]
    assert any("empty_mask='skip'" in m and '202' in m for m in warnings), warnings


def test_no_empty_pairs_no_warning(mm_logs):
    _, res = _run(hand_episodes()[:2])
    assert res['num_empty_pairs'] == 0 and res['num_pairs'] == 3
    assert not [r for r in mm_logs if 'empty evaluation mask' in r.getMessage()]


def test_custom_thresholds_keep_mpck():
    _, res = _run(hand_episodes(), thresholds=[0.2])
    assert 'PCK@0.2' in res and 'PCK@0.05' not in res and 'PCK@0.1' not in res
    assert res['mPCK'] == _approx(F(58, 192))
    assert res['mPCK_5thr'] == _approx(F(35, 100))


def test_functional_per_pair():
    eps = hand_episodes()
    a = eps[0]
    mask = pair_masks(a['query_vis'], np.repeat(a['support_vis'][None], 2, axis=0),
                      num_kpts=5)
    np.testing.assert_array_equal(
        mask, [[1, 1, 0, 0, 1, 0], [1, 1, 0, 1, 1, 0]])
    dist = normalised_distances(a['pred_kpts'], a['gt_kpts'], a['bbox_size'])
    assert dist[0, 0] == 0.05 and dist[1, 1] == 0.1 and dist[1, 3] == 0.25
    pck = pck_per_pair(dist, mask, THRS)
    assert pck.shape == (2, 5)
    for i, t in enumerate(THRS):
        np.testing.assert_allclose(pck[:, i], [float(x) for x in PCK_PAIRS[t][:2]])
    np.testing.assert_allclose(pck_per_pair(dist, mask, 0.15), [2 / 3, 0.5])
    np.testing.assert_allclose(auc_per_pair(dist, mask), [0.8, 59 / 80])
    np.testing.assert_allclose(nme_per_pair(dist, mask), NME_PAIRS[:2])
    pix = dist * a['bbox_size'][:, None]
    np.testing.assert_allclose(epe_per_pair(pix, mask), EPE_PAIRS[:2])
    # empty mask -> 0 everywhere
    empty = np.zeros_like(mask)
    assert (pck_per_pair(dist, empty, THRS) == 0).all()
    assert (nme_per_pair(dist, empty) == 0).all() and (auc_per_pair(dist, empty) == 0).all()


def test_padding_slots_masked_even_if_visible():
    # slots >= num_kpts never count, even with visibility 1
    pred = np.array([[[0., 0.], [0., 0.], [100., 100.]]])
    gt = np.zeros((1, 3, 2))
    vis = np.ones((1, 3))
    metrics, _ = summarize_cape(pred, gt, vis, vis, [10.], num_kpts=[2])
    assert metrics['PCK@0.05'] == 1.0
    metrics, _ = summarize_cape(pred, gt, vis, vis, [10.], num_kpts=[3])
    assert metrics['PCK@0.05'] == pytest.approx(2 / 3)


def test_matches_mmpose_keypoint_pck_accuracy():
    from mmpose.evaluation.functional import keypoint_pck_accuracy
    rng = np.random.default_rng(0)
    n, k, s = 200, 17, 3
    pred = rng.uniform(0, 300, (n, k, 2))
    gt = pred + rng.normal(0, 25, (n, k, 2))
    qvis = rng.random((n, k)) < 0.8
    svis = rng.random((n, s, k)) < 0.85
    qvis[:3] = False  # a few empty masks
    bbox = rng.uniform(50, 400, n)
    mask = pair_masks(qvis, svis)
    dist = normalised_distances(pred, gt, bbox)
    thrs = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)
    ours = pck_per_pair(dist, mask, thrs)
    ref = np.zeros((n, len(thrs)))
    for j in range(n):
        for i, t in enumerate(thrs):
            _, avg_acc, _ = keypoint_pck_accuracy(pred[j:j + 1], gt[j:j + 1], mask[j:j + 1],
                                                  t, np.array([[bbox[j], bbox[j]]]))
            ref[j, i] = avg_acc
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert ours.std() > 0.1  # a non-trivial comparison

    # end to end through the metric: official protocol = mean of per-pair avg_acc
    episodes = []
    for e in range(0, n, 4):  # episodes of 4 queries sharing one support set
        episodes.append(
            dict(category_id=e % 3, query_ann_ids=list(range(e, e + 4)),
                 pred_kpts=torch.from_numpy(pred[e:e + 4]), gt_kpts=gt[e:e + 4],
                 query_vis=qvis[e:e + 4].astype(np.int64), support_vis=svis[e],
                 bbox_size=bbox[e:e + 4], num_kpts=k))
    metric = CAPEMetric(thresholds=thrs)
    metric.process({}, episodes)
    res = metric.compute_metrics(metric.results)
    mask_e = qvis & np.repeat(svis[::4].all(axis=1), 4, axis=0)
    for i, t in enumerate(thrs):
        refs = [
            keypoint_pck_accuracy(pred[j:j + 1], gt[j:j + 1], mask_e[j:j + 1], t,
                                  np.array([[bbox[j], bbox[j]]]))[1] for j in range(n)
        ]
        assert res[f'PCK@{t:g}'] == pytest.approx(np.mean(refs), abs=1e-12)


def test_torch_and_numpy_inputs_agree():
    eps_np = hand_episodes()
    eps_t = []
    for ep in hand_episodes():
        ep = dict(ep)
        ep['pred_kpts'] = torch.tensor(ep['pred_kpts'], dtype=torch.float64)
        ep['gt_kpts'] = torch.tensor(ep['gt_kpts'], dtype=torch.float32)
        ep['query_vis'] = torch.tensor(ep['query_vis'], dtype=torch.float32)
        ep['support_vis'] = torch.tensor(ep['support_vis'], dtype=torch.bool)
        ep['bbox_size'] = torch.tensor(ep['bbox_size'])
        ep['query_ann_ids'] = torch.tensor(ep['query_ann_ids'])
        ep['category_id'] = torch.tensor(ep['category_id'])
        ep['num_kpts'] = torch.tensor(ep['num_kpts'])
        eps_t.append(ep)
    metric = CAPEMetric()
    # several process() calls (batches), one stored result per episode
    metric.process({}, eps_t[:2])
    metric.process({}, eps_t[2:])
    assert len(metric.results) == 3
    assert all(isinstance(r['pred_kpts'], np.ndarray) for r in metric.results)
    assert metric.results[0]['pred_kpts'].shape == (2, 6, 2)
    res_t = metric.evaluate(size=3)  # mmengine path: size = number of episodes
    assert len(metric.results) == 0
    _, res_np = _run(eps_np)
    assert res_t.keys() == res_np.keys()
    for key in res_np:
        assert res_t[key] == pytest.approx(res_np[key], rel=1e-12), key


def test_prefix_and_registry():
    metric = METRICS.build(dict(type='CAPEMetric', prefix='mp100'))
    assert isinstance(metric, CAPEMetric)
    metric.process({}, hand_episodes())
    res = metric.evaluate(size=3)
    assert res['mp100/PCK@0.2'] == _approx(F(11, 24))


def test_out_dir_json(tmp_path):
    out = tmp_path / 'eval'
    metric, res = _run(hand_episodes(), out_dir=str(out))
    data = json.loads((out / 'cape_metrics.json').read_text())
    assert data['metrics'] == pytest.approx(res)
    assert data['metrics']['PCK@0.2'] == _approx(F(11, 24))
    assert set(data['per_category']) == {'1', '2'}
    assert data['per_category']['1']['PCK@0.2'] == _approx(F(7, 12))
    assert data['per_category']['2']['num_pairs'] == 2
    assert data['protocol']['empty_mask'] == 'zero'
    assert data['protocol']['thresholds'] == list(THRS)
    assert 'max(w,h)' in data['protocol']['normalisation']
    preds = json.loads((out / 'cape_predictions.json').read_text())
    assert [p['query_ann_id'] for p in preds] == [101, 102, 201, 202]
    assert [p['category_id'] for p in preds] == [1, 1, 2, 2]
    assert [p['pair_index'] for p in preds] == [0, 1, 2, 3]
    assert [len(p['keypoints']) for p in preds] == [5, 5, 3, 4]
    eps = hand_episodes()
    np.testing.assert_allclose(preds[2]['keypoints'], eps[1]['pred_kpts'][0, :3])
    np.testing.assert_allclose(preds[1]['keypoints'], eps[0]['pred_kpts'][1, :5])

    out2 = tmp_path / 'eval2'
    _run(hand_episodes(), out_dir=str(out2), save_predictions=False)
    assert (out2 / 'cape_metrics.json').exists()
    assert not (out2 / 'cape_predictions.json').exists()


def test_format_pck_table():
    metric, res = _run(hand_episodes())
    text = format_pck_table(res, metric.last_per_category)
    assert '45.83' in text  # PCK@0.2 = 11/24
    assert '58.33' in text and '33.33' in text  # per-category PCK@0.2
    assert 'mPCK_5thr' in text and '35.00' in text
    prefixed = format_pck_table({f'val/{k}': v for k, v in res.items()})
    assert '45.83' in prefixed and 'cat id' not in prefixed


@pytest.mark.parametrize('kwargs', [
    dict(thresholds=(0.0, )),
    dict(thresholds=(0.1, 1.5)),
    dict(thresholds=()),
    dict(thresholds=('a', )),
    dict(thresholds=(0.1, 0.1)),
    dict(thresholds=(-0.2, )),
    dict(empty_mask='drop'),
    dict(empty_mask=None),
])
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError):
        CAPEMetric(**kwargs)


def test_invalid_episode_shapes():
    metric = CAPEMetric()
    ep = hand_episodes()[0]
    bad = dict(ep, bbox_size=np.array([100.]))
    with pytest.raises(ValueError):
        metric.process({}, [bad])
    bad = dict(ep, support_vis=np.ones((2, 5)))
    with pytest.raises(ValueError):
        metric.process({}, [bad])
    bad = {k: v for k, v in ep.items() if k != 'num_kpts'}
    with pytest.raises(KeyError):
        metric.process({}, [bad])


def test_coverage_counts_only_categories_in_the_averages():
    """With empty_mask='skip', a category whose every pair has an empty mask is not evaluated."""
    ep_a, _, ep_c = hand_episodes()  # category 2 keeps only episode C (empty mask)
    for empty_mask, evaluated in (('zero', [1, 2]), ('skip', [1])):
        metric = CAPEMetric(empty_mask=empty_mask)
        metric.dataset_meta = dict(category_coverage=dict(requested=3, used=[1, 2, 3],
                                                          skipped={}))
        metric.process({}, [ep_a, ep_c])
        metric.compute_metrics(metric.results)
        cov = metric.last_coverage
        assert cov['evaluated_ids'] == evaluated and cov['total'] == 3
        expected = {'no result': [3]}
        if empty_mask == 'skip':
            expected['every pair has an empty mask'] = [2]
        assert cov['not_evaluated'] == expected
