"""SupportCopy, the base estimator's prediction packing, data preprocessor and DDP wrapper."""
import numpy as np
import pytest
import torch

from metapoint.engine import CAPEDistributedDataParallel
from metapoint.models import CAPEDataPreprocessor, SupportCopy
from metapoint.registry import MODELS
from metapoint.structures import EpisodeBatch, make_episode_batch
from metapoint.utils import crop_warp_matrix, register_all_modules

register_all_modules()


def _batch(b=2, s=2, q=3, k=4, size=(64, 64)):
    g = torch.Generator().manual_seed(0)
    metas = []
    for i in range(b):
        row = []
        for j in range(q):
            center = np.array([100.0 + 10 * j, 50.0 + i], np.float32)
            scale = np.array([80.0, 80.0], np.float32)
            row.append(dict(ann_id=100 * i + j, warp_mat=crop_warp_matrix(center, scale, 0.0, size),
                            input_size=size, gt_keypoints=np.zeros((k, 2), np.float32),
                            bbox_size=64.0, center=center, scale=scale))
        metas.append(row)
    batch = make_episode_batch(torch.zeros(b, s, 3, *size), torch.zeros(b, q, 3, *size),
                               torch.rand(b, s, k, 2, generator=g), category_id=torch.arange(b))
    return batch.replace(query_metas=metas)


def test_support_copy_is_visibility_weighted_shot_mean():
    batch = _batch()
    vis = batch.support_keypoints_visible
    vis[0, 1, 0] = 0  # keypoint 0 of episode 0 only annotated in shot 0
    vis[1, :, 2] = 0  # keypoint 2 of episode 1 annotated in no shot
    model = SupportCopy()
    pts = model(batch, mode='tensor')
    kp = batch.support_keypoints
    assert pts.shape == (2, 3, 4, 2)
    torch.testing.assert_close(pts[0, :, 0], kp[0, 0, 0].expand(3, 2))
    torch.testing.assert_close(pts[0, 1, 1], (kp[0, 0, 1] + kp[0, 1, 1]) / 2)
    torch.testing.assert_close(pts[1, 2, 2], torch.tensor([0.5, 0.5]))
    with pytest.raises(NotImplementedError, match='not trainable'):
        model(batch, mode='loss')


def test_predict_maps_crop_to_image_pixels():
    batch = _batch()
    out = SupportCopy()(batch, mode='predict')
    assert len(out) == 2 and out[0]['pred_kpts'].shape == (3, 4, 2)
    kp = batch.support_keypoints[1].mean(0).numpy()  # both shots visible
    # crop (u, v) -> image: center + (u - 0.5) * scale, scale 80 px, query j centred at 100 + 10 j
    for j in range(3):
        expected = np.array([100.0 + 10 * j, 51.0]) + (kp - 0.5) * 80.0
        np.testing.assert_allclose(out[1]['pred_kpts'][j], expected, atol=1e-3)
    assert out[1]['query_ann_ids'] == [100, 101, 102] and out[1]['category_id'] == 1


def test_data_preprocessor_normalises_and_flips_channels():
    pre = CAPEDataPreprocessor(mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0), bgr_to_rgb=True)
    img = torch.zeros(1, 1, 3, 2, 2, dtype=torch.uint8)
    img[:, :, 0] = 10  # B channel in the loader's BGR order
    data = dict(inputs=make_episode_batch(img, img.clone(), torch.zeros(1, 1, 1, 2)))
    out = pre(data)
    assert isinstance(out['inputs'], EpisodeBatch)
    sup = out['inputs'].support_imgs
    assert sup.dtype == torch.float32
    torch.testing.assert_close(sup[0, 0, :, 0, 0], torch.tensor([-0.5, -1.0, (10 - 3) / 2]))


def test_registry_builds_supportcopy_and_wrapper_handles_parameter_free_model():
    model = MODELS.build(dict(type='SupportCopy', data_preprocessor=dict(
        type='CAPEDataPreprocessor')))
    assert isinstance(model, SupportCopy)
    wrapped = CAPEDistributedDataParallel(model)  # torch DDP alone refuses parameter-free modules
    assert wrapped.module is model
    batch = _batch()
    data = dict(inputs=batch.replace(support_imgs=batch.support_imgs.to(torch.uint8),
                                     query_imgs=batch.query_imgs.to(torch.uint8)))
    assert len(wrapped.test_step(data)) == 2
    with pytest.raises(RuntimeError, match='no trainable parameter'):
        wrapped.train_step(data, None)


def test_data_preprocessor_and_model_refuse_other_inputs():
    pre = CAPEDataPreprocessor()
    with pytest.raises(TypeError, match='EpisodeBatch'):
        pre(dict(inputs=dict(support_imgs=torch.zeros(1, 1, 3, 2, 2))))
    with pytest.raises(TypeError, match='EpisodeBatch'):
        SupportCopy()(dict(support_imgs=torch.zeros(1, 1, 3, 2, 2)), mode='tensor')


def test_episode_batch_checks_shapes_and_moves_tensors_only():
    batch = _batch(b=2, s=2, q=3, k=4)
    assert (batch.num_episodes, batch.num_shots, batch.num_queries, batch.num_slots) == \
        (2, 2, 3, 4)
    with pytest.raises(ValueError, match='query_keypoints.*first two dims'):
        batch.replace(query_keypoints=torch.zeros(2, 2, 4, 2))
    with pytest.raises(ValueError, match='support_keypoint_weights has 3 keypoint slots'):
        batch.replace(support_keypoint_weights=torch.ones(2, 2, 3))
    per_query = batch.per_query(torch.arange(2))
    assert per_query.tolist() == [0, 0, 0, 1, 1, 1]
    one = batch.select_episodes([1]).select_queries(slice(1, 3))
    assert (one.num_episodes, one.num_shots, one.num_queries) == (1, 2, 2)
    assert torch.equal(one.query_keypoints, batch.query_keypoints[1:2, 1:3])
    assert one.query_metas == [batch.query_metas[1][1:3]]
    assert torch.equal(one.category_id, batch.category_id[1:2])
    moved = batch.to('cpu')
    assert moved.query_metas is batch.query_metas
    with pytest.raises(TypeError, match='unknown field'):
        make_episode_batch(batch.support_imgs, batch.query_imgs, batch.support_keypoints,
                           support_heatmap=None)
