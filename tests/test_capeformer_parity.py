"""A converted official CapeFormer checkpoint reproduces the official outputs (fixtures).

The official-layout state dict is rebuilt from the ``capeformer_s1`` manifest with the fixture
README's weight rule (the backbone is listed twice; the ``encoder_query.*`` copy is the effective
one), converted with our converter, loaded into our model and fed the fixture inputs (K = 100).
Dropout is disabled as in the fixtures. Tolerances: the fixture README's (eval points 1e-5,
similarity map 1e-3; train points and losses 1e-4; gradient fingerprints relative 2e-2).
"""
import copy

import numpy as np
import pytest
import torch

from metapoint.models.converters import (CAPEFORMER_RULES, ConversionError, check_against_model,
                                         convert_capeformer_official, rename_keys)
from metapoint.registry import MODELS
from metapoint.utils import register_all_modules
from tests.helpers import REPO, disable_dropout, load_official_fixture, rule_state_dict
from tests.helpers import capeformer_official_batch as _batch
from tests.helpers import close_to_fixture as _close

CONFIG = REPO / 'configs' / 'capeformer' / 'capeformer_r50_1xb16_mp100-split1_1shot.py'
#: the official split-1 model (the config file's model, without ImageNet weights)
MODEL_CFG = dict(type='CapeFormer',
                 backbone=dict(type='TorchvisionResNet', depth=50, out_indices=(3,)),
                 data_preprocessor=dict(type='CAPEDataPreprocessor'))


@pytest.fixture(scope='module')
def official():
    return load_official_fixture('capeformer_s1')


@pytest.fixture(scope='module')
def converted():
    return convert_capeformer_official(rule_state_dict('capeformer_s1'))


@pytest.fixture(scope='module')
def model(converted):
    register_all_modules()
    net = MODELS.build(copy.deepcopy(MODEL_CFG))
    check_against_model(converted, net.state_dict())
    disable_dropout(net)
    return net


def _fresh(model, converted):
    """The rule weights and buffers (BatchNorm statistics) as loaded, before any forward."""
    model.load_state_dict(converted, strict=True)
    return model


def _record_backbone_calls(model):
    """C5 of every backbone call, in call order (the official debug_stats)."""
    calls = []
    handle = model.backbone.register_forward_hook(
        lambda module, args, out: calls.append(out[-1].detach()))
    return calls, handle


def _check_backbone_calls(calls, stats):
    assert len(calls) == 2
    for feat, name in zip(calls, ('backbone_call0_support', 'backbone_call1_query')):
        ref = stats[name]
        assert list(feat.shape) == ref['shape']
        f = feat.double()
        for key, value in (('sum', f.sum()), ('abs_sum', f.abs().sum()),
                           ('sq_sum', (f * f).sum())):
            assert abs(value.item() - ref[key]) <= 1e-5 * abs(ref[key]), (name, key)
        _close(feat.flatten()[:16], ref['head'], 1e-4, f'{name} head')


def test_converter_rejects_unmapped_and_mismatched_keys(model, converted):
    state = rule_state_dict('capeformer_s1')
    with pytest.raises(ConversionError, match='no mapping'):
        convert_capeformer_official(dict(state, **{'keypoint_head.strange.weight': torch.zeros(1)}))
    bad = dict(converted)
    bad['support_proj.weight'] = torch.zeros(3, 3)
    with pytest.raises(ConversionError, match='shape mismatch'):
        check_against_model(bad, model.state_dict())
    bad.pop('support_proj.weight')
    with pytest.raises(ConversionError, match='missing'):
        check_against_model(bad, model.state_dict())


def test_converter_takes_the_effective_encoder_query_backbone(converted):
    """The rule draws the two backbone copies independently; the official model ends up with
    the ``encoder_query.*`` values (loaded last into the shared module)."""
    state = rule_state_dict('capeformer_s1')
    assert not torch.equal(state['encoder_sample.conv1.weight'],
                           state['encoder_query.conv1.weight'])
    assert torch.equal(converted['backbone.conv1.weight'], state['encoder_query.conv1.weight'])
    assert not any(k.startswith(('encoder_sample', 'encoder_query')) for k in converted)
    assert len(converted) == 780 - 318


def test_eval_outputs_match_official(model, converted, official):
    inputs, outputs = official
    ref = outputs['eval']
    model = _fresh(model, converted).eval()
    batch = _batch(inputs)
    calls, handle = _record_backbone_calls(model)
    try:
        with torch.no_grad():
            out = model.run_episode(batch)
    finally:
        handle.remove()
    _check_backbone_calls(calls, ref['debug_stats'])
    _close(out['query_feat_proj'], ref['query_feat_proj'], 1e-4, 'query_feat_proj')
    _close(out['support_pooled'][:, :17], ref['support_pooled_c5'], 1e-4, 'support_pooled_c5')
    assert out['support_pooled'][:, 17:].abs().sum() == 0
    _close(out['support_tokens'], ref['support_tokens'], 1e-4, 'support_tokens')
    _close(out['order_pe'][0].T, ref['order_pe'], 1e-6, 'order_pe')
    _close(out['map_pe'][0].T.reshape(ref['map_pe'].shape), ref['map_pe'], 1e-6, 'map_pe')
    _close(out['similarity_map'], ref['similarity_map'], 1e-3, 'similarity_map')
    _close(out['proposals_global'], ref['proposals_global'], 1e-5, 'proposals_global')
    _close(out['proposals_local'], ref['proposals_local'], 1e-5, 'proposals_local')
    _close(out['delta_ref'], ref['kpt_delta_ref'], 1e-5, 'kpt_delta_ref')
    _close(out['delta_out'], ref['kpt_delta_out'], 1e-5, 'kpt_delta_out')
    # all 100 rows (masked slots are official outputs too)
    for layer in range(3):
        _close(out['points'][layer], ref['pred_points'][:, layer], 1e-5, f'points layer {layer}')
        _close(out['ref_points'][:, layer], ref['ref_points'][:, layer], 1e-5,
               f'ref_points layer {layer}')


def test_train_outputs_losses_and_gradients_match_official(model, converted, official):
    inputs, outputs = official
    ref = outputs['train']
    model = _fresh(model, converted).train()
    model.zero_grad()
    batch = _batch(inputs)
    calls, handle = _record_backbone_calls(model)
    try:
        out = model.run_episode(batch)
    finally:
        handle.remove()
    _check_backbone_calls(calls, ref['debug_stats'])  # support call first, then the query
    _close(out['support_tokens'].detach(), ref['support_tokens'], 1e-3, 'support_tokens')
    _close(out['similarity_map'].detach(), ref['similarity_map'], 1e-2, 'similarity_map')
    _close(out['proposals_global'].detach(), ref['proposals_global'], 1e-4, 'proposals_global')
    _close(out['proposals_local'].detach(), ref['proposals_local'], 1e-4, 'proposals_local')
    _close(out['delta_ref'].detach(), ref['kpt_delta_ref'], 1e-4, 'kpt_delta_ref')
    _close(out['delta_out'].detach(), ref['kpt_delta_out'], 1e-4, 'kpt_delta_out')
    for layer in range(3):
        _close(out['points'][layer].detach(), ref['pred_points'][:, layer], 1e-4,
               f'points layer {layer}')
        _close(out['ref_points'][:, layer].detach(), ref['ref_points'][:, layer], 1e-4,
               f'ref_points layer {layer}')

    losses = model.criterion(out, batch)
    assert set(losses) == set(ref['losses'])
    for key, value in ref['losses'].items():
        _close(losses[key].detach(), value, 1e-4, key)
    total = sum(losses.values())
    _close(total.detach(), ref['loss_total'], 1e-4, 'loss_total')

    # gradient fingerprints: [sum, abs_sum] of every official parameter's gradient (the shared
    # backbone is listed once, under encoder_sample.*)
    total.backward()
    official_names = rename_keys(
        {k.replace('encoder_sample.', 'encoder_query.', 1): k for k in ref['grad_stats']},
        CAPEFORMER_RULES)
    params = dict(model.named_parameters())
    assert set(official_names) == set(params)
    for ours, theirs in official_names.items():
        grad = params[ours].grad
        assert grad is not None, ours
        g_sum, g_abs = grad.double().sum().item(), grad.double().abs().sum().item()
        o_sum, o_abs = ref['grad_stats'][theirs].tolist()
        assert abs(g_abs - o_abs) <= 2e-2 * o_abs + 1e-12, (theirs, g_abs, o_abs)
        assert abs(g_sum - o_sum) <= 3e-3 * o_abs + 1e-9, (theirs, g_sum, o_sum)


def test_predict_decodes_every_episode(model, converted, official):
    """``mode='predict'`` maps every batch item to image pixels (official bug CF10 decoded only
    the last item and left sample 0 at zero)."""
    inputs, outputs = official
    ref = outputs['eval']
    model = _fresh(model, converted).eval()
    batch = _batch(inputs)
    # the official crops: centre (128, 128), scale 1.6 -> a 320 px square mapped to 256 px
    metas = copy.deepcopy(batch.query_metas)
    for episode in metas:
        for meta in episode:
            meta['warp_mat'] = np.array([[0.8, 0, 25.6], [0, 0.8, 25.6]], np.float32)
    with torch.no_grad():
        preds = model(batch.replace(query_metas=metas), mode='predict')
    assert len(preds) == 2
    official_px = ref['result']['preds'][..., :2]
    assert official_px[0].abs().sum() == 0  # CF10: the official decode skipped sample 0
    for b in range(2):
        expected = ref['pred_points'][b, 2].double().numpy() * 320 - 32
        np.testing.assert_allclose(preds[b]['pred_kpts'][0], expected, atol=1e-3, rtol=0)
    np.testing.assert_allclose(preds[1]['pred_kpts'][0], official_px[1].numpy(), atol=1e-3,
                               rtol=0)


def test_config_model_fits_the_converted_checkpoint(converted):
    """The split-1 config (written separately) builds exactly the converted key set."""
    if not CONFIG.exists():
        pytest.skip(f'{CONFIG} not written yet')
    from mmengine.config import Config

    from metapoint.models.backbones import disable_backbone_pretrained
    register_all_modules()
    cfg = Config.fromfile(str(CONFIG))
    disable_backbone_pretrained(cfg.model)
    check_against_model(converted, MODELS.build(cfg.model).state_dict())


def test_converter_cli(tmp_path):
    import subprocess
    import sys
    src = tmp_path / 'official.pth'
    torch.save(dict(state_dict=rule_state_dict('capeformer_s1')), src)
    config = tmp_path / 'capeformer.py'
    config.write_text(f'model = {MODEL_CFG!r}\n')
    tool = [sys.executable, str(REPO / 'tools/model_converters/capeformer_official_to_ours.py'),
            str(src), str(tmp_path / 'ours.pth'), '--config', str(config)]
    done = subprocess.run(tool, capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = torch.load(tmp_path / 'ours.pth', weights_only=True)['state_dict']
    assert len(ours) == 780 - 318
    assert 'decoder.layers.2.cross_attn.v_proj_weight' in ours
