"""End-to-end engine tests: tools/train.py, resume, 2-process gloo DDP, tools/test.py.

The runs use the tiny test estimator (tests/fixtures/tiny_estimator.py) on mp100_mini at 64x64,
so every run takes a few seconds on 2 CPU cores. The configs name ``data/mp100_mini``; every run
passes the real location (``tests.helpers.MP100_MINI``) with ``--cfg-options``.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import MP100_MINI, REPO, free_port, skip_without

TINY_CFG = 'tests/fixtures/tiny_mini.py'


def mini_root(loaders=('train', 'val', 'test')) -> list:
    """``--cfg-options`` values pointing the given dataloaders of a mp100_mini config at the data."""
    return [f'{loader}_dataloader.dataset.data_root={MP100_MINI}' for loader in loaders]


MINI_ROOT = mini_root()

pytestmark = skip_without(MP100_MINI)


def _env():
    env = dict(os.environ)
    env['PYTHONPATH'] = f'{REPO}{os.pathsep}{env.get("PYTHONPATH", "")}'
    env.setdefault('OMP_NUM_THREADS', '1')
    env.pop('CUDA_VISIBLE_DEVICES', None)
    return env


def _run(args, timeout=300, env_extra=None):
    env = _env()
    env.update(env_extra or {})
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f'{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc


def _load(path):
    from metapoint.utils import allow_mmengine_checkpoint_globals
    allow_mmengine_checkpoint_globals()
    return torch.load(path, map_location='cpu', weights_only=True)


def _metrics(work_dir: Path) -> dict:
    with open(work_dir / 'cape_metrics.json', encoding='utf-8') as f:
        return json.load(f)['metrics']


@pytest.fixture(scope='module')
def single_run(tmp_path_factory):
    """Two epochs in one process; checkpoints after each epoch; validation after epoch 2."""
    work = tmp_path_factory.mktemp('single')
    _run([sys.executable, 'tools/train.py', TINY_CFG, '--work-dir', str(work),
          '--cfg-options', *MINI_ROOT])
    return work


def _assert_same_state(a: dict, b: dict, atol=0.0):
    assert a['meta']['epoch'] == b['meta']['epoch']
    assert a['meta']['iter'] == b['meta']['iter']
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for k in a['state_dict']:
        torch.testing.assert_close(a['state_dict'][k], b['state_dict'][k], atol=atol, rtol=0)
    opt_a, opt_b = a['optimizer']['state'], b['optimizer']['state']
    assert opt_a.keys() == opt_b.keys()
    for pid in opt_a:
        for name in opt_a[pid]:
            torch.testing.assert_close(opt_a[pid][name], opt_b[pid][name], atol=atol, rtol=0)
    assert a['optimizer']['param_groups'][0]['lr'] == pytest.approx(
        b['optimizer']['param_groups'][0]['lr'])
    assert a['param_schedulers'] == b['param_schedulers']


def test_train_saves_weights_only_checkpoints(single_run):
    ckpt = _load(single_run / 'epoch_2.pth')  # weights_only=True must work (torch >= 2.6)
    assert ckpt['meta']['epoch'] == 2
    # 19 train categories with <= 40 keypoints x 2 episodes = 38 episodes -> 10 batches of 4
    assert ckpt['meta']['iter'] == 2 * 10
    first = _load(single_run / 'epoch_1.pth')
    moved = sum((ckpt['state_dict'][k] - first['state_dict'][k]).abs().sum().item()
                for k in ckpt['state_dict'])
    assert moved > 0, 'training did not change the weights'
    metrics = _metrics(single_run)
    assert 0 < metrics['PCK@0.2'] <= 1 and metrics['num_pairs'] == 38


def test_resume_reproduces_uninterrupted_run(single_run, tmp_path):
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    # resume from the epoch-1 checkpoint of the uninterrupted run
    _run([sys.executable, 'tools/train.py', TINY_CFG, '--work-dir', str(resumed), '--resume',
          str(single_run / 'epoch_1.pth'), '--cfg-options', *MINI_ROOT])
    _assert_same_state(_load(single_run / 'epoch_2.pth'), _load(resumed / 'epoch_2.pth'))
    assert _metrics(resumed) == _metrics(single_run)


def test_two_process_gloo_matches_one_process(single_run, tmp_path):
    """2 ranks x batch 2 see the same episodes per step as 1 rank x batch 4."""
    work = tmp_path / 'dist'
    _run(['bash', 'tools/dist_train.sh', TINY_CFG, '2', '--work-dir', str(work),
          '--cfg-options', 'train_dataloader.batch_size=2', *MINI_ROOT],
         env_extra={'PORT': str(free_port())})
    _assert_same_state(_load(single_run / 'epoch_2.pth'), _load(work / 'epoch_2.pth'), atol=1e-6)
    one, two = _metrics(single_run), _metrics(work)
    assert two['num_pairs'] == one['num_pairs']
    for key in ('PCK@0.05', 'PCK@0.1', 'PCK@0.2', 'mPCK', 'AUC', 'NME'):
        assert two[key] == pytest.approx(one[key], abs=1e-6), key


def test_test_tool_prints_table_and_writes_json(single_run, tmp_path):
    out = tmp_path / 'out' / 'metrics.json'
    proc = _run([sys.executable, 'tools/test.py', TINY_CFG, str(single_run / 'epoch_2.pth'),
                 '--work-dir', str(tmp_path / 'test'), '--out', str(out),
                 '--cfg-options', *MINI_ROOT])
    assert 'PCK@0.2' in proc.stdout and 'Per-category PCK@0.2' in proc.stdout
    with open(out, encoding='utf-8') as f:
        saved = json.load(f)
    # evaluating the final checkpoint reproduces the validation at the end of training
    assert saved['metrics']['PCK@0.2'] == pytest.approx(_metrics(single_run)['PCK@0.2'])
    assert len(saved['per_category']) == 12
    preds = json.loads((tmp_path / 'test' / 'cape_predictions.json').read_text())
    assert len(preds) == 38


def test_supportcopy_dist_test_matches_single(tmp_path):
    cfg = 'configs/support_copy/supportcopy_mini_1shot.py'
    root = mini_root(('test', ))  # the SupportCopy config has no train dataloader
    _run([sys.executable, 'tools/test.py', cfg, '--work-dir', str(tmp_path / 'one'),
          '--cfg-options', *root])
    _run(['bash', 'tools/dist_test.sh', cfg, 'none', '2', '--work-dir', str(tmp_path / 'two'),
          '--cfg-options', *root], env_extra={'PORT': str(free_port())})
    one, two = _metrics(tmp_path / 'one'), _metrics(tmp_path / 'two')
    assert one == two
    assert one['num_pairs'] == 500


def test_checkpoints_need_no_getattr_global(single_run):
    """Only data classes are allow-listed; our checkpoints must not need builtins.getattr."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()  # list what the file needs, allow-listed or not
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(single_run / 'epoch_1.pth')
    finally:
        torch.serialization.add_safe_globals(saved)
    assert 'builtins.getattr' not in unsafe
    assert 'mmengine.logging.history_buffer.HistoryBuffer' in unsafe  # allow-listed by us
