"""ONNX export of MetaPoint, FMMP and CapeFormer (tools/deployment/export_onnx.py,
metapoint.apis.onnx_export; docs/deployment.md).

Each model: a tiny config (ResNet-18, 64x64 crops, one decoder / predictor layer, random weights
with perturbed heads so FMMP's zero-initialised point heads do not predict constant points),
saved as a checkpoint, exported by the CLI, run with ONNX Runtime on the CPU on inputs other than
the export example (some support keypoints invisible, one outside the crop) and compared with
PyTorch: the same episode through the config's own test transforms, collate, data preprocessor
and the unmodified model. The pieces the graph recomputes from the runtime inputs (target
weights and heatmaps, eqdiv padding, FMMP's neighbour table, MetaPoint's assignment) are also
checked one by one against the pipeline's numpy / scipy code.
"""
import importlib.util

import numpy as np
import pytest
import torch

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')
pytest.importorskip('onnxscript')

from metapoint.apis.onnx_export import (INPUT_NAMES, EpisodeExportWrapper,  # noqa: E402
                                        ExportError, ExportSpec, export_spec, gaussian_targets,
                                        linear_sum_assignment, parse_skeleton, pipeline_points,
                                        random_inputs)
from metapoint.utils.benchmarking import build_model, load_config, perturb_head_weights  # noqa
from tests.helpers import REPO  # noqa: E402

CASES = {
    'metapoint': dict(
        config='configs/metapoint/metapoint_r18_1xb8_synthetic-random-split1_1shot_quickstart.py',
        options={'model.ref_decoder_layers': 1, 'model.enhancer_cfg.num_layers': 1},
        num_kpts=9, shots=2, extra=[]),
    'fmmp': dict(
        config='configs/fmmp/fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu.py',
        options={'model.predictor.num_layers': 1},
        num_kpts=8, shots=2, extra=['--skeleton', '0-1,1-2,2-3,1-4,4-5,0-6,6-7']),
    'capeformer': dict(
        config='configs/capeformer/capeformer_r18_1xb8_synthetic-real-split1_1shot_cpu.py',
        options={'model.encoder_cfg.num_layers': 1, 'model.decoder_cfg.num_layers': 1},
        num_kpts=6, shots=1, extra=['--normalized-input', '--static-queries', '2', '--check']),
}


def _cli():
    path = REPO / 'tools' / 'deployment' / 'export_onnx.py'
    spec = importlib.util.spec_from_file_location('export_onnx_cli', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tiny(name, tmp_path):
    """Config, model (random, perturbed heads) and its checkpoint file."""
    case = CASES[name]
    cfg = load_config(str(REPO / case['config']), case['options'])
    model = build_model(cfg).eval()
    perturb_head_weights(model, std=0.05)
    ckpt = tmp_path / f'{name}.pth'
    torch.save(dict(state_dict=model.state_dict()), ckpt)
    return cfg, model, ckpt


def _argv(name, ckpt, out, **changes):
    case = dict(CASES[name], **changes)
    options = [f'{k}={v}' for k, v in case['options'].items()]
    return [str(REPO / case['config']), str(ckpt), '--num-kpts', str(case['num_kpts']),
            '--shots', str(case['shots']), '--input-size', '64', '64', '--out', str(out),
            *(['--cfg-options', *options] if options else []), *case['extra']]


def _hard_inputs(spec, queries, seed):
    """Random inputs with an invisible support keypoint and a visible one outside the crop
    (its target weight becomes 0, as in the pipeline)."""
    inputs = random_inputs(spec, queries, seed=seed)
    inputs['support_visible'][0, 2] = 0
    inputs['support_visible'][-1, 3] = 1
    inputs['support_keypoints'][-1, 3] = (1.3, 0.5)
    return inputs


@pytest.mark.parametrize('name', list(CASES))
def test_exported_graph_matches_pytorch(name, tmp_path, capsys):
    cfg, model, ckpt = _tiny(name, tmp_path)
    case = CASES[name]
    out = tmp_path / f'{name}.onnx'
    summary = _cli().main(_argv(name, ckpt, out))
    assert summary['exporter'].startswith('dynamo') and out.is_file()
    normalized = '--normalized-input' in case['extra']
    static = '--static-queries' in case['extra']
    skeleton = case['extra'][case['extra'].index('--skeleton') + 1] \
        if '--skeleton' in case['extra'] else None
    spec = export_spec(model, cfg, case['num_kpts'], case['shots'], (64, 64), skeleton,
                       normalize=not normalized)
    k, s = spec.num_kpts, spec.shots

    sess = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
    assert [i.name for i in sess.get_inputs()] == list(INPUT_NAMES)
    shapes = {i.name: i.shape for i in sess.get_inputs()}
    assert shapes['support_imgs'] == [s, 3, 64, 64]
    assert shapes['support_keypoints'] == [s, k, 2]
    assert shapes['support_visible'] == [s, k]
    assert [o.name for o in sess.get_outputs()] == ['pred_keypoints']
    if static:
        assert shapes['query_imgs'] == [2, 3, 64, 64]
    else:
        assert isinstance(shapes['query_imgs'][0], str)  # the dynamic query axis
    meta = {p.key: p.value for p in onnx.load(str(out), load_external_data=False).metadata_props}
    assert meta['model_type'] == f'"{spec.model_type}"' and meta['num_kpts'] == str(k)
    assert meta['normalize'] == ('false' if normalized else 'true')

    for queries, seed in ([(2, 21)] if static else [(1, 21), (3, 22)]):
        inputs = _hard_inputs(spec, queries, seed)
        got = sess.run(None, inputs)[0]
        ref = pipeline_points(model, cfg, spec, *inputs.values()).numpy()
        assert got.shape == ref.shape == (queries, k, 2)
        diff = float(np.abs(got - ref).max())
        assert diff <= 1e-4, f'{name}: ONNX Runtime vs PyTorch max abs diff {diff}'
        if queries > 1:  # the predictions depend on the query image: not a vacuous match
            assert np.abs(ref[0] - ref[1]).max() > 1e-3
    # the supports matter too: moving them moves the prediction, in both
    moved = dict(inputs, support_keypoints=np.clip(inputs['support_keypoints'] + 0.15, 0, 1))
    got_moved = sess.run(None, moved)[0]
    ref_moved = pipeline_points(model, cfg, spec, *moved.values()).numpy()
    assert np.abs(got_moved - ref_moved).max() <= 1e-4
    assert np.abs(ref_moved - ref).max() > 1e-3

    if '--check' in case['extra']:
        printed = capsys.readouterr().out
        assert 'max abs diff' in printed
        assert summary['check']['max_abs_diff_vs_pipeline'] <= 1e-4
        assert summary['check']['max_abs_diff_vs_eager'] <= 1e-4


# ---------------------------------------------------------------------------- the pieces


def test_linear_sum_assignment_matches_scipy():
    from scipy.optimize import linear_sum_assignment as scipy_lsa
    g = torch.Generator().manual_seed(0)
    for rows, cols in [(1, 1), (1, 5), (4, 4), (9, 70), (70, 70), (30, 100)]:
        cost = torch.rand(rows, cols, generator=g, dtype=torch.float64) * 3 - 1
        got = linear_sum_assignment(cost).numpy()
        r, c = scipy_lsa(cost.numpy().T)  # scipy: meta-points x slots, as the assigner
        expected = np.empty(rows, np.int64)
        expected[c] = r
        np.testing.assert_array_equal(got, expected)
    # ties: another optimum may be picked, never a worse one
    cost = (torch.rand(12, 20, generator=g, dtype=torch.float64) * 3).round()
    got = linear_sum_assignment(cost)
    r, c = scipy_lsa(cost.numpy().T)
    assert len(set(got.tolist())) == 12
    assert cost[torch.arange(12), got].sum().item() == pytest.approx(cost.numpy().T[r, c].sum())
    with pytest.raises(ValueError, match='rows <= columns'):
        linear_sum_assignment(torch.rand(3, 2))


def _spec(num_kpts, k_max, skeleton, padding='eqdiv', neighbours=16, **kw):
    return ExportSpec(model_type='FMMP', num_kpts=num_kpts, shots=1, input_size=(64, 64),
                      max_kpt_num=k_max, heatmap_size=(16, 16), sigma=1.0, with_heatmap=False,
                      padding=padding, neighbours=neighbours,
                      skeleton=parse_skeleton(skeleton, num_kpts), **kw)


@pytest.mark.parametrize('k, k_max, skeleton', [
    (17, 70, '0-1,1-2,2-3,3-4,1-5,5-6,6-7,0-8,8-9,9-10,10-11,8-12,12-13,2-14,14-15,15-16,16-2'),
    (5, 70, '0-1,0-1,1-2,2-2,3-4'),  # repeated link, self link, two components
    (6, 9, None),  # fewer padded slots than links: remainder only
    (4, 4, None),  # no padding at all
    (5, 20, 'none'),  # no skeleton: zero padding, self rows
])
def test_padding_and_neighbour_table_match_the_pipeline(k, k_max, skeleton):
    """eqdiv padding and StructuralNeighbours (numpy, per image) == the graph's tensor version
    for random visibility (invisible nodes are not expanded, chains follow the visibility)."""
    from metapoint.datasets.keypoint_padding_ops import eqdiv_padding, structural_neighbours
    spec = _spec(k, k_max, skeleton)
    wrapper = EpisodeExportWrapper(torch.nn.Module(), spec)
    rng = np.random.default_rng(k)
    shots = 6
    kp = np.zeros((shots, k_max, 2), np.float32)
    kp[:, :k] = rng.random((shots, k, 2), dtype=np.float32)
    w = np.zeros((shots, k_max), np.float32)
    w[:, :k] = rng.random((shots, k)) < 0.7
    w[0, :k] = 1
    v = w.copy()
    v[:, :k] = np.maximum(v[:, :k], rng.random((shots, k)) < 0.3)  # visible, weight 0 (off map)
    t_kp, t_w, t_v, link_on = wrapper.eqdiv(torch.from_numpy(kp), torch.from_numpy(w),
                                            torch.from_numpy(v))
    table = wrapper.neighbour_table(t_w, link_on).numpy()
    links = spec.skeleton
    for s in range(shots):
        keep = np.ones(k_max, bool)
        new_kp, new_w, padded = eqdiv_padding(kp[s], w[s], links, k, k_max, keep)
        _, new_v, _ = eqdiv_padding(kp[s], v[s], links, k, k_max, keep)
        weights = np.concatenate([w[s, :k], (new_w[k:] > 0).astype(np.float32)])
        visible = np.concatenate([v[s, :k], (new_v[k:] > 0).astype(np.float32)])
        np.testing.assert_array_equal(t_kp[s].numpy(), new_kp)
        np.testing.assert_array_equal(t_w[s].numpy(), weights)
        np.testing.assert_array_equal(t_v[s].numpy(), visible)
        expected, _ = structural_neighbours(padded, weights, 16)
        np.testing.assert_array_equal(table[s], expected)


@pytest.mark.parametrize('sigma, with_heatmap', [(1.0, True), (2.0, True), (1.5, True),
                                                 (2.0, False)])
def test_targets_match_generate_cape_target(sigma, with_heatmap):
    from metapoint.datasets.transforms.keypoint_targets import GenerateCAPETarget
    target = GenerateCAPETarget(heatmap_size=(16, 12), sigma=sigma, with_heatmap=with_heatmap)
    spec = ExportSpec(model_type='CapeFormer', num_kpts=30, shots=1, input_size=(64, 48),
                      max_kpt_num=30, heatmap_size=(16, 12), sigma=sigma,
                      with_heatmap=with_heatmap, padding='zero', neighbours=None)
    rng = np.random.default_rng(3)
    kp01 = rng.uniform(-0.3, 1.3, (30, 2)).astype(np.float32)  # some off the crop
    vis = (rng.random(30) < 0.7).astype(np.float32)
    kp01[:3], vis[:3] = [(1.8, 0.5), (0.4, -0.8), (-0.02, 1.01)], 1  # off the map, just inside
    px = kp01 * np.array([64, 48], np.float32)
    res = target(dict(transformed_keypoints=px[None].copy(), keypoints=px[None].copy(),
                      keypoints_visible=vis[None].copy(), input_size=(64, 48)))
    weights, heatmaps = gaussian_targets(torch.from_numpy(kp01)[None] *
                                         torch.tensor([64., 48.]), torch.from_numpy(vis)[None],
                                         spec)
    np.testing.assert_array_equal(weights[0].numpy(), res['keypoint_weights'][0])
    assert 0 < res['keypoint_weights'].sum() < vis.sum()  # some visible points were off-map
    if with_heatmap:
        np.testing.assert_allclose(heatmaps[0].numpy(), res['heatmaps'], atol=1e-6, rtol=0)
    else:
        assert heatmaps is None


# ---------------------------------------------------------------------------- clear errors


def test_bad_requests_raise_clear_errors(tmp_path):
    cfg, model, ckpt = _tiny('fmmp', tmp_path)
    k_max = cfg.model.max_kpt_num
    with pytest.raises(ExportError, match=f'larger than the model.s max_kpt_num {k_max}'):
        export_spec(model, cfg, k_max + 1, 1)
    for shots in (0, -1, 1.5):
        with pytest.raises(ExportError, match='shots must be a positive integer'):
            export_spec(model, cfg, 5, shots)
    with pytest.raises(ExportError, match='names keypoint 7, outside the 5 keypoints'):
        export_spec(model, cfg, 5, 1, skeleton='0-1,1-7')
    with pytest.raises(ExportError, match='is not "a-b"'):
        export_spec(model, cfg, 5, 1, skeleton='0-1,head-neck')
    with pytest.raises(ExportError, match='at least 32 pixels'):
        export_spec(model, cfg, 5, 1, input_size=(16, 64))
    with pytest.raises(ExportError, match='only CAPE estimators'):
        export_spec(torch.nn.Linear(2, 2), cfg, 5, 1)
    mixup = load_config(str(REPO / CASES['fmmp']['config']), CASES['fmmp']['options'])
    mixup.test_dataloader.dataset.episode_pipeline[0]['padding'] = 'mixup'
    with pytest.raises(ExportError, match="test-time KeypointPadding 'mixup'"):
        export_spec(model, mixup, 5, 1)
    # the CLI: the same errors, before any export
    cli = _cli()
    out = tmp_path / 'x.onnx'
    with pytest.raises(ExportError, match='larger than the model.s max_kpt_num'):
        cli.main(_argv('fmmp', ckpt, out, num_kpts=k_max + 1))
    with pytest.raises(ExportError, match='--opset 17 is not supported'):
        cli.main(_argv('fmmp', ckpt, out) + ['--opset', '17'])
    with pytest.raises(ExportError, match='checkpoint .* does not exist'):
        cli.main(_argv('fmmp', tmp_path / 'missing.pth', out))
    with pytest.raises(ExportError, match='does not match the model of .*missing keys'):
        cli.main(_argv('fmmp', ckpt, out, options={}))  # 3 predictor layers, 1 in the file
    assert not out.exists()
