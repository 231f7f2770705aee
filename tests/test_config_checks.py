"""Config keys a model does not define are errors that list the valid keys (never ignored)."""
import copy
import subprocess
import sys

import pytest
from mmengine.config import Config

from metapoint.registry import MODELS
from metapoint.utils import UnknownConfigKeyError, merge_options, register_all_modules
from tests.helpers import REPO

METAPOINT = REPO / 'configs/metapoint/metapoint_r18_1xb8_synthetic-real-split1_1shot_cpu.py'
FMMP = REPO / 'configs/fmmp/fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu.py'


def _model_cfg(path, **changes):
    register_all_modules()
    cfg = copy.deepcopy(Config.fromfile(str(path)).model)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split('.')
        node = cfg
        for p in parents:
            node = node[p]
        node[leaf] = value
    return cfg


def test_merge_options_fills_defaults_and_rejects_strangers():
    assert merge_options('x', dict(a=1, b=2), dict(b=3)) == dict(a=1, b=3)
    assert merge_options('x', dict(a=1), None) == dict(a=1)
    with pytest.raises(UnknownConfigKeyError) as err:
        merge_options('MetaPoint loss_cfg', dict(l1=1.0, ref=1.0), dict(l2=1))
    assert str(err.value) == ("MetaPoint loss_cfg: unknown key(s) 'l2' (did you mean 'l1'?); "
                              'valid keys: l1, ref')
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)


@pytest.mark.parametrize('path, dotted, owner, valid', [
    (METAPOINT, 'decoder_cfg.n_head', 'MetaPoint decoder_cfg', 'n_heads'),
    (METAPOINT, 'criterion.l2', "MetaPointCriterion config (type='MetaPointCriterion')", 'vn'),
    (METAPOINT, 'meta_cfg.points', 'MetaPoint meta_cfg', 'point_num'),
    (METAPOINT, 'arch_cfg.enhance', 'MetaPoint arch_cfg', 'enhance_sk_w_meta'),
    (METAPOINT, 'enhancer_cfg.layers', 'MetaPoint enhancer_cfg', 'num_layers'),
    (METAPOINT, 'similarity_aid.temp', "SimilarityAid config (type='SimilarityAid')",
     'temperature'),
    (FMMP, 'criterion.mixweight', "FMMPCriterion config (type='FMMPCriterion')", 'mix_weight'),
    (FMMP, 'similarity_aid.level', "SimilarityAid config (type='SimilarityAid')", 'levels'),
    (FMMP, 'predictor.side_head', "RecurrentFGSAPredictor config (type='RecurrentFGSAPredictor')",
     'side_heads'),
    (FMMP, 'neck.out_channel', "LevelProjectionNeck config (type='LevelProjectionNeck')",
     'out_channels'),
    (METAPOINT, 'backbone.out_indice', "TorchvisionResNet config (type='TorchvisionResNet')",
     'out_indices'),
])
def test_unknown_sub_config_key_lists_valid_keys(path, dotted, owner, valid):
    cfg = _model_cfg(path, **{dotted: 1})
    with pytest.raises(UnknownConfigKeyError) as err:
        MODELS.build(cfg)
    msg = str(err.value)
    leaf = dotted.split('.')[-1]
    assert msg.startswith(f"{owner}: unknown key(s) '{leaf}'"), msg
    assert 'valid keys:' in msg and valid in msg.split('valid keys:')[1]


def test_top_level_model_key_is_checked_by_the_tools(tmp_path):
    """mmengine's runner builds the top-level model itself; tools/train.py checks it first."""
    proc = subprocess.run(
        [sys.executable, 'tools/train.py', str(METAPOINT), '--work-dir', str(tmp_path),
         '--cfg-options', 'model.max_kpt=70'], cwd=REPO, capture_output=True, text=True,
        timeout=300)
    assert proc.returncode != 0
    assert ("MetaPoint config (type='MetaPoint'): unknown key(s) 'max_kpt' "
            "(did you mean 'max_kpt_num'?)") in proc.stderr
    assert not (tmp_path / 'epoch_1.pth').exists()


def test_valid_configs_still_build():
    for path in (METAPOINT, FMMP):
        assert sum(p.numel() for p in MODELS.build(_model_cfg(path)).parameters()) > 0
