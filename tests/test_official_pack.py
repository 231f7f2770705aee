"""The packed official fixtures (tests/data/official): content, fidelity to the source files,
and the heatmap-target case that the pipeline reproduces.

The pack is always in the repository; the uncompressed source folder is optional (beside the
clone), and only the fidelity checks need it.
"""
import json

import numpy as np
import pytest
import torch

from metapoint.datasets.transforms import GenerateCAPETarget
from tests.helpers import (OFFICIAL_PACK, OFFICIAL_SOURCE, first_difference,
                           load_official_fixture, load_official_functions, load_official_grads,
                           official_manifest, require)


def _source(name):
    return torch.load(require(OFFICIAL_SOURCE / name), map_location='cpu', weights_only=True)


def _assert_same(packed, source):
    """Every entry of ``packed`` equals (bitwise, dtype included) the entry of ``source``."""
    diff = first_difference(packed, source)
    assert diff is None, diff


def test_pack_is_small_and_complete():
    sizes = {p.name: p.stat().st_size for p in OFFICIAL_PACK.glob('*.xz')}
    assert set(sizes) == {'images.pt.xz', 'functions.pt.xz', 'metapoint_s1.pt.xz',
                          'fmmp_s1.pt.xz', 'metapoint_s1.grads.pt.xz', 'fmmp_s1.grads.pt.xz',
                          'capeformer_s1.pt.xz'}
    assert sum(sizes.values()) < 8e6
    recorded = json.loads((OFFICIAL_PACK / 'SOURCES.json').read_text())['packed_bytes']
    assert recorded == sizes  # SOURCES.json describes the files as committed
    assert len(official_manifest('metapoint_s1')) == 561
    assert len(official_manifest('fmmp_s1')) == 868
    assert len(official_manifest('capeformer_s1')) == 780
    assert sizes['capeformer_s1.pt.xz'] < 1.5e6


def test_images_restored_in_each_models_layout():
    mp_in, _ = load_official_fixture('metapoint_s1')
    fm_in, _ = load_official_fixture('fmmp_s1')
    assert mp_in['img_q'].shape == (2, 3, 256, 256) and len(mp_in['img_s']) == 1
    assert fm_in['imgs'].shape == (2, 2, 3, 256, 256)
    assert torch.equal(fm_in['imgs'][:, 0], mp_in['img_s'][0])
    assert torch.equal(fm_in['imgs'][:, 1], mp_in['img_q'])
    mp_in['img_q'].zero_()  # callers get copies: a mutation does not leak into the next load
    assert load_official_fixture('metapoint_s1')[0]['img_q'].abs().sum() > 0


def test_capeformer_inputs_are_padded_metapoint_inputs():
    """The CapeFormer pack stores no inputs: MetaPoint's, zero-padded from 70 to 100 slots."""
    mp_in, _ = load_official_fixture('metapoint_s1')
    cf_in, _ = load_official_fixture('capeformer_s1')
    assert torch.equal(cf_in['img_s'][0], mp_in['img_s'][0])
    assert torch.equal(cf_in['img_q'], mp_in['img_q'])
    assert cf_in['target_s'][0].shape == (2, 100, 64, 64)
    assert cf_in['target_weight_q'].shape == (2, 100, 1)
    assert torch.equal(cf_in['target_q'][:, :70], mp_in['target_q'])
    assert cf_in['target_q'][:, 70:].abs().sum() == 0
    assert cf_in['target_weight_s'][0][:, 70:].sum() == 0
    meta = cf_in['img_metas'][0]
    assert meta['query_joints_3d'].shape == (100, 3)
    assert meta['sample_joints_3d'][0].shape == (100, 3)
    assert cf_in['category_keypoint_num'].tolist() == [17, 9]


@pytest.mark.parametrize('prefix', ['metapoint_s1', 'fmmp_s1', 'capeformer_s1'])
def test_pack_equals_source(prefix):
    inputs, outputs = load_official_fixture(prefix)
    _assert_same(inputs, _source(f'{prefix}.inputs.pt'))
    _assert_same(outputs, _source(f'{prefix}.outputs.pt'))
    manifest = json.loads((OFFICIAL_SOURCE / f'{prefix}.manifest.json').read_text())
    assert official_manifest(prefix) == manifest


def test_functions_equal_source():
    _assert_same(load_official_functions(), _source('functions.pt'))


@pytest.mark.parametrize('prefix', ['metapoint_s1', 'fmmp_s1'])
def test_packed_gradients_within_quantisation(prefix):
    packed, source = load_official_grads(prefix), _source(f'{prefix}.grads.pt')
    assert set(packed['stats']) == set(source['stats'])
    for key, stats in packed['stats'].items():
        assert stats['l2'] == source['stats'][key]['l2'] and stats['sum'] == \
            source['stats'][key]['sum'], key
    assert set(packed['grads']) == set(source['grads'])
    for key, grad in packed['grads'].items():
        ref = source['grads'][key]
        err = (grad - ref).abs().max() / ref.abs().max()
        assert err <= (1e-3 if packed['precision'][key] == 'float16' else 4.5e-3), (key, err)
    assert packed['info']['loss_total'] == source['info']['loss_total']


def test_heatmap_targets_match_official():
    """MSRA heatmaps (64x64, sigma 2) and target weights, border and off-map cases included."""
    case = load_official_functions()['topdown_generate_target_msra_sigma2']
    joints = case['joints_3d'][:, :2].numpy()[None]
    visible = case['joints_3d_visible'][:, 0].numpy()[None]
    res = GenerateCAPETarget(heatmap_size=(64, 64), sigma=2, with_heatmap=True)(dict(
        transformed_keypoints=joints, keypoints_visible=visible, input_size=(256, 256)))
    np.testing.assert_array_equal(res['keypoint_weights'][0], case['target_weight'][:, 0].numpy())
    np.testing.assert_allclose(res['heatmaps'], case['target'].numpy(), atol=1e-7, rtol=0)
    assert res['keypoint_weights'][0, 5] == 0 and res['keypoint_weights'][0, 4] == 1
