"""Episode pictures during evaluation: ``tools/test.py --show-dir`` (CAPEVisualizationHook and
CAPEVisualizer) for MetaPoint, FMMP, CapeFormer (random weights) and SupportCopy on a tiny
synthetic set, the validation path, the episode index and bad settings."""
import importlib.util
import json
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from metapoint.datasets import episode_collate
from metapoint.engine import CAPEVisualizationHook
from metapoint.registry import DATASETS, MODELS
from metapoint.utils import UnknownConfigKeyError, image_to_crop, register_all_modules
from metapoint.visualization import CAPEVisualizer, keypoint_colors
from tests.helpers import REPO, tiny_synthetic_set

CONFIGS = {
    'metapoint': 'configs/metapoint/metapoint_r18_1xb8_synthetic-real-split1_1shot_cpu.py',
    'fmmp': 'configs/fmmp/fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu.py',
    'capeformer': 'configs/capeformer/capeformer_r18_1xb8_synthetic-real-split1_1shot_cpu.py',
}
SUPPORT_COPY = 'configs/support_copy/supportcopy_synthetic-split1_1shot.py'
# picture geometry (CAPEVisualizer defaults): a 22 px title line, then per query row an 18 px
# caption strip above 256 px panels
TITLE, CAPTION, PANEL = 22, 18, 256
#: the learned models run on 64 px crops here (pipeline step 2 TopdownAffine, 3 the targets)
SMALL_CROPS = {'pipeline.2.input_size': (64, 64), 'pipeline.3.heatmap_size': (16, 16)}


def _load_tool(name, path):
    spec = importlib.util.spec_from_file_location(name, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


test_tool = _load_tool('tools_test', 'tools/test.py')


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    """6 random categories x 3 instances at 64 px: split 1 tests category 5 (18 keypoints)."""
    return tiny_synthetic_set(tmp_path_factory.mktemp('synthetic_vis'))


def _data(root, episodes, queries=2):
    """Test dataset overrides: the tiny set, ``episodes`` episodes of ``queries`` queries."""
    return dict(data_root=str(root), num_episodes=episodes, num_queries=queries)


def _cli(data):
    return [f'test_dataloader.dataset.{k}={v}'.replace(' ', '') for k, v in data.items()]


def _test_dataset(config, data):
    register_all_modules()
    cfg = Config.fromfile(str(REPO / config))
    cfg.merge_from_dict({f'test_dataloader.dataset.{k}': v for k, v in data.items()})
    return DATASETS.build(cfg.test_dataloader.dataset)


def _random_checkpoint(config, path):
    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(Config.fromfile(str(REPO / config)).model)
    torch.save(dict(state_dict=model.state_dict()), path)
    return str(path)


def _panel(img, row, col):
    """Panel ``col`` (0: support, 1: query GT, 2: prediction, 1-shot) of query row ``row``."""
    top = TITLE + row * (CAPTION + PANEL) + CAPTION
    return img[top:top + PANEL, col * PANEL:(col + 1) * PANEL]


def _check_colours(panel, points, drawn, n, scale):
    """Every drawn point of the panel shows the colour of its keypoint (of a palette of the ``n``
    real keypoints) or, where dots overlap, of a keypoint drawn within a few pixels; points
    outside the panel are skipped."""
    colours = keypoint_colors(n)
    px = np.round(points * scale).astype(int)
    inside = drawn & (px >= 0).all(1) & (px < PANEL).all(1)
    assert inside.any()
    for k in np.flatnonzero(inside):
        near = inside & (np.abs(px - px[k]).max(1) <= 6)
        expected = {tuple(int(v) for v in colours[j]) for j in np.flatnonzero(near)}
        x, y = px[k]
        window = panel[max(0, y - 1):y + 2, max(0, x - 1):x + 2].reshape(-1, 3)
        # the dot's centre pixels (the anti-aliased rim of a later dot may blend one of them)
        assert expected & {tuple(int(v) for v in c) for c in window}, k


@pytest.mark.parametrize('model', sorted(CONFIGS))
def test_show_dir_draws_supports_ground_truth_and_predictions(model, synthetic, tmp_path):
    config = CONFIGS[model]
    data = dict(_data(synthetic, episodes=1), **SMALL_CROPS)
    ckpt = _random_checkpoint(config, tmp_path / 'random.pth')
    work = tmp_path / 'work'
    test_tool.main([config, ckpt, '--work-dir', str(work), '--show-dir', 'vis',
                    '--show-interval', '1', '--cfg-options', *_cli(data),
                    f'experiment_name=vis_{model}_{tmp_path.name}'])
    # --show-dir is relative to the work dir; one picture per episode
    files = list((work / 'vis').iterdir())
    assert [f.name for f in files] == ['episode00000_cat5_synth_005.png']
    # the picture is not also written through the LocalVisBackend
    assert not list(work.rglob('vis_image'))

    img = cv2.imread(str(files[0]))
    assert img.shape == (TITLE + 2 * (CAPTION + PANEL), 3 * PANEL, 3)  # 2 query rows
    episode = _test_dataset(config, data)[0]
    preds = json.loads((work / 'cape_predictions.json').read_text())
    n = episode['num_kpts']
    assert n == 18
    support = episode['supports'][0]
    size = np.array(support['meta']['input_size'], np.float64)
    scale = PANEL / size[1]
    asked = support['keypoints_visible'][:n].numpy() > 0
    _check_colours(_panel(img, 0, 0), support['keypoints'][:n].numpy() * size, asked, n, scale)
    for q, query in enumerate(episode['queries']):
        gt_panel, pred_panel = _panel(img, q, 1), _panel(img, q, 2)
        assert np.abs(gt_panel.astype(int) - pred_panel.astype(int)).sum() > 0
        # ground truth: the annotated real keypoints; the palette has n colours, so the padded
        # slots were not drawn
        _check_colours(gt_panel, query['keypoints'][:n].numpy() * size,
                       query['keypoints_visible'][:n].numpy() > 0, n, scale)
        # prediction: the metric's image-pixel predictions mapped into the crop
        assert preds[q]['query_ann_id'] == query['meta']['ann_id']
        crop = image_to_crop(np.array(preds[q]['keypoints'], np.float64)[None],
                             query['meta']['warp_mat'][None].astype(np.float64), size)[0] * size
        _check_colours(pred_panel, crop, asked, n, scale)


def test_supportcopy_interval_max_queries_and_config_switch(synthetic, tmp_path):
    opts = _cli(_data(synthetic, episodes=5))
    show = tmp_path / 'shown'  # absolute --show-dir
    test_tool.main([SUPPORT_COPY, '--work-dir', str(tmp_path / 'a'), '--show-dir', str(show),
                    '--show-interval', '2', '--cfg-options', *opts,
                    f'experiment_name=vis_sc_a_{tmp_path.name}'])
    assert sorted(p.name[:12] for p in show.iterdir()) == [
        'episode00000', 'episode00002', 'episode00004']
    # switched on in the config instead; the first query only; no --show-dir
    out = tmp_path / 'from_config'
    test_tool.main([SUPPORT_COPY, '--work-dir', str(tmp_path / 'b'), '--cfg-options', *opts,
                    'default_hooks.visualization.enable=True',
                    'default_hooks.visualization.interval=3',
                    'default_hooks.visualization.max_queries=1',
                    f'default_hooks.visualization.out_dir={out}',
                    f'experiment_name=vis_sc_b_{tmp_path.name}'])
    files = sorted(out.iterdir())
    assert [p.name[:12] for p in files] == ['episode00000', 'episode00003']
    img = cv2.imread(str(files[0]))
    assert img.shape == (TITLE + CAPTION + PANEL, 3 * PANEL, 3)


def test_configs_carry_the_hook_switched_off_and_the_cape_visualizer():
    for config in [SUPPORT_COPY, *CONFIGS.values()]:
        cfg = Config.fromfile(str(REPO / config))
        assert cfg.default_hooks.visualization.type == 'CAPEVisualizationHook'
        assert cfg.default_hooks.visualization.enable is False
        assert cfg.visualizer.type == 'CAPEVisualizer'


# ------------------------------------------------------------------ hook without a runner
@pytest.fixture(scope='module')
def supportcopy_episodes(synthetic):
    """The SupportCopy model, its test dataset (4 episodes) and the 'predict' outputs."""
    register_all_modules()
    dataset = _test_dataset(SUPPORT_COPY, _data(synthetic, episodes=4))
    model = MODELS.build(Config.fromfile(str(REPO / SUPPORT_COPY)).model)
    data = [episode_collate([dataset[i]]) for i in range(len(dataset))]
    return dataset, data, [model.test_step(d) for d in data]


def _runner(tmp_path, dataset, visualizer, iteration=7):
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset))
    return SimpleNamespace(work_dir=str(tmp_path), iter=iteration, val_loop=loop, test_loop=loop,
                           visualizer=visualizer)


def test_validation_pictures_go_to_backends_and_out_dir(supportcopy_episodes, tmp_path):
    dataset, data, outputs = supportcopy_episodes
    vis = CAPEVisualizer(name=f'vis_val_{tmp_path.name}', save_dir=str(tmp_path / 'backend'),
                         vis_backends=[dict(type='LocalVisBackend')], panel_size=64)
    vis.dataset_meta = dataset.metainfo
    runner = _runner(tmp_path, dataset, vis)
    # no out_dir: backends only (LocalVisBackend writes {name}_{step}.png)
    hook = CAPEVisualizationHook(enable=True, interval=2)
    hook.before_val_epoch(runner)
    for i, (d, out) in enumerate(zip(data, outputs)):
        hook.after_val_iter(runner, i, d, out)
    saved = sorted(p.name for p in (tmp_path / 'backend').rglob('*.png'))
    assert saved == ['val_episode00000_cat5_7.png', 'val_episode00002_cat5_7.png']
    assert vis.get_image().shape[1] == 3 * 64  # RGB copy of the last picture
    # with out_dir (relative to the work dir): files under val_iter{N}/, not through LocalVis
    hook = CAPEVisualizationHook(enable=True, interval=1, out_dir='pictures', max_queries=1)
    runner.iter = 9
    hook.before_val_epoch(runner)
    for i, (d, out) in enumerate(zip(data, outputs)):
        hook.after_val_iter(runner, i, d, out)
    assert len(list((tmp_path / 'pictures' / 'val_iter9').iterdir())) == 4
    assert not list((tmp_path / 'backend').rglob('*_9.png'))
    # disabled: nothing
    hook = CAPEVisualizationHook(enable=False, out_dir='off')
    hook.after_test_iter(runner, 0, data[0], outputs[0])
    assert not (tmp_path / 'off').exists()


def test_episode_index_under_two_ranks_and_other_orders(supportcopy_episodes, monkeypatch,
                                                        tmp_path):
    import metapoint.engine.visualization_hook as module
    dataset, data, outputs = supportcopy_episodes
    runner = _runner(tmp_path, dataset, None)
    monkeypatch.setattr(module, 'get_world_size', lambda: 2)
    monkeypatch.setattr(module, 'get_rank', lambda: 1)
    hook = CAPEVisualizationHook(enable=True, interval=1, out_dir='rank1')
    hook.before_test_epoch(runner)
    # rank 1 of 2 sees episodes 1, 3, then a repeat that evens out the ranks (not drawn)
    for i in (1, 3, 0):
        hook.after_test_iter(runner, i, data[i], outputs[i])
    assert sorted(p.name[:12] for p in (tmp_path / 'rank1').iterdir()) == [
        'episode00001', 'episode00003']
    # another order (a shuffling sampler): episode 2 arrives first; its index comes from the
    # dataset's episode list (the first episode with the same supports and queries)
    monkeypatch.setattr(module, 'get_world_size', lambda: 1)
    monkeypatch.setattr(module, 'get_rank', lambda: 0)
    hook.before_test_epoch(runner)
    found = hook._episode_index(dataset, data[2]['inputs'], 0)
    key = CAPEVisualizationHook._key
    assert key(dataset.episodes[found], dataset.instances) == key(dataset.episodes[2],
                                                                   dataset.instances)
    assert key(dataset.episodes[0], dataset.instances) != key(dataset.episodes[2],
                                                               dataset.instances)
    assert found != 0  # not the position guess


def test_bad_visualization_settings_are_named():
    with pytest.raises(ValueError, match='interval'):
        CAPEVisualizationHook(interval=0)
    with pytest.raises(ValueError, match='max_queries'):
        CAPEVisualizationHook(max_queries=0)
    cfg = Config.fromfile(str(REPO / SUPPORT_COPY))
    cfg.merge_from_dict({'default_hooks.visualization.intervall': 3})
    with pytest.raises(UnknownConfigKeyError, match="'intervall' .*did you mean 'interval'"):
        test_tool.setup_visualization(cfg, show_dir='vis')
    cfg = Config.fromfile(str(REPO / SUPPORT_COPY))
    cfg.merge_from_dict({'visualizer.panel': 3})
    with pytest.raises(UnknownConfigKeyError, match="'panel'"):
        test_tool.setup_visualization(cfg)
    with pytest.raises(SystemExit):
        test_tool.parse_args([SUPPORT_COPY, '--show-interval', '2'])  # needs --show-dir
    # a config without the hook entry gets one from --show-dir
    cfg = Config(dict(default_hooks=dict(timer=dict(type='IterTimerHook'))))
    test_tool.setup_visualization(cfg, show_dir='out', show_interval=4)
    assert cfg.default_hooks.visualization == dict(type='CAPEVisualizationHook', enable=True,
                                                   out_dir='out', interval=4)
