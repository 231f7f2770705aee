"""A converted official FMMP checkpoint reproduces the official outputs (fixtures).

The official-layout state dict is rebuilt from ``fmmp_s1.manifest.json`` with the fixture README's
weight rule, converted with our converter, loaded into our model built from the split-1 config and
fed the fixture inputs (eqdiv-padded keypoints and the official BFS tables). Dropout is disabled,
as in the fixtures.
"""
import subprocess
import sys

import pytest
import torch

from metapoint.models.converters import (ConversionError, check_against_model,
                                         convert_fmmp_official)
from tests.helpers import (REPO, load_official_fixture,
                           official_weights_model, rule_state_dict)
from tests.helpers import close_to_fixture as _close
from tests.helpers import fmmp_official_batch as _batch

CONFIG = REPO / 'configs' / 'fmmp' / 'fmmp_r50_1xb16_mp100-split1_1shot.py'


@pytest.fixture(scope='module')
def official():
    return load_official_fixture('fmmp_s1')


@pytest.fixture(scope='module')
def model():
    return official_weights_model(CONFIG, convert_fmmp_official, 'fmmp_s1')


def test_eval_outputs_match_official(model, official):
    inputs, outputs = official
    ref = outputs['eval']
    model.eval()
    batch = _batch(inputs)
    with torch.no_grad():
        out = model.run_episode(batch)
        pred = model.predict_points(batch)
    _close(out['init_embed'], ref['init_keypoint_embed'], 1e-5, 'init_keypoint_embed')
    _close(out['order'].expand_as(ref['query_order']), ref['query_order'], 1e-6, 'query_order')
    _close(out['support_ref_pos'][:, 0], ref['support_ref_pos'], 1e-5, 'support_ref_pos')
    for layer in range(3):
        _close(out['support_embeds'][layer][:, 0, 0], ref['support_embed'][layer][0], 1e-4,
               f'support_embed {layer}')
        _close(out['query_embeds'][layer], ref['decoder_embed'][:, layer], 1e-4,
               f'decoder_embed {layer}')
        _close(out['deltas'][layer], ref['kpt_branch_delta'][:, layer], 1e-5, f'delta {layer}')
        _close(out['points'][layer], ref['pred_points'][:, layer], 1e-5, f'points {layer}')
    _close(pred[:, 0], ref['pred_points'][:, -1], 1e-5, 'prediction = last layer')


def test_train_outputs_and_losses_match_official(model, official):
    inputs, outputs = official
    ref = outputs['train']
    model.train()
    batch = _batch(inputs)
    out = model.run_episode(batch)
    for layer in range(3):
        _close(out['points'][layer].detach(), ref['pred_points'][:, layer], 1e-4,
               f'train points {layer}')
    losses = model.loss(batch)
    assert set(losses) == set(ref['losses'])
    for key, value in ref['losses'].items():
        _close(losses[key].detach(), value, 1e-4, key)
    sum(losses.values()).backward()
    grads = [p.grad for p in model.predictor.query_layers[0].deform_attn.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_converter_rejects_unmapped_and_mismatched_keys(model):
    state = rule_state_dict('fmmp_s1')
    with pytest.raises(ConversionError, match='no mapping'):
        convert_fmmp_official(dict(state, **{'predictor.mystery.weight': torch.zeros(1)}))
    converted = convert_fmmp_official(state)
    assert 'predictor.query_layers.2.deform_attn.projector.0.weight' in converted
    key = 'predictor.support_layers.0.deform_attn.attn_layers.3.sampling_offsets.weight'
    converted[key] = torch.zeros(96, 256)
    with pytest.raises(ConversionError, match='shape mismatch'):
        check_against_model(converted, model.state_dict())
    converted.pop(key)
    with pytest.raises(ConversionError, match='missing'):
        check_against_model(converted, model.state_dict())


def test_converter_cli(tmp_path):
    import argparse
    src = tmp_path / 'official.pth'
    torch.save(dict(state_dict=rule_state_dict('fmmp_s1'),
                    meta=dict(env=argparse.Namespace(mmcv='1.5.3'))), src)
    tool = [sys.executable, str(REPO / 'tools/model_converters/fmmp_official_to_ours.py'),
            str(src), str(tmp_path / 'ours.pth')]
    refused = subprocess.run(tool, capture_output=True, text=True, cwd=REPO)
    assert refused.returncode != 0 and '--trust-pickle' in refused.stderr
    done = subprocess.run(tool + ['--trust-pickle'], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = torch.load(tmp_path / 'ours.pth', weights_only=True)
    assert len(ours['state_dict']) == 868
