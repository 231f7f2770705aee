"""A converted official MetaPoint checkpoint reproduces the official outputs (fixtures).

The official-layout state dict is rebuilt from ``metapoint_s1.manifest.json`` with the fixture
README's weight rule, converted with our converter, loaded into our model built from the split-1
config and fed the fixture inputs. Dropout is disabled (the fixtures neutralised it, quirk M1).
"""
import pytest
import torch

from metapoint.models.converters import (ConversionError, check_against_model,
                                         convert_metapoint_official)
from tests.helpers import (REPO, load_official_fixture,
                           official_weights_model, rule_state_dict)
from tests.helpers import close_to_fixture as _close
from tests.helpers import metapoint_official_batch as _batch

CONFIG = REPO / 'configs' / 'metapoint' / 'metapoint_r50_4xb16_mp100-split1_1shot.py'


@pytest.fixture(scope='module')
def official():
    return load_official_fixture('metapoint_s1')


@pytest.fixture(scope='module')
def model():
    return official_weights_model(CONFIG, convert_metapoint_official, 'metapoint_s1')


def test_converter_rejects_unmapped_and_mismatched_keys(model):
    state = rule_state_dict('metapoint_s1')
    with pytest.raises(ConversionError, match='no mapping'):
        convert_metapoint_official(dict(state, **{'strange.weight': torch.zeros(1)}))
    converted = convert_metapoint_official(state)
    converted['meta_embedding.weight'] = torch.zeros(3, 3)
    with pytest.raises(ConversionError, match='shape mismatch'):
        check_against_model(converted, model.state_dict())
    converted.pop('meta_embedding.weight')
    with pytest.raises(ConversionError, match='missing'):
        check_against_model(converted, model.state_dict())


def test_eval_outputs_match_official(model, official):
    inputs, outputs = official
    ref = outputs['eval']
    model.eval()
    batch = _batch(inputs)
    with torch.no_grad():
        out = model.run_episode(batch)
    cov = ref['matcher_args']['covisibles'][..., 0]
    _close(out['support_meta_points'][:, 0], ref['meta_points_s'][0], 1e-5, 'meta_points_s')
    _close(out['query_meta_points'], ref['meta_points_q'], 1e-5, 'meta_points_q')
    _close(out['support_meta_visible'][:, 0], ref['meta_visible_s'][0][..., 0], 1e-5,
           'meta_visible_s')
    _close(out['query_meta_visible'], ref['meta_visible_q'][..., 0], 1e-5, 'meta_visible_q')
    assert torch.equal(out['meta_to_kp'][cov], ref['meta_to_kp'][cov])
    _close(out['ref_init_points'], ref['ref_init_points'], 1e-5, 'ref_init_points')
    _close(out['support_tokens'], ref['sk_feats_enhanced'], 1e-4, 'sk_feats_enhanced')
    _close(out['ref_tokens'], ref['ref_decoder_in_sk_feats'], 1e-4, 'ref_decoder_in_sk_feats')
    # every refine layer on the co-visible keypoints (other rows are official garbage, M5)
    for layer in range(3):
        _close(out['ref_points'][:, layer][cov], ref['ref_points_q'][:, layer][cov], 1e-5,
               f'ref_points layer {layer}')


def test_train_losses_match_official(model, official):
    inputs, outputs = official
    model.train()
    batch = _batch(inputs)
    losses = model.loss(batch)
    expected = outputs['train']['losses']
    assert set(losses) == set(expected)
    for key, value in expected.items():
        _close(losses[key].detach(), value, 1e-4, key)
    total = sum(losses.values())
    total.backward()
    assert model.meta_embedding.weight.grad is not None


def test_converter_cli_needs_trust_for_pickled_meta(tmp_path):
    import argparse
    import subprocess
    import sys
    src = tmp_path / 'official.pth'
    # mmcv 1.x checkpoints pickle objects in their meta; Namespace stands in for those
    torch.save(dict(state_dict=rule_state_dict('metapoint_s1'),
                    meta=dict(env=argparse.Namespace(mmcv='1.5.3'))), src)
    tool = [sys.executable, str(REPO / 'tools/model_converters/metapoint_official_to_ours.py'),
            str(src), str(tmp_path / 'ours.pth')]
    refused = subprocess.run(tool, capture_output=True, text=True, cwd=REPO)
    assert refused.returncode != 0 and '--trust-pickle' in refused.stderr
    done = subprocess.run(tool + ['--trust-pickle'], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr[-2000:]
    ours = torch.load(tmp_path / 'ours.pth', weights_only=True)
    assert len(ours['state_dict']) == 561
    assert 'query_enhancer.layers.2.self_attn.in_proj_weight' in ours['state_dict']
