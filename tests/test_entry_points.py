"""Smoke tests of the entry points under tools/ and demo/, and the table that names, for every
script there, the test(s) that run it (a new script without a test fails
``test_every_entry_point_has_a_test``).

Run here, on a tiny synthetic set (6 random categories x 3 instances of 64 px, 64 px crops):
* ``tools/train.py`` for MetaPoint, FMMP and CapeFormer (ResNet-18 CPU configs): 2 epochs of one
  iteration with validation, then a resume from the epoch-1 checkpoint that reproduces epoch 2;
* ``tools/dist_test.sh`` with 2 CPU processes against ``tools/test.py`` in one process;
* ``tools/slurm_train.sh`` and ``tools/slurm_test.sh`` with a stand-in ``srun`` (one task).
Every other script is run by the test files :data:`ENTRY_POINTS` names.
"""
import ast
import json
import os
import re
import subprocess
import sys

import pytest
import torch

from metapoint.utils import allow_mmengine_checkpoint_globals
from tests.helpers import REPO, free_port, tiny_synthetic_set

THIS = 'tests/test_entry_points.py'
#: every script under tools/ and demo/ -> the tests that run it: a test file, or
#: ``file::function`` (for this file, always the function; its body names the script)
ENTRY_POINTS = {
    'demo/cape_demo.py': ['tests/test_cape_demo.py'],
    'demo/episode_demo.py': ['tests/test_cape_demo.py'],
    'demo/webapp.py': ['tests/test_webapp.py'],
    'tools/analysis/benchmark.py': ['tests/test_benchmark_tool.py'],
    'tools/analysis/get_flops.py': ['tests/test_benchmark_tool.py'],
    'tools/dataset_converters/add_mp100_skeletons.py': ['tests/test_ann_converters.py'],
    # its CLI test needs the optional MP-100 annotation files (docs/testing.md)
    'tools/dataset_converters/build_mp100_unified.py': ['tests/test_ann_converters.py'],
    'tools/dataset_converters/make_synthetic_mp100.py': ['tests/test_synthetic_generator.py'],
    'tools/deployment/export_onnx.py': ['tests/test_export_onnx.py'],
    # 2-process training of each model's CPU config; the 1- vs 2-process equality (optional data)
    'tools/dist_train.sh': ['tests/test_run_recipe.py', 'tests/test_engine.py'],
    'tools/dist_test.sh': [f'{THIS}::test_dist_test_matches_one_process', 'tests/test_engine.py'],
    'tools/misc/browse_dataset.py': ['tests/test_browse_dataset.py'],
    'tools/misc/check_mp100.py': ['tests/test_check_mp100.py'],
    # the converter CLIs on the packed official fixtures (their parity tests)
    'tools/model_converters/capeformer_official_to_ours.py': ['tests/test_capeformer_parity.py'],
    'tools/model_converters/fmmp_official_to_ours.py': ['tests/test_fmmp_parity.py'],
    'tools/model_converters/make_backbone_checkpoint.py': ['tests/test_backbones.py'],
    'tools/model_converters/metapoint_official_to_ours.py': ['tests/test_metapoint_parity.py'],
    'tools/slurm_test.sh': [f'{THIS}::test_slurm_scripts_with_a_stand_in_srun'],
    'tools/slurm_train.sh': [f'{THIS}::test_slurm_scripts_with_a_stand_in_srun'],
    # every model with random weights and --show-dir; the quiet console; after training here
    'tools/test.py': ['tests/test_visualization_hook.py', 'tests/test_quiet_logging.py',
                      f'{THIS}::test_dist_test_matches_one_process'],
    'tools/train.py': [f'{THIS}::test_train_then_resume', 'tests/test_quiet_logging.py',
                       'tests/test_engine.py'],
}

CONFIGS = {
    'metapoint': 'configs/metapoint/metapoint_r18_1xb8_synthetic-real-split1_1shot_cpu.py',
    'fmmp': 'configs/fmmp/fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu.py',
    'capeformer': 'configs/capeformer/capeformer_r18_1xb8_synthetic-real-split1_1shot_cpu.py',
}
TINY_CFG = 'tests/fixtures/tiny_mini.py'


# ------------------------------------------------------------------------------ the table
def _scripts():
    return sorted(str(p.relative_to(REPO)) for top in ('tools', 'demo')
                  for p in (REPO / top).rglob('*')
                  if p.suffix in ('.py', '.sh') and p.is_file() and '__pycache__' not in p.parts
                  and p.name != '__init__.py')


def _mentions(text: str, script: str, scripts) -> bool:
    """``text`` names ``script`` by its path, or by its file name when no other script has it."""
    if script in text:
        return True
    name = script.rsplit('/', 1)[-1]
    unique = sum(s.rsplit('/', 1)[-1] == name for s in scripts) == 1
    return unique and re.search(rf'(?<![\w.-]){re.escape(name)}', text) is not None


def _function_source(path, name):
    tree = ast.parse(path.read_text(encoding='utf-8'))
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return ast.get_source_segment(path.read_text(encoding='utf-8'), node)
    return None


def test_every_entry_point_has_a_test():
    scripts = _scripts()
    assert len(scripts) >= 20, scripts  # the walk found the tools
    untested = sorted(set(scripts) - set(ENTRY_POINTS))
    assert not untested, f'scripts without a test (add one and list it in ENTRY_POINTS): ' \
                         f'{untested}'
    gone = sorted(set(ENTRY_POINTS) - set(scripts))
    assert not gone, f'ENTRY_POINTS lists scripts that do not exist: {gone}'
    problems = []
    for script, tests in ENTRY_POINTS.items():
        assert tests, script
        for test in tests:
            file, _, function = test.partition('::')
            path = REPO / file
            if not path.is_file():
                problems.append(f'{script}: {file} does not exist')
                continue
            if function:
                text = _function_source(path, function)
                if text is None:
                    problems.append(f'{script}: {file} has no function {function}')
                    continue
            elif file == THIS:
                problems.append(f'{script}: name the function of {THIS} that runs it')
                continue
            else:
                text = path.read_text(encoding='utf-8')
            if not _mentions(text, script, scripts):
                problems.append(f'{script}: {test} does not name it')
    assert not problems, '\n'.join(problems)


def test_the_table_check_finds_what_is_missing():
    """The mention rule itself: the path, or an unambiguous file name as a whole word."""
    scripts = ['tools/train.py', 'tools/test.py', 'tools/misc/check_mp100.py', 'a/x.py', 'b/x.py']
    assert _mentions("run 'tools/test.py' here", 'tools/test.py', scripts)
    assert _mentions("REPO / 'misc' / 'check_mp100.py'", 'tools/misc/check_mp100.py', scripts)
    assert not _mentions('conftest.py', 'tools/test.py', scripts)
    assert not _mentions('the test_check_mp100.py file', 'tools/misc/check_mp100.py', scripts)
    assert not _mentions("'x.py'", 'a/x.py', scripts)  # ambiguous: b/x.py too
    assert _mentions("'a/x.py'", 'a/x.py', scripts)
    assert _function_source(REPO / THIS, 'test_train_then_resume') is not None
    assert _function_source(REPO / THIS, 'no_such_function') is None


# ------------------------------------------------------------------------- tiny data & runs
@pytest.fixture(scope='module')
def tiny_set(tmp_path_factory):
    """6 random categories x 3 instances at 64 px: split 1 trains on 4, tests category 5."""
    return tiny_synthetic_set(tmp_path_factory.mktemp('entry_set'))


def _model_opts(root, episodes=1):
    """A CPU config on the tiny set: 64 px crops, one iteration of 2 episodes per epoch (2 of the
    4 training categories), ``episodes`` evaluation episodes of 2 queries; no best-checkpoint
    copy."""
    opts = ['train_dataloader.dataset.pipeline.3.input_size=(64,64)',
            'train_dataloader.dataset.pipeline.4.heatmap_size=(16,16)',
            'train_dataloader.dataset.valid_class_ids=[1,2]',
            'train_dataloader.sampler.episodes_per_category=1', 'total_batch_size=2',
            'default_hooks.checkpoint.save_best=None']
    for loader in ('train', 'val', 'test'):
        opts.append(f'{loader}_dataloader.dataset.data_root={root}')
    for loader in ('val', 'test'):
        ds = f'{loader}_dataloader.dataset'
        opts += [f'{ds}.pipeline.2.input_size=(64,64)', f'{ds}.pipeline.3.heatmap_size=(16,16)',
                 f'{ds}.num_episodes={episodes}', f'{ds}.num_queries=2']
    return opts


def _tool(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f'_{name}_entry_point', REPO / 'tools' /
                                                  f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _load(path):
    allow_mmengine_checkpoint_globals()
    return torch.load(path, map_location='cpu', weights_only=True)


def _metrics(work_dir):
    return json.loads((work_dir / 'cape_metrics.json').read_text(encoding='utf-8'))['metrics']


def _env():
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=f'{REPO}{os.pathsep}{os.environ.get("PYTHONPATH", "")}')
    env.pop('CUDA_VISIBLE_DEVICES', None)
    return env


def _shell(args, env, timeout=300):
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f'{args}:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}'
    return proc


@pytest.fixture(scope='module')
def trained(tiny_set, tmp_path_factory):
    """Model name -> work dir of 2 epochs of ``tools/train.py`` (1 iteration each, a checkpoint
    after each epoch, validation after epoch 2); trained on first use."""
    train = _tool('train')
    runs = {}

    def get(name):
        if name not in runs:
            work = tmp_path_factory.mktemp(f'train_{name}')
            train.main([CONFIGS[name], '--work-dir', str(work), '--cfg-options',
                        *_model_opts(tiny_set), 'train_cfg.max_epochs=2',
                        'train_cfg.val_interval=2', 'default_hooks.checkpoint.interval=1',
                        f'experiment_name=entry_{name}_{work.name}'])
            runs[name] = work
        return runs[name]

    yield get
    for work in runs.values():  # 90-180 MB each (weights and Adam state)
        _remove_checkpoints(work)


def _remove_checkpoints(work_dir):
    for path in work_dir.glob('*.pth'):
        path.unlink()


# ------------------------------------------------------------------------------ the tests
@pytest.mark.parametrize('name', list(CONFIGS))
def test_train_then_resume(name, trained, tiny_set, tmp_path, capsys):
    """``tools/train.py``: 2 epochs train and validate; resuming the epoch-1 checkpoint in another
    work dir (without validation) gives the same epoch-2 weights and optimizer state."""
    work = trained(name)
    first, last = _load(work / 'epoch_1.pth'), _load(work / 'epoch_2.pth')
    assert (first['meta']['epoch'], first['meta']['iter']) == (1, 1)
    assert (last['meta']['epoch'], last['meta']['iter']) == (2, 2)
    moved = sum((last['state_dict'][k].float() - first['state_dict'][k].float()).abs().sum()
                for k in last['state_dict'])
    assert moved > 0, 'training did not change the weights'
    metrics = _metrics(work)
    assert metrics['num_pairs'] == 2 and 0 <= metrics['PCK@0.2'] <= 1
    capsys.readouterr()

    resumed = tmp_path / 'resumed'
    _tool('train').main([CONFIGS[name], '--work-dir', str(resumed), '--resume',
                         str(work / 'epoch_1.pth'), '--no-validate', '--cfg-options',
                         *_model_opts(tiny_set), 'train_cfg.max_epochs=2',
                         'default_hooks.checkpoint.interval=1',
                         f'experiment_name=entry_{name}_{tmp_path.name}'])
    shown = capsys.readouterr().out
    assert 'resumed epoch: 1, iter: 1' in shown and 'Epoch(train) [2][1/1]' in shown
    again = _load(resumed / 'epoch_2.pth')
    assert not (resumed / 'epoch_1.pth').exists()
    assert (again['meta']['epoch'], again['meta']['iter']) == (2, 2)
    for key, value in last['state_dict'].items():
        torch.testing.assert_close(again['state_dict'][key], value, rtol=0, atol=1e-6, msg=key)
    for pid, state in last['optimizer']['state'].items():
        for k, v in state.items():
            torch.testing.assert_close(again['optimizer']['state'][pid][k], v, rtol=0, atol=1e-6)
    _remove_checkpoints(resumed)


def test_dist_test_matches_one_process(trained, tiny_set, tmp_path):
    """``bash tools/dist_test.sh CONFIG CKPT 2`` (2 gloo CPU processes, one episode each) gives
    the metrics of ``tools/test.py`` in one process, and prints the table."""
    ckpt = str(trained('metapoint') / 'epoch_2.pth')
    config, opts = CONFIGS['metapoint'], _model_opts(tiny_set, episodes=2)
    one = tmp_path / 'one'
    _tool('test').main([config, ckpt, '--work-dir', str(one), '--cfg-options', *opts,
                        f'experiment_name=entry_test_{tmp_path.name}'])
    two = tmp_path / 'two'
    proc = _shell(['bash', 'tools/dist_test.sh', config, ckpt, '2', '--work-dir', str(two),
                   '--cfg-options', *opts], dict(_env(), PORT=str(free_port())))
    # the quiet console: no environment dump, the per-category table once
    assert proc.stdout.count('Per-category PCK@0.2') == 1, proc.stdout
    assert 'System environment:' not in proc.stdout
    assert _metrics(one)['num_pairs'] == 4
    assert _metrics(two) == pytest.approx(_metrics(one), rel=1e-6, abs=1e-6)  # EPE in pixels
    preds = json.loads((two / 'cape_predictions.json').read_text(encoding='utf-8'))
    assert len(preds) == 4


SRUN = """#!/usr/bin/env bash
# stand-in for slurm's srun: records its options, runs the command as the single task
echo "$@" >> "$SRUN_LOG"
while [ $# -gt 0 ] && [ "$1" != python ]; do shift; done
shift
export SLURM_PROCID=0 SLURM_NTASKS=1 SLURM_LOCALID=0 SLURM_NODELIST=localhost
exec "$STANDIN_PYTHON" "$@"
"""


def test_slurm_scripts_with_a_stand_in_srun(tiny_set, tmp_path):
    """``tools/slurm_train.sh`` then ``tools/slurm_test.sh`` (the tiny test estimator) under a
    stand-in ``srun``: the slurm options they pass, and a run under ``--launcher slurm``."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(SRUN)
    (bin_dir / 'srun').chmod(0o755)
    srun_log = tmp_path / 'srun.log'
    env = dict(_env(), PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', GPUS='1',
               GPUS_PER_NODE='1', CPUS_PER_TASK='2', SRUN_LOG=str(srun_log),
               STANDIN_PYTHON=sys.executable, MASTER_ADDR='127.0.0.1',
               MASTER_PORT=str(free_port()))
    opts = ['train_dataloader.batch_size=2', 'train_dataloader.sampler.episodes_per_category=1',
            'train_cfg.max_epochs=1', 'val_dataloader.dataset.num_queries=2',
            'test_dataloader.dataset.num_queries=2', 'test_dataloader.dataset.num_episodes=1']
    for loader in ('train', 'val', 'test'):
        ds = f'{loader}_dataloader.dataset'
        opts += [f'{ds}.data_root={tiny_set}', f'{ds}.ann_file=annotations/unified_ann_file.json',
                 f'{ds}.split=1']
    work = tmp_path / 'work'
    train = _shell(['bash', 'tools/slurm_train.sh', 'part', 'job_a', TINY_CFG, str(work),
                    '--no-validate', '--cfg-options', *opts], env)
    assert 'Epoch(train) [1][2/2]' in train.stdout
    ckpt = _load(work / 'epoch_1.pth')
    assert (ckpt['meta']['epoch'], ckpt['meta']['iter']) == (1, 2)
    # the launcher was slurm (the log file records the runtime environment)
    log = next(work.glob('*/*.log')).read_text(encoding='utf-8')
    assert 'Distributed launcher: slurm' in log

    test = _shell(['bash', 'tools/slurm_test.sh', 'part', 'job_b', TINY_CFG,
                   str(work / 'epoch_1.pth'), '--work-dir', str(tmp_path / 'test'),
                   '--cfg-options', *opts], dict(env, MASTER_PORT=str(free_port())))
    assert 'Per-category PCK@0.2' in test.stdout
    assert _metrics(tmp_path / 'test')['num_pairs'] == 2
    calls = srun_log.read_text().splitlines()
    assert len(calls) == 2
    for call, job in zip(calls, ('job_a', 'job_b')):
        for option in ('-p part', f'--job-name={job}', '--gres=gpu:1', '--ntasks=1',
                       '--ntasks-per-node=1', '--cpus-per-task=2', '--launcher=slurm'):
            assert option in call, (option, call)
