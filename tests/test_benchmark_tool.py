"""The benchmark tools (tools/analysis/benchmark.py, get_flops.py; docs/benchmarks.md).

Correctness, not speed: on the official split-1 configs of MetaPoint, FMMP and CapeFormer (the
backbone swapped for a ResNet-18, 64x64 crops, as the config tests do), the episode-batched
evaluation the benchmark times gives the same points as the per-pair protocol it compares with;
the CLIs run on a tiny setting and write / print what docs/benchmarks.md documents.
"""
import json
import os
import subprocess
import sys

import pytest
import torch

from metapoint.utils.benchmarking import (FlopCounter, backbone_inputs, build_model,
                                          count_flops, episode_points, flops_table,
                                          load_config, per_pair_points, perturb_head_weights,
                                          synthetic_episodes, time_round_robin)
from tests.helpers import REPO

OFFICIAL = {
    'metapoint': 'configs/metapoint/metapoint_r50_4xb16_mp100-split1_1shot.py',
    'fmmp': 'configs/fmmp/fmmp_r50_1xb16_mp100-split1_1shot.py',
    'capeformer': 'configs/capeformer/capeformer_r50_1xb16_mp100-split1_1shot.py',
}
TINY = ['--backbone-depth', '18', '--input-size', '64', '64', '--threads', '1',
        '--iters', '1', '--warmup', '0']


def _tiny(name):
    cfg = load_config(str(REPO / OFFICIAL[name]))
    return cfg, build_model(cfg, backbone_depth=18)


@pytest.mark.parametrize('name', list(OFFICIAL))
def test_episode_batched_equals_per_pair_predictions(name):
    """B=2 episodes x Q=3 queries, 2 shots: one batched forward == 6 one-pair forwards."""
    cfg, model = _tiny(name)
    perturb_head_weights(model)  # FMMP's zero-initialised heads predict constant points
    batch = synthetic_episodes(cfg, model, shots=2, queries=3, batch=2, train=False,
                               input_size=(64, 64))
    assert batch.num_slots == cfg.model.max_kpt_num
    if name == 'fmmp':
        assert batch.support_neighbour_idx is not None
    if name == 'capeformer':
        assert batch.support_heatmaps is not None and batch.query_heatmaps is not None
    model.eval()
    with torch.no_grad():
        together = episode_points(model, batch)
        pairs = per_pair_points(model, batch)
    assert together.shape == (2, 3, cfg.model.max_kpt_num, 2)
    torch.testing.assert_close(together, pairs, atol=1e-5, rtol=0)
    # different queries give different points (the comparison is not vacuous)
    assert (together[:, 0] - together[:, 1]).abs().max() > 1e-4


def test_backbone_inputs_follow_the_image_calls():
    """Per-slot models: one call of B images per shot / query slot; FMMP: one call."""
    cfg, model = _tiny('metapoint')
    batch = synthetic_episodes(cfg, model, shots=2, queries=1, batch=3, train=True,
                               input_size=(64, 64))
    calls = backbone_inputs(model, batch)
    assert [c.shape[0] for c in calls] == [3, 3, 3]
    cfg, model = _tiny('fmmp')
    batch = synthetic_episodes(cfg, model, shots=2, queries=1, batch=3, train=True,
                               input_size=(64, 64))
    assert [c.shape[0] for c in backbone_inputs(model, batch)] == [9]


def test_flop_counter_counts_matmul_and_conv_forward_and_backward():
    lin = torch.nn.Linear(8, 4, bias=False)
    x = torch.randn(5, 8)
    c = count_flops(lambda: lin(x).sum(), backward=lambda y: y.backward())
    assert c.total('forward') == 2 * 5 * 8 * 4
    assert c.total('backward') == 2 * 5 * 8 * 4  # grad of the weight only (x needs no grad)
    conv = torch.nn.Conv2d(3, 6, 3, padding=1, bias=False)
    c = count_flops(lambda: conv(torch.randn(2, 3, 10, 10)))
    assert c.total() == 2 * 2 * 6 * 10 * 10 * 3 * 3 * 3


def test_round_robin_reports_a_failing_variant():
    calls = []

    def bad():
        raise ValueError('boom')
    res = time_round_robin({'ok': lambda: calls.append(1), 'bad': bad}, iters=3, warmup=1)
    assert len(calls) == 4 and len(res['ok']['times_s']) == 3
    assert res['ok']['median_s'] is not None and res['ok']['error'] is None
    assert res['bad']['median_s'] is None and 'ValueError: boom' in res['bad']['error']


def _ratios(section):
    return {k: v for k, v in section.items() if k.startswith('ratio_')}


def _check_figure(f):
    assert set(f) >= {'value', 'unit'} and f['unit'], f


def test_cli_eval_and_train_write_the_documented_json(tmp_path):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, str(REPO / 'tools/analysis/benchmark.py'),
           str(REPO / OFFICIAL['fmmp']), '--mode', 'eval', '--shots', '1', '--queries', '2',
           '--batch', '1', '--matmul-size', '128', '--json', str(out)] + TINY
    for mode in ('eval', 'train'):
        cmd[cmd.index('--mode') + 1] = mode
        proc = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=600,
                              env=dict(os.environ, OMP_NUM_THREADS='1'))
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert 'ratio_' in proc.stdout
        result = json.loads(out.read_text())
        assert result['model'] == 'FMMP' and result['settings']['input_size'] == [64, 64]
        assert {'cpu', 'torch_threads', 'device'} <= set(result['machine'])
        section = result[mode]
        ratios = _ratios(section)
        for f in ratios.values():
            assert f['unit'] == 'x' and f['value'] is not None and f['value'] > 0
        if mode == 'eval':
            assert set(section['variants']) == {'episode', 'pair'}
            assert 'ratio_episode_vs_pair' in ratios
            for v in section['variants'].values():
                for key in ('median_s', 'pairs_per_s', 'episodes_per_s'):
                    _check_figure(v[key])
                assert 'error' not in v
            assert section['max_abs_diff_episode_vs_pair']['value'] < 1e-5
        else:
            assert {'ratio_step_vs_backbone', 'ratio_train_flops_vs_matmul'} <= set(ratios)
            assert set(section['variants']) == {'step', 'backbone', 'matmul'}
            for key in ('step', 'forward', 'backbone_step', 'achieved_step_flops_per_s'):
                _check_figure(section['flops'][key])
                assert section['flops'][key]['value'] > 0
            assert section['flops']['step']['value'] > section['flops']['forward']['value']
            _check_figure(section['matmul']['flops_per_s'])
            assert section['batch']['backbone_images'] == 2


def test_cli_data_mode_skips_without_data(tmp_path):
    """The official configs' data root is absent on a clone: a clear message, no crash."""
    from metapoint.utils.benchmarking import Benchmark, BenchmarkSettings
    bench = Benchmark(str(REPO / OFFICIAL['metapoint']), BenchmarkSettings(
        backbone_depth=18, input_size=(64, 64), data_root=str(tmp_path / 'nowhere')))
    section = bench.run_data(eval_section={}, train_section={})
    assert 'does not exist' in section['skipped'] and '--data-root' in section['skipped']


def test_get_flops_parts_sum_to_the_total():
    cmd = [sys.executable, str(REPO / 'tools/analysis/get_flops.py'),
           str(REPO / OFFICIAL['capeformer']), '--input-size', '64', '64',
           '--backbone-depth', '18', '--queries', '2']
    proc = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith('part'))
    rows = [line.split() for line in lines[head + 2:] if line and not line.startswith('-')
            and not line.startswith('not counted')]
    total = next(r for r in rows if r[0] == 'total')
    parts = [r for r in rows if r[0] != 'total']
    assert {'backbone', 'encoder', 'decoder'} <= {r[0] for r in parts}
    # columns from the right: share, GFLOPs, params (M)
    assert sum(float(r[-2]) for r in parts) == pytest.approx(float(total[-2]), abs=2e-3)
    assert sum(float(r[-3]) for r in parts) == pytest.approx(float(total[-3]), abs=2e-3)
    assert float(total[-2]) > 0


@pytest.mark.parametrize('train', [False, True])
def test_flops_table_rows_sum_exactly(train):
    cfg, model = _tiny('metapoint')
    batch = synthetic_episodes(cfg, model, shots=1, queries=1, batch=1, train=train,
                               input_size=(64, 64))
    table = flops_table(model, batch, train=train)
    for key in ('params', 'flops_forward', 'flops_backward'):
        assert sum(r[key] for r in table['rows']) == table['total'][key]
    assert table['total']['params'] == sum(p.numel() for p in model.parameters())
    parts = {r['part'] for r in table['rows']}
    assert {'backbone', 'neck', 'meta_decoder', 'ref_decoder', 'query_enhancer'} <= parts
    assert (FlopCounter.BACKWARD in parts) == train
    if train:
        assert table['total']['flops_backward'] > table['total']['flops_forward']


def test_cli_channels_last_and_compile_variants(tmp_path):
    """--channels-last and --compile time copies of the model with its own options (here the
    neck compiled with aot_eager, quick on CPU) next to the plain one."""
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, str(REPO / 'tools/analysis/benchmark.py'),
           str(REPO / OFFICIAL['metapoint']), '--mode', 'eval', '--shots', '1', '--queries', '2',
           '--batch', '1', '--channels-last', '--compile', '--compile-parts', 'neck',
           '--compile-backend', 'aot_eager', '--json', str(out)] + TINY
    proc = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    section = json.loads(out.read_text())['eval']
    assert set(section['variants']) == {'episode', 'pair', 'episode+cl', 'pair+cl',
                                        'episode+compile', 'pair+compile'}
    for name, v in section['variants'].items():
        assert 'error' not in v, (name, v.get('error'))
    assert section['variants']['episode+compile']['setup_s']['value'] > 0
    for key in ('ratio_channels_last_vs_contiguous', 'ratio_compile_vs_eager',
                'ratio_episode_vs_pair_cl', 'ratio_episode_vs_pair_compile'):
        assert section[key]['value'] > 0, key


def test_cli_reports_a_bad_compile_part(tmp_path):
    out = tmp_path / 'bench.json'
    cmd = [sys.executable, str(REPO / 'tools/analysis/benchmark.py'),
           str(REPO / OFFICIAL['capeformer']), '--mode', 'eval', '--queries', '1',
           '--compile', '--compile-parts', 'neckk', '--json', str(out)] + TINY
    proc = subprocess.run(cmd, cwd=str(REPO), capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, OMP_NUM_THREADS='1'))
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = json.loads(out.read_text())['eval']['variants']['episode+compile']['error']
    assert "compile parts ['neckk']" in err


def test_backbone_depth_swap_refuses_a_non_resnet_backbone():
    cfg = load_config(str(REPO / 'configs/metapoint/backbones/'
                      'metapoint_dinov2-s14_4xb16_mp100-split1_1shot.py'))
    with pytest.raises(ValueError, match="this config's backbone is TimmBackbone"):
        build_model(cfg, backbone_depth=18)
