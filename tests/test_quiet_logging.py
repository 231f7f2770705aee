"""The quiet console of tools/train.py and tools/test.py (metapoint/utils/quiet_logging.py): the
console shows progress, warnings and results, not mmengine's environment dump, the config, the
hook table or the per-parameter optimizer lines; ``--verbose`` shows them; the log file in the
work dir has everything either way; ``METAPOINT_VERBOSE=1 bash scripts.sh quickstart`` passes
``--verbose`` on.

The runs use the tiny test estimator (tests/fixtures/tiny_estimator.py, config
tests/fixtures/tiny_mini.py) on a tiny synthetic set, in-process: a second or two each.
"""
import contextlib
import importlib.util
import io
import logging
import os
import re
import subprocess

import pytest
import torch
from mmengine.logging import MMLogger

from metapoint.utils import (ConsoleNoiseFilter, allow_mmengine_checkpoint_globals,
                             is_console_noise, quiet_console)
from tests.helpers import REPO, tiny_synthetic_set

TINY_CFG = 'tests/fixtures/tiny_mini.py'
#: the dumps and tables kept off the quiet console, as they start in the log
DUMPS = ('System environment:', 'Runtime environment:', 'Config:\n',
         'Hooks will be executed in the following order:', 'paramwise_options -- ')
#: most lines a quiet tiny train (+ validation) may print (21 at the time of writing: the
#: dataset lines, 2 iteration lines, checkpoint lines, the validation table and metrics)
MAX_QUIET_TRAIN_LINES = 30
MAX_QUIET_TEST_LINES = 30
#: every training run: a log line per iteration; per-parameter optimizer options, so that the
#: optimizer constructor logs its lines
TRAIN_OPTS = ('default_hooks.logger.interval=1',
              'optim_wrapper.paramwise_cfg.custom_keys.head.lr_mult=2.0')


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(f'_{name}_tool_quiet', REPO / 'tools' /
                                                  f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


train_tool = _load_tool('train')
test_tool = _load_tool('test')


def _record(msg, level=logging.INFO):
    return logging.LogRecord('mmengine', level, __file__, 1, msg, None, None)


# ------------------------------------------------------------------------------ the filter
@pytest.mark.parametrize('msg, level, noise', [
    ('\n' + '-' * 60 + '\nSystem environment:\n    sys.platform: linux', logging.INFO, True),
    ('Config:\nmodel = dict(type="MetaPoint")', logging.INFO, True),
    ('Hooks will be executed in the following order:\nbefore_run:', logging.INFO, True),
    ('paramwise_options -- backbone.conv1.weight:lr_mult=3.0', logging.INFO, True),
    ('Distributed training is not used, all SyncBatchNorm (SyncBN) layers ...', logging.INFO,
     True),
    ('Failed to search registry with scope "metapoint" in the "log_processor" registry tree.',
     logging.WARNING, True),
    ('backbone.conv1.weight is skipped since its requires_grad=False', logging.WARNING, True),
    # progress, results and real warnings stay
    ('Epoch(train) [1][10/18]  lr: 1.0e-04  loss: 1.2', logging.INFO, False),
    ('Saving checkpoint at 2 epochs', logging.INFO, False),
    ('Checkpoints will be saved to /somewhere.', logging.INFO, False),
    ('TorchvisionResNet-18: pretrained=None, the backbone is randomly initialised.',
     logging.WARNING, False),
    ('Config: something went wrong', logging.WARNING, False),
    # never an error, whatever it says
    ('paramwise_options -- x:lr=1', logging.ERROR, False),
    ('Failed to search registry with scope "x"', logging.ERROR, False),
])
def test_noise_records(msg, level, noise):
    assert is_console_noise(_record(msg, level)) is noise


def test_filter_on_the_console_handler_only(tmp_path):
    """quiet_console filters the logger's stream handler; its file handler gets every record."""
    log_file = tmp_path / 'run.log'
    console = io.StringIO()
    with contextlib.redirect_stdout(console):  # the stream handler takes sys.stdout
        logger = MMLogger.get_instance(f'quiet_unit_{tmp_path.name}', log_file=str(log_file))
    quiet_console(logger)
    quiet_console(logger, ('\nPer-category ',))  # no second filter: the start is added
    stream = [h for h in logger.handlers if type(h) is logging.StreamHandler]
    files = [h for h in logger.handlers if isinstance(h, logging.FileHandler)]
    assert len(stream) == 1 and len(files) == 1
    assert [f.extra_info for f in stream[0].filters if isinstance(f, ConsoleNoiseFilter)] == \
        [('\nPer-category ',)]
    assert not any(isinstance(f, ConsoleNoiseFilter) for f in files[0].filters)
    logger.info('Config:\nmodel = dict()')
    logger.info('paramwise_options -- head.weight:lr_mult=2.0')
    logger.info('Epoch(train) [1][1/2]  loss: 0.5')
    logger.warning('a real warning')
    logger.info('\nPer-category PCK@0.2 (%)\n| table |')
    logger.warning('\nPer-category ... only INFO records are dropped by an extra start')
    logger.error('paramwise_options -- an error is always shown')
    files[0].flush()
    shown, kept = console.getvalue(), log_file.read_text()
    assert 'Config:' not in shown and 'paramwise_options -- head' not in shown
    assert 'Epoch(train) [1][1/2]' in shown and 'a real warning' in shown
    assert 'an error is always shown' in shown
    assert '| table |' not in shown and 'only INFO records' in shown
    for text in ('Config:\nmodel = dict()', 'paramwise_options -- head.weight', 'Epoch(train)',
                 'a real warning', 'an error is always shown', '| table |'):
        assert text in kept, text
    for handler in files:
        handler.close()
    # the previous logger is the current one again (later tests log through it)
    MMLogger._instance_dict.pop(logger.instance_name)


# ----------------------------------------------------------------------- the tools end to end
@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
    """6 random categories x 3 instances at 64 px (split 1: 4 train categories, 1 test)."""
    return tiny_synthetic_set(tmp_path_factory.mktemp('quiet_set'))


def _data_opts(root):
    """tests/fixtures/tiny_mini.py on the synthetic set: 2 iterations of 2 episodes, one
    evaluation episode of 2 queries."""
    opts = []
    for loader in ('train', 'val', 'test'):
        ds = f'{loader}_dataloader.dataset'
        opts += [f'{ds}.data_root={root}', f'{ds}.ann_file=annotations/unified_ann_file.json',
                 f'{ds}.split=1']
    opts += ['train_dataloader.batch_size=2', 'train_dataloader.sampler.episodes_per_category=1',
             'val_dataloader.dataset.num_episodes=1', 'val_dataloader.dataset.num_queries=2',
             'test_dataloader.dataset.num_episodes=1', 'test_dataloader.dataset.num_queries=2']
    return opts


def _run(tool, argv):
    """Run ``tool.main(argv)``; (its console output, stdout and stderr, as one text)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        tool.main(argv)
    return out.getvalue() + err.getvalue()


def _log_file(work_dir):
    """The mmengine log file of the (single) run in ``work_dir``."""
    logs = sorted(work_dir.glob('*/*.log'))
    assert len(logs) == 1, logs
    return logs[0].read_text(encoding='utf-8')


def _lines(text):
    return [line for line in re.split(r'[\r\n]+', text) if line.strip()]


@pytest.fixture(scope='module')
def train_runs(tiny_set, tmp_path_factory):
    """The same tiny training (1 epoch, 2 iterations, then validation) quiet and verbose."""
    runs = {}
    for mode in ('quiet', 'verbose'):
        work = tmp_path_factory.mktemp(f'train_{mode}')
        argv = [TINY_CFG, '--work-dir', str(work), '--cfg-options', *_data_opts(tiny_set),
                'train_cfg.max_epochs=1', 'train_cfg.val_interval=1',
                *TRAIN_OPTS, f'experiment_name=quiet_train_{mode}_{work.name}']
        runs[mode] = (work, _run(train_tool, argv + (['--verbose'] if mode == 'verbose' else [])))
    return runs


def test_quiet_train_shows_progress_not_the_dumps(train_runs):
    work, shown = train_runs['quiet']
    for dump in DUMPS:
        assert dump not in shown, dump
    for progress in ('Epoch(train) [1][1/2]', 'Epoch(train) [1][2/2]', 'Saving checkpoint at 1',
                     'Epoch(val) [1][1/1]', 'PCK@0.2', 'Checkpoints will be saved to'):
        assert progress in shown, progress
    assert len(_lines(shown)) <= MAX_QUIET_TRAIN_LINES, shown
    # the log file has everything
    log = _log_file(work)
    for dump in DUMPS:
        assert dump in log, dump
    assert 'paramwise_options -- head.weight:lr_mult=2.0' in log
    assert 'Epoch(train) [1][2/2]' in log and 'Epoch(val) [1][1/1]' in log
    assert (work / 'epoch_1.pth').is_file()


def test_verbose_train_shows_the_dumps(train_runs):
    quiet_work, quiet = train_runs['quiet']
    work, shown = train_runs['verbose']
    allow_mmengine_checkpoint_globals()
    for dump in DUMPS:
        assert dump in shown, dump
    assert 'paramwise_options -- head.weight:lr_mult=2.0' in shown
    assert 'Epoch(train) [1][2/2]' in shown and 'Epoch(val) [1][1/1]' in shown
    assert len(_lines(shown)) > len(_lines(quiet)) + 100  # the config alone is > 100 lines
    log = _log_file(work)
    for dump in DUMPS:
        assert dump in log, dump
    # the same training either way
    a = torch.load(quiet_work / 'epoch_1.pth', map_location='cpu', weights_only=True)
    b = torch.load(work / 'epoch_1.pth', map_location='cpu', weights_only=True)
    for key, value in a['state_dict'].items():
        torch.testing.assert_close(value, b['state_dict'][key], rtol=0, atol=0)


def test_quiet_resume_still_shows_warnings(train_runs, tiny_set, tmp_path):
    """Resuming the quiet run's checkpoint with another seed: mmengine's seed warning (a runner
    logger record) is on the quiet console, as is the resume progress."""
    trained, _ = train_runs['quiet']
    work = tmp_path / 'resumed'
    shown = _run(train_tool, [
        TINY_CFG, '--work-dir', str(work), '--resume', str(trained / 'epoch_1.pth'),
        '--seed', '1', '--no-validate', '--cfg-options', *_data_opts(tiny_set),
        'train_cfg.max_epochs=2', *TRAIN_OPTS, f'experiment_name=quiet_resume_{tmp_path.name}'])
    assert re.search(r'WARNING - The value of random seed in the checkpoint "0" is different '
                     r'from the value in `randomness` config "1"', shown), shown
    assert 'resumed epoch: 1, iter: 2' in shown and 'Epoch(train) [2][2/2]' in shown
    for dump in DUMPS[:4]:
        assert dump not in shown, dump
    assert 'random seed in the checkpoint' in _log_file(work)
    assert (work / 'epoch_2.pth').is_file()


@pytest.mark.parametrize('mode', ['quiet', 'verbose'])
def test_test_tool_console_and_log_file(mode, train_runs, tiny_set, tmp_path):
    """tools/test.py with a checkpoint that lacks one weight: mmengine's load warning (printed,
    not logged) is shown either way, the tables are printed once (twice with --verbose), the
    dumps only with --verbose; the log file has everything."""
    trained, _ = train_runs['quiet']
    allow_mmengine_checkpoint_globals()
    ckpt = torch.load(trained / 'epoch_1.pth', map_location='cpu', weights_only=True)
    del ckpt['state_dict']['head.bias']
    partial = tmp_path / 'partial.pth'
    torch.save(dict(state_dict=ckpt['state_dict']), partial)
    work = tmp_path / 'test'
    argv = [TINY_CFG, str(partial), '--work-dir', str(work), '--cfg-options',
            *_data_opts(tiny_set), f'experiment_name=quiet_test_{mode}_{tmp_path.name}']
    shown = _run(test_tool, argv + (['--verbose'] if mode == 'verbose' else []))
    assert re.search(r'The model and loaded state dict do not match exactly\s*'
                     r'missing keys in source state_dict: head\.bias', shown), shown
    assert 'Epoch(test) [1/1]' in shown and 'CAPE results' in shown  # tools/test.py's table
    # the metric logs the per-category table, tools/test.py prints it again with the summary:
    # once on the quiet console, twice with --verbose, once in the log file
    assert shown.count('Per-category PCK@0.2') == (1 if mode == 'quiet' else 2), shown
    dumps_shown = [d for d in DUMPS[:4] if d in shown]  # a test run builds no optimizer
    if mode == 'quiet':
        assert dumps_shown == [] and len(_lines(shown)) <= MAX_QUIET_TEST_LINES, shown
    else:
        assert dumps_shown == list(DUMPS[:4])
    log = _log_file(work)
    for dump in DUMPS[:4]:
        assert dump in log, dump
    assert 'Epoch(test) [1/1]' in log and log.count('Per-category PCK@0.2') == 1


@pytest.mark.parametrize('value, passed', [(None, False), ('0', False), ('1', True)])
def test_quickstart_passes_verbose_through(value, passed, tmp_path):
    """``METAPOINT_VERBOSE=1 bash scripts.sh quickstart`` gives each tool --verbose (PYTHON=echo
    prints the commands instead of running them)."""
    (tmp_path / 'annotations').mkdir()
    (tmp_path / 'annotations' / 'unified_ann_file.json').write_text('{}')
    env = dict(os.environ, PYTHON='echo', SYNTH_DIR=str(tmp_path))
    env.pop('METAPOINT_VERBOSE', None)
    if value is not None:
        env['METAPOINT_VERBOSE'] = value
    proc = subprocess.run(['bash', 'scripts.sh', 'quickstart'], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    commands = proc.stdout.splitlines()
    assert [c.split()[0] for c in commands] == ['tools/test.py', 'tools/train.py', 'tools/test.py']
    assert all(('--verbose' in c.split()) is passed for c in commands), commands
