"""Every MetaPoint config (splits, shots, ablations) builds and runs loss + predict on CPU.

The backbone is swapped for a ResNet-18 and the inputs are 64x64 so the check stays fast; the
knob each ablation changes is kept.
"""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from metapoint.registry import MODELS
from metapoint.structures import make_episode_batch
from metapoint.utils import register_all_modules

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / 'configs' / 'metapoint').rglob('*.py'))


def _batch(shots, queries=2, k=70, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    s_kpts = torch.rand(1, shots, k, 2, generator=g)
    s_w = (torch.rand(1, shots, k, generator=g) > 0.3).float()
    s_w[..., 20:] = 0  # padded slots
    q_w = (torch.rand(1, queries, k, generator=g) > 0.2).float()
    q_w[..., 20:] = 0
    hm = torch.rand(1, shots, k, size // 4, size // 4, generator=g) * s_w[..., None, None]
    return make_episode_batch(
        torch.randn(1, shots, 3, size, size, generator=g),
        torch.randn(1, queries, 3, size, size, generator=g), s_kpts,
        torch.rand(1, queries, k, 2, generator=g), support_weights=s_w, query_weights=q_w,
        num_kpts=20, support_heatmaps=hm)


def test_all_split_and_shot_configs_exist():
    names = {p.name for p in CONFIGS}
    for split in range(1, 6):
        for shots in (1, 5):
            assert f'metapoint_r50_4xb16_mp100-split{split}_{shots}shot.py' in names


@pytest.mark.parametrize('path', CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_builds_and_runs(path):
    register_all_modules()
    cfg = Config.fromfile(str(path))
    ds = cfg.test_dataloader.dataset
    assert ds.num_shots == cfg.train_dataloader.dataset.num_shots
    cfg.model.backbone = dict(type='TorchvisionResNet', depth=18, out_indices=(0, 1, 2, 3))
    model = MODELS.build(cfg.model)
    model.train()
    batch = _batch(ds.num_shots, queries=1)
    losses = model.loss(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    batch = _batch(ds.num_shots, queries=3)
    with torch.no_grad():
        pts = model(batch, mode='tensor')
    assert pts.shape == (1, 3, 70, 2)
    assert ((pts >= 0) & (pts <= 1)).all()


def test_episode_batched_eval_equals_one_query_at_a_time():
    """Supports encoded once + Q queries batched == each query alone with the same supports."""
    register_all_modules()
    cfg = Config.fromfile(str(REPO / 'configs/metapoint/metapoint_r50_4xb16_mp100-split1_5shot.py'))
    cfg.model.backbone = dict(type='TorchvisionResNet', depth=18, out_indices=(0, 1, 2, 3))
    model = MODELS.build(cfg.model).eval()
    batch = _batch(5, queries=3)
    with torch.no_grad():
        together = model(batch, mode='tensor')
        for q in range(3):
            one = model(batch.select_queries(slice(q, q + 1)), mode='tensor')
            torch.testing.assert_close(one[:, 0], together[:, q], atol=1e-5, rtol=0)
