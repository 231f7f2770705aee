"""Per-instance transforms: random scale/rotation distribution, target weights, padding."""
import numpy as np
import pytest
import torch
from mmpose.codecs.utils import generate_gaussian_heatmaps

from metapoint.datasets.transforms import (GenerateCAPETarget, KeypointPadding,
                                           RandomScaleRotation, heatmap_target_weights)


def test_random_scale_rotation_matches_official_distribution():
    t = RandomScaleRotation(scale_factor=0.3, rot_factor=30, rot_prob=0.6)
    rng = np.random.default_rng(0)
    scales, rots = [], []
    for _ in range(4000):
        out = t(dict(bbox_scale=np.array([[100.0, 100.0]]), rng=rng))
        scales.append(out['bbox_scale'][0, 0] / 100)
        rots.append(out['bbox_rotation'][0])
    scales, rots = np.array(scales), np.array(rots)
    assert scales.min() >= 0.7 - 1e-6 and scales.max() <= 1.3 + 1e-6
    assert np.abs(rots).max() <= 60 + 1e-6
    assert abs((rots == 0).mean() - 0.4) < 0.03  # rotation applied with probability 0.6
    # the per-episode generator makes draws reproducible
    a = t(dict(bbox_scale=np.ones((1, 2)), rng=np.random.default_rng(5)))
    b = t(dict(bbox_scale=np.ones((1, 2)), rng=np.random.default_rng(5)))
    assert a['bbox_scale'][0, 0] == b['bbox_scale'][0, 0]
    assert a['bbox_rotation'][0] == b['bbox_rotation'][0]
    with pytest.raises(ValueError):
        RandomScaleRotation(scale_factor=1.5)


def test_target_weights_agree_with_mmpose_heatmap_rule():
    rng = np.random.default_rng(1)
    kpts = rng.uniform(-40, 300, size=(1, 200, 2)).astype(np.float32)  # crop pixels, 256 crop
    vis = (rng.random((1, 200)) > 0.2).astype(np.float32)
    _, ref = generate_gaussian_heatmaps((64, 64), kpts / 4, vis, 2.0)
    ours = heatmap_target_weights(kpts / 4, vis, (64, 64), 2.0)
    np.testing.assert_array_equal(ours, ref)
    assert 0 < ours.sum() < vis.sum()  # some visible keypoints fall off the map


def test_generate_target_heatmap_peak_and_weights():
    kpts = np.array([[[128.0, 64.0], [400.0, 10.0], [20.0, 240.0]]], np.float32)
    vis = np.array([[1.0, 1.0, 0.0]], np.float32)
    res = GenerateCAPETarget(with_heatmap=True)(dict(
        transformed_keypoints=kpts, keypoints_visible=vis, input_size=(256, 256)))
    np.testing.assert_array_equal(res['keypoint_weights'], [[1.0, 0.0, 0.0]])
    hm = res['heatmaps']
    assert hm.shape == (3, 64, 64)
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (16, 32) and hm[0].max() == 1.0
    assert hm[1].max() == 0 and hm[2].max() == 0
    no_hm = GenerateCAPETarget(with_heatmap=False)(dict(
        transformed_keypoints=kpts, keypoints_visible=vis, input_size=(256, 256)))
    assert 'heatmaps' not in no_hm
    np.testing.assert_array_equal(no_hm['keypoint_weights'], res['keypoint_weights'])


def test_zero_padding_validates_slot_count():
    inst = dict(keypoints=torch.zeros(70, 2))
    episode = dict(supports=[inst], queries=[inst])
    assert KeypointPadding(num=70)(episode) is episode
    with pytest.raises(ValueError, match='num=100'):
        KeypointPadding(num=100)(episode)
    with pytest.raises(ValueError, match='unknown keypoint padding'):
        KeypointPadding(padding='bogus')


def test_invisible_keypoints_keep_raw_coordinates_through_the_crop():
    """Official mmpose 0.x behaviour (FMMP configs): only visible joints enter the crop frame."""
    from mmpose.datasets.transforms import GetBBoxCenterScale, TopdownAffine

    from metapoint.datasets.transforms import KeepInvisibleKeypointsRaw, PackCAPEInstance
    raw = np.array([[[60.0, 40.0], [0.0, 0.0], [90.0, 70.0]]], np.float32)
    vis = np.array([[1.0, 0.0, 1.0]], np.float32)
    res = dict(img=np.zeros((120, 160, 3), np.uint8), img_shape=(120, 160),
               bbox=np.array([[40.0, 20.0, 120.0, 100.0]], np.float32),
               keypoints=raw.copy(), keypoints_visible=vis)
    res = TopdownAffine(input_size=(64, 64))(GetBBoxCenterScale(padding=1.25)(res))
    moved = res['transformed_keypoints'].copy()
    assert not np.allclose(moved[0, 1], 0)  # the affine maps (0, 0) somewhere off the crop
    out = PackCAPEInstance()(KeepInvisibleKeypointsRaw()(res))
    np.testing.assert_array_equal(out['keypoints'][1].numpy(), [0.0, 0.0])  # raw / input size
    np.testing.assert_allclose(out['keypoints'][[0, 2]].numpy(), moved[0, [0, 2]] / 64, atol=1e-6)
    np.testing.assert_array_equal(out['meta']['gt_keypoints'], raw[0])  # image frame untouched
