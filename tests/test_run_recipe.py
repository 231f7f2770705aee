"""What a real run keeps from the official recipes: total batch over any process count, per-rank
random streams with one episode list, FMMP's raw invisible keypoints, the final checkpoint for
testing, and 2-process training of each model's CPU config through tools/dist_train.sh."""
import logging
import os
import subprocess

import pytest
import torch
from mmengine.config import Config

from metapoint.utils import keep_total_batch, launch_world_size, share_episode_seed
from tests.helpers import REPO, free_port

METAPOINT_CFGS = sorted((REPO / 'configs' / 'metapoint').rglob('metapoint_r50_*_mp100-*.py'))
FMMP_CFGS = sorted((REPO / 'configs' / 'fmmp').rglob('fmmp_r50_*_mp100-*.py'))
CAPEFORMER_CFGS = sorted((REPO / 'configs' / 'capeformer').rglob('capeformer_r50_*_mp100-*.py'))


def _cfg(total=64, batch=16, sampler_seed=None, randomness=None):
    return Config(dict(total_batch_size=total,
                       train_dataloader=dict(batch_size=batch,
                                             sampler=dict(type='EpisodeSampler',
                                                          seed=sampler_seed)),
                       randomness=randomness or dict(seed=3, diff_rank_seed=True)))


@pytest.mark.parametrize('world, per_process', [(1, 64), (2, 32), (4, 16), (8, 8)])
def test_total_batch_is_split_over_processes(world, per_process):
    cfg = _cfg()
    msg = keep_total_batch(cfg, world)
    assert cfg.train_dataloader.batch_size == per_process
    assert cfg.effective_total_batch_size == 64 and 'DIFFERS' not in msg


def test_total_batch_that_cannot_be_kept_is_announced(mm_logs):
    cfg = _cfg()
    msg = keep_total_batch(cfg, 3)  # 64 / 3 processes
    assert cfg.train_dataloader.batch_size == 21 and cfg.effective_total_batch_size == 63
    assert 'TOTAL BATCH DIFFERS FROM THE RECIPE' in msg and 'does not divide over 3' in msg
    assert any(r.levelno == logging.WARNING and 'DIFFERS' in r.getMessage() for r in mm_logs)
    cfg = _cfg()
    msg = keep_total_batch(cfg, 4, batch_size_given=True)  # the user's 16 x 4 = 64 is fine
    assert cfg.train_dataloader.batch_size == 16 and 'DIFFERS' not in msg
    cfg = _cfg(batch=24)
    msg = keep_total_batch(cfg, 4, batch_size_given=True)  # the official config's 24 x 4
    assert cfg.train_dataloader.batch_size == 24 and cfg.effective_total_batch_size == 96
    assert 'set on the command line' in msg


def test_no_total_batch_leaves_the_loader_alone():
    cfg = _cfg(total=None, batch=5)
    assert keep_total_batch(cfg, 4) == '' and cfg.train_dataloader.batch_size == 5


def test_launch_world_size(monkeypatch):
    for var in ('WORLD_SIZE', 'SLURM_NTASKS', 'OMPI_COMM_WORLD_SIZE'):
        monkeypatch.delenv(var, raising=False)
    assert launch_world_size('none') == 1
    with pytest.raises(RuntimeError, match='OMPI_COMM_WORLD_SIZE'):
        launch_world_size('mpi')
    monkeypatch.setenv('SLURM_NTASKS', '8')
    monkeypatch.setenv('OMPI_COMM_WORLD_SIZE', '6')
    assert launch_world_size('slurm') == 8 and launch_world_size('mpi') == 6
    monkeypatch.setenv('WORLD_SIZE', '4')
    assert launch_world_size('pytorch') == 4 and launch_world_size('slurm') == 4


def test_episode_sampler_gets_the_run_seed_under_diff_rank_seed():
    cfg = _cfg()
    share_episode_seed(cfg)
    assert cfg.train_dataloader.sampler.seed == 3
    cfg = _cfg(sampler_seed=11)  # an explicit sampler seed wins
    share_episode_seed(cfg)
    assert cfg.train_dataloader.sampler.seed == 11
    cfg = _cfg(randomness=dict(seed=3, diff_rank_seed=False))  # mmengine passes the seed itself
    share_episode_seed(cfg)
    assert cfg.train_dataloader.sampler.seed is None


def test_real_data_recipes_keep_the_official_totals_and_streams():
    # splits x shots + ablations + cross-super-category; CapeFormer: both protocols + cross
    assert (len(METAPOINT_CFGS), len(FMMP_CFGS), len(CAPEFORMER_CFGS)) == (29, 30, 24)
    for path in METAPOINT_CFGS + FMMP_CFGS + CAPEFORMER_CFGS:
        cfg = Config.fromfile(str(path))
        official = 64 if path in METAPOINT_CFGS else 16
        assert cfg.total_batch_size == official, path.name
        seed = 1 if path in CAPEFORMER_CFGS else 0  # the official CapeFormer train.py: seed 1
        assert cfg.randomness == dict(seed=seed, diff_rank_seed=True), path.name
    for path in FMMP_CFGS:
        cfg = Config.fromfile(str(path))
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
            types = [t['type'] for t in cfg[loader].dataset.pipeline]
            assert types.index('KeepInvisibleKeypointsRaw') == types.index('TopdownAffine') + 1


def test_test_all_picks_the_final_checkpoint(tmp_path):
    for name in ('epoch_50.pth', 'epoch_150.pth', 'epoch_200.pth', 'best_mPCK_epoch_120.pth'):
        (tmp_path / name).touch()

    def pick(*args):
        return subprocess.run(['bash', 'scripts.sh', 'checkpoint', str(tmp_path), *args],
                              cwd=REPO, capture_output=True, text=True)
    assert pick().stdout.strip() == str(tmp_path / 'epoch_200.pth')
    assert pick('best').stdout.strip() == str(tmp_path / 'best_mPCK_epoch_120.pth')
    assert pick('latest').returncode == 2
    empty = subprocess.run(['bash', 'scripts.sh', 'checkpoint', str(tmp_path / 'none')],
                           cwd=REPO, capture_output=True, text=True)
    assert empty.returncode == 1 and 'no final checkpoint' in empty.stderr


# ----------------------------------------------------------------------- 2-process training
@pytest.fixture(scope='module')
def synthetic_random(tmp_path_factory):
    from metapoint.datasets.synthetic import generate_dataset
    root = tmp_path_factory.mktemp('synthetic_dist')
    generate_dataset(root, source='random', img_size=96, instances_per_category=6,
                     calib_pairs=10)
    return root


@pytest.mark.parametrize('config, per_process', [
    ('configs/metapoint/metapoint_r18_1xb8_synthetic-random-split1_1shot_quickstart.py', 4),
    ('configs/fmmp/fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu.py', 8),
    ('configs/capeformer/capeformer_r18_1xb8_synthetic-real-split1_1shot_cpu.py', 4)])
def test_dist_train_two_gloo_processes(config, per_process, synthetic_random, tmp_path):
    """``bash tools/dist_train.sh CONFIG 2`` on CPU: every iteration of one epoch runs (DDP
    stops at the second one when a parameter gets no gradient), the total batch is split."""
    work = tmp_path / 'work'
    env = dict(os.environ, PORT=str(free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    env.pop('CUDA_VISIBLE_DEVICES', None)
    opts = [f'train_dataloader.dataset.data_root={synthetic_random}',
            'train_dataloader.sampler.episodes_per_category=1', 'train_cfg.max_epochs=1',
            'default_hooks.checkpoint.interval=1']
    proc = subprocess.run(['bash', 'tools/dist_train.sh', config, '2', '--work-dir', str(work),
                           '--no-validate', '--cfg-options', *opts],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    assert f'2 process(es) x {per_process}' in log
    from metapoint.utils import allow_mmengine_checkpoint_globals
    allow_mmengine_checkpoint_globals()
    ckpt = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=True)
    # 70 train categories x 1 episode over 2 x per_process episodes per iteration
    assert ckpt['meta']['iter'] == -(-70 // (2 * per_process)) >= 2
