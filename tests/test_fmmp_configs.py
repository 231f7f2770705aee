"""Every FMMP config (splits, shots, ablations) builds, trains one step and predicts on CPU.

The backbone is swapped for a ResNet-18 and the inputs are 64x64 so the check stays fast; the
knob each ablation changes is kept. The episode pipeline of each config is run on a synthetic
episode, so the padding and neighbour settings are exercised too.
"""
import numpy as np
import pytest
import torch
from mmengine.config import Config

from metapoint.datasets import episode_collate
from metapoint.registry import MODELS, TRANSFORMS
from metapoint.utils import register_all_modules
from tests.helpers import REPO

CONFIGS = sorted((REPO / 'configs' / 'fmmp').rglob('*.py'))


def _episode(cfg_pipeline, shots, queries, k=70, num_kpts=9, seed=0):
    """A packed episode of a 9-keypoint chain category run through the config's episode pipeline."""
    g = torch.Generator().manual_seed(seed)
    skeleton = [[i, i + 1] for i in range(num_kpts - 1)]

    def inst():
        kp = torch.zeros(k, 2)
        kp[:num_kpts] = torch.rand(num_kpts, 2, generator=g)
        w = torch.zeros(k)
        w[:num_kpts] = 1
        return dict(img=torch.randn(3, 64, 64, generator=g), keypoints=kp,
                    keypoints_visible=w.clone(), keypoint_weights=w, meta=dict(ann_id=1))

    ep = dict(supports=[inst() for _ in range(shots)], queries=[inst() for _ in range(queries)],
              skeleton=skeleton, num_kpts=num_kpts, category_id=3,
              rng=np.random.default_rng(seed))
    for t in cfg_pipeline:
        ep = TRANSFORMS.build(t)(ep)

    return episode_collate([ep])['inputs']


def test_all_split_and_shot_configs_exist():
    names = {p.name for p in CONFIGS}
    for split in range(1, 6):
        for shots in (1, 5):
            assert f'fmmp_r50_1xb16_mp100-split{split}_{shots}shot.py' in names


def test_real_data_configs_read_the_linked_annotation_file():
    """Every MP-100 FMMP config reads FMMP's linked file; the synthetic CPU recipes their own."""
    for path in CONFIGS:
        cfg = Config.fromfile(str(path))
        files = {cfg[f'{role}_dataloader'].dataset.ann_file for role in ('train', 'val', 'test')}
        expected = ('annotations/unified_ann_file.json' if path.stem.endswith(
            ('_cpu', '_cpu_train-pad-zero')) else 'annotations/mp100_all_link_0412.json')
        assert files == {expected}, path.name
    assert sum('_cpu' in p.stem for p in CONFIGS) == 2


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_and_runs(path):
    register_all_modules()
    cfg = Config.fromfile(str(path))
    shots = cfg.test_dataloader.dataset.num_shots
    assert shots == cfg.train_dataloader.dataset.num_shots
    cfg.model.backbone = dict(type='TorchvisionResNet', depth=18, out_indices=(1, 2, 3))
    model = MODELS.build(cfg.model)
    model.train()
    batch = _episode(cfg.train_dataloader.dataset.episode_pipeline, shots, 1)
    losses = model.loss(batch)
    expected = {'l1_loss_real', 'l1_loss_mix'}
    if cfg.model.get('similarity_aid') is not None:  # the CPU recipes' optional aid
        expected.add('loss_sim0')
    assert set(losses) == expected
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    batch = _episode(cfg.test_dataloader.dataset.episode_pipeline, shots, 3)
    with torch.no_grad():
        pts = model(batch, mode='tensor')
    assert pts.shape == (1, 3, 70, 2)
    assert ((pts >= 0) & (pts <= 1)).all()
