"""Inference API on a custom episode, and keypoint drawing."""
from pathlib import Path

import numpy as np
import pytest
import torch

from metapoint.apis import inference_episode, init_estimator
from metapoint.visualization import draw_keypoints, keypoint_colors, tile_images


@pytest.fixture(scope='module')
def support_copy():
    repo = Path(__file__).resolve().parents[1]
    return init_estimator(str(repo / 'configs/support_copy/supportcopy_mp100-split1_1shot.py'))


def test_inference_episode_supportcopy_maps_layout_to_query_box(support_copy):
    img = np.zeros((200, 300, 3), np.uint8)
    kpts = np.array([[50, 60, 2], [120, 80, 1], [90, 150, 0]], np.float32)
    # the support box is the keypoints' tight box: x 50..120, y 60..80 -> square crop of the
    # longer side; the query box is the same box shifted by (+100, +20): predictions shift too
    out = inference_episode(support_copy, [img], [kpts], [img],
                            query_bboxes=[[150, 80, 71, 21]])
    assert out.shape == (1, 3, 2)
    np.testing.assert_allclose(out[0, :2], kpts[:2, :2] + [100, 20], atol=0.5)


def test_inference_episode_query_without_box_uses_whole_image(support_copy, tmp_path):
    import cv2
    support = np.zeros((200, 300, 3), np.uint8)
    kpts = np.array([[50, 60], [120, 80], [290, 190]], np.float32)
    # support box = its whole image; the query (a path, half the size) has no box: the whole
    # image is its box, so the copied layout lands at half the support coordinates
    query = tmp_path / 'query.png'
    cv2.imwrite(str(query), np.zeros((100, 150, 3), np.uint8))
    out = inference_episode(support_copy, [support], [kpts], [str(query)],
                            support_bboxes=[[0, 0, 300, 200]])
    np.testing.assert_allclose(out[0], kpts / 2, atol=0.5)
    with pytest.raises(FileNotFoundError, match='missing.png'):
        inference_episode(support_copy, [support], [kpts], [str(tmp_path / 'missing.png')])
    with pytest.raises(ValueError, match='empty bbox'):
        inference_episode(support_copy, [support], [kpts], [support], [[10, 10, 0, 5]])


def test_draw_keypoints_colours_visible_points_only():
    img = np.zeros((40, 40, 3), np.uint8)
    out = draw_keypoints(img, np.array([[10, 10], [30, 30]]), np.array([1, 0]), radius=2)
    colors = keypoint_colors(2)
    assert tuple(out[10, 10]) == tuple(colors[0])
    assert out[30, 30].sum() == 0 and img.sum() == 0  # invisible skipped, input untouched
    canvas = tile_images([img, np.zeros((20, 10, 3), np.uint8)], height=40)
    assert canvas.shape == (40, 60, 3)


def test_init_estimator_refuses_a_checkpoint_of_another_model(tmp_path):
    from tests.helpers import REPO
    ckpt = tmp_path / 'other.pth'
    torch.save({'state_dict': {'backbone.conv1.weight': torch.zeros(1),
                               'head.not_in_model': torch.zeros(2)}}, ckpt)
    cfg = str(REPO / 'configs/metapoint/'
              'metapoint_r18_1xb8_synthetic-random-split1_1shot_quickstart.py')
    with pytest.raises(RuntimeError, match='other.pth does not match the model'):
        init_estimator(cfg, str(ckpt))
