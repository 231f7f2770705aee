"""Every shipped config trains: one step gives every trainable parameter a gradient.

DDP (``find_unused_parameters=False``, the mmengine default) refuses a step in which a parameter
got no gradient, so a module that is built but never used (a backbone stage outside
``out_indices``, an ablation branch that is switched off) breaks multi-GPU training at the second
iteration. Each config is run as written (model, episode pipeline, shots) on a small synthetic
MP-100 set, with the input shrunk to 64 px and random backbone weights.
"""
import copy
import shutil

import pytest
import torch
from mmengine.config import Config

from metapoint.datasets.collate import episode_collate
from metapoint.datasets.synthetic import generate_dataset
from metapoint.registry import DATASETS, MODELS
from metapoint.utils import register_all_modules
from tests.helpers import REPO

INPUT = 64
CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)


@pytest.fixture(scope='module')
def synthetic_root(tmp_path_factory):
    """100 random categories, 6 instances each (enough for 5-shot training episodes), written
    under every annotation-file name and image folder the configs use."""
    root = tmp_path_factory.mktemp('synthetic_all_configs')
    generate_dataset(root, source='random', img_size=INPUT, instances_per_category=6,
                     calib_pairs=10)
    ann = root / 'annotations' / 'unified_ann_file.json'
    datasets = [_train_dataset(Config.fromfile(str(p))) for p in CONFIGS]
    for name in {d.get('ann_file') for d in datasets} - {None}:
        target = root / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(ann, target)
    images = root / 'images'
    for prefix in {d.get('data_prefix', {}).get('img') for d in datasets}:
        if prefix and not (root / prefix).exists():
            (root / prefix).symlink_to(images, target_is_directory=True)
    return root


def _train_dataset(cfg):
    return (cfg.get('train_dataloader') or {}).get('dataset', {})


def _small_pipeline(pipeline):
    """The config's pipeline at 64 px input (heatmaps 16 px: the stride-4 grid of the input)."""
    out = copy.deepcopy(pipeline)
    for step in out:
        if step['type'] == 'TopdownAffine':
            step['input_size'] = (INPUT, INPUT)
        if step['type'] == 'GenerateCAPETarget':
            step['heatmap_size'] = (INPUT // 4, INPUT // 4)
    return out


def _backbone_without_download(model_cfg):
    """Random backbone weights (no ImageNet file is available to the test)."""
    backbone = model_cfg.get('backbone')
    if isinstance(backbone, dict) and 'pretrained' in backbone:
        backbone['pretrained'] = None


@pytest.mark.parametrize('config', CONFIGS, ids=[str(p.relative_to(REPO / 'configs'))
                                                 for p in CONFIGS])
def test_one_train_step_reaches_every_parameter(config, synthetic_root):
    register_all_modules()
    root = synthetic_root
    cfg = Config.fromfile(str(config))
    model_cfg = copy.deepcopy(cfg.model)
    _backbone_without_download(model_cfg)
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    if not cfg.get('train_dataloader'):  # evaluation-only configs: the parameter-free floor
        assert not trainable and type(model).__name__ == 'SupportCopy'
        return

    ds_cfg = copy.deepcopy(_train_dataset(cfg))
    ds_cfg.update(data_root=str(root), pipeline=_small_pipeline(ds_cfg['pipeline']))
    dataset = DATASETS.build(ds_cfg)
    batch = episode_collate([dataset[0], dataset[1]])
    model.train()
    data = model.data_preprocessor(batch, True)
    losses = model(**data, mode='loss')
    total = sum(v.sum() for k, v in losses.items() if 'loss' in k)
    assert torch.isfinite(total), losses
    total.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, (f'{len(missing)} of {len(trainable)} trainable parameters got no '
                         f'gradient (DDP would stop): {missing[:10]}')
