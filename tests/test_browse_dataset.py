"""tools/misc/browse_dataset.py: pictures of episodes after the pipeline (train and test phases
of a tiny synthetic set), padded slots and heatmap overlays, and clear errors for missing data."""
import importlib.util

import cv2
import numpy as np
import pytest

from metapoint.visualization import (EpisodeView, heatmap_overlay, keypoint_colors,
                                     render_episode_inputs)
from tests.helpers import REPO, tiny_synthetic_set

FMMP = 'configs/fmmp/fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu.py'
METAPOINT = 'configs/metapoint/metapoint_r18_1xb8_synthetic-real-split1_1shot_cpu.py'
SUPPORT_COPY = 'configs/support_copy/supportcopy_synthetic-split1_1shot.py'
PAD_GREY = (160, 160, 160)


def _load_tool():
    spec = importlib.util.spec_from_file_location('browse_dataset',
                                                  REPO / 'tools/misc/browse_dataset.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


browse = _load_tool()


@pytest.fixture(scope='module')
def synthetic(tmp_path_factory):
    """6 random categories x 3 instances at 64 px (split 1: train 1-4, test 5)."""
    return tiny_synthetic_set(tmp_path_factory.mktemp('synthetic_browse'))


def test_train_phase_shows_augmented_padded_episodes(synthetic, tmp_path, capsys):
    out = tmp_path / 'train'
    rc = browse.main([FMMP, '--phase', 'train', '--num', '3', '--output-dir', str(out),
                      '--panel-size', '128', '--cfg-options',
                      f'train_dataloader.dataset.data_root={synthetic}',
                      'train_dataloader.dataset.episode_seed=3'])
    assert rc == 0
    files = sorted(out.iterdir())
    # 4 train categories x 3 instances: 12 episodes of the epoch-0 draw, 3 evenly spaced
    assert [f.name[:19] for f in files] == ['train_episode00000_', 'train_episode00006_',
                                            'train_episode00011_']
    assert 'wrote 3 episode picture(s) of 12 episodes' in capsys.readouterr().out
    for path in files:
        img = cv2.imread(str(path))
        assert img.shape[1] == 2 * 128  # one support, one query
        # FMMP pads every category to 70 slots ('mixup' in training): hollow grey rings
        assert (img == PAD_GREY).all(-1).sum() > 20


def test_test_phase_with_heatmap_overlay(synthetic, tmp_path, capsys):
    out = tmp_path / 'test'
    rc = browse.main([METAPOINT, '--phase', 'test', '--num', '2', '--show-heatmaps',
                      '--output-dir', str(out), '--panel-size', '128', '--cfg-options',
                      f'test_dataloader.dataset.data_root={synthetic}',
                      'test_dataloader.dataset.num_queries=2'])
    assert rc == 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == ['test_episode00000_cat5.png', 'test_episode00019_cat5.png']
    img = cv2.imread(str(files[0]))
    assert img.shape[1] == 3 * 128  # one support, two queries
    # two rows of captioned panels: the crops, then their target heatmaps
    top = img[-2 * 128 - 18:-128 - 18]
    bottom = img[-128:]
    assert top.shape == bottom.shape and np.abs(top.astype(int) - bottom.astype(int)).sum() > 0
    assert 'no target heatmaps' not in capsys.readouterr().out
    # a pipeline without heatmaps says so
    rc = browse.main([FMMP, '--phase', 'test', '--num', '1', '--show-heatmaps', '--output-dir',
                      str(tmp_path / 'none'), '--cfg-options',
                      f'test_dataloader.dataset.data_root={synthetic}',
                      'test_dataloader.dataset.num_queries=1'])
    assert rc == 0 and 'makes no target heatmaps' in capsys.readouterr().out


def test_missing_data_root_or_phase_is_named(synthetic, tmp_path, capsys):
    missing = tmp_path / 'no_such_data'
    rc = browse.main([METAPOINT, '--phase', 'test', '--output-dir', str(tmp_path / 'x'),
                      '--cfg-options', f'test_dataloader.dataset.data_root={missing}'])
    err = capsys.readouterr().err
    assert rc == 2 and f'data root not found: {missing}' in err
    assert '--cfg-options test_dataloader.dataset.data_root=DIR' in err
    assert not (tmp_path / 'x').exists()
    rc = browse.main([SUPPORT_COPY, '--phase', 'train'])  # SupportCopy is never trained
    err = capsys.readouterr().err
    assert rc == 2 and 'has no train_dataloader' in err and 'val, test' in err
    # a dataset that cannot be built (15 queries, 3 instances per category) is reported too
    rc = browse.main([METAPOINT, '--phase', 'val', '--output-dir', str(tmp_path / 'v'),
                      '--cfg-options', f'val_dataloader.dataset.data_root={synthetic}'])
    err = capsys.readouterr().err
    assert rc == 2 and 'val_dataloader.dataset' in err and 'category 6 has 3 instance' in err
    rc = browse.main([str(tmp_path / 'nope.py')])
    assert rc == 2 and 'config file not found' in capsys.readouterr().err
    with pytest.raises(SystemExit):
        browse.parse_args([METAPOINT, '--num', '0'])


# ------------------------------------------------------------------ drawing functions
def _view(with_heatmaps=False):
    """2 real keypoints, 4 slots: slot 2 a padded keypoint in use, slot 3 unused (0, 0)."""
    kpts = np.array([[[8.0, 8.0], [24.0, 8.0], [16.0, 24.0], [0.0, 0.0]]])
    vis = np.array([[1.0, 1.0, 0.0, 0.0]], np.float32)
    weights = np.array([[1.0, 1.0, 1.0, 0.0]], np.float32)
    maps = None
    if with_heatmaps:
        maps = np.zeros((1, 4, 8, 8), np.float32)
        maps[0, 0, 2, 2] = 1.0  # keypoint 0 at heatmap cell (2, 2)
    img = [np.zeros((32, 32, 3), np.uint8)]
    return EpisodeView(category_id=7, num_kpts=2, skeleton=np.array([[0, 1]]),
                       support_imgs=img, support_kpts=kpts, support_vis=vis,
                       support_weights=weights, query_imgs=img, query_kpts=kpts.copy(),
                       query_vis=vis.copy(), query_weights=weights.copy(),
                       category_name='toy', support_heatmaps=maps, query_heatmaps=maps)


def test_padded_slots_are_rings_and_real_keypoints_dots():
    canvas = render_episode_inputs(_view(), panel_size=64, radius=4)
    panel = canvas[-64:, :64]  # the support panel (scale 2)
    colours = keypoint_colors(2)
    assert tuple(panel[16, 16]) == tuple(colours[0]) and tuple(panel[16, 48]) == tuple(colours[1])
    # padded slot 2 at (16, 24) -> (32, 48): a grey ring of radius 4, hollow
    around = panel[43:54, 27:38]
    ring = (around == PAD_GREY).all(-1)
    assert ring.sum() >= 8 and panel[48, 32].sum() == 0
    # the unused slot 3 at the origin is not drawn
    assert panel[:3, :3].sum() == 0


def test_heatmap_overlay_takes_the_keypoint_colour():
    img = np.full((8, 8, 3), 100, np.uint8)
    maps = np.zeros((2, 8, 8), np.float32)
    maps[1, 5, 3] = 1.0
    out = heatmap_overlay(img, maps, alpha=0.5)
    expected = 0.5 * 100 + 0.5 * keypoint_colors(2)[1].astype(np.float32)
    np.testing.assert_allclose(out[5, 3], expected, atol=1)
    assert (out[0, 0] == 100).all()  # no heat, no tint
    canvas = render_episode_inputs(_view(with_heatmaps=True), panel_size=32, show_heatmaps=True)
    assert canvas.shape[1] == 64 and canvas[-32:].sum() > 0  # heatmap row under the crops
