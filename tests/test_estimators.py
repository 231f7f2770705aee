"""SupportCopy, the base estimator's prediction packing, data preprocessor and DDP wrapper."""
import numpy as np
import pytest
import torch

from metapoint.engine import CAPEDistributedDataParallel
from metapoint.models import CAPEDataPreprocessor, SupportCopy
from metapoint.registry import MODELS
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
    samples = dict(
        support_keypoints=torch.rand(b, s, k, 2, generator=g),
        support_keypoints_visible=torch.ones(b, s, k),
        query_keypoints_visible=torch.ones(b, q, k),
        num_kpts=torch.full((b, ), k), category_id=torch.arange(b), query_metas=metas)
    inputs = dict(support_imgs=torch.zeros(b, s, 3, *size), query_imgs=torch.zeros(b, q, 3, *size))
    return inputs, samples


def test_support_copy_is_visibility_weighted_shot_mean():
    inputs, samples = _batch()
    vis = samples['support_keypoints_visible']
    vis[0, 1, 0] = 0  # keypoint 0 of episode 0 only annotated in shot 0
    vis[1, :, 2] = 0  # keypoint 2 of episode 1 annotated in no shot
    model = SupportCopy()
    pts = model(inputs, samples, mode='tensor')
    kp = samples['support_keypoints']
    assert pts.shape == (2, 3, 4, 2)
    torch.testing.assert_close(pts[0, :, 0], kp[0, 0, 0].expand(3, 2))
    torch.testing.assert_close(pts[0, 1, 1], (kp[0, 0, 1] + kp[0, 1, 1]) / 2)
    torch.testing.assert_close(pts[1, 2, 2], torch.tensor([0.5, 0.5]))
    with pytest.raises(NotImplementedError, match='not trainable'):
        model(inputs, samples, mode='loss')


def test_predict_maps_crop_to_image_pixels():
    inputs, samples = _batch()
    out = SupportCopy()(inputs, samples, mode='predict')
    assert len(out) == 2 and out[0]['pred_kpts'].shape == (3, 4, 2)
    kp = samples['support_keypoints'][1].mean(0).numpy()  # both shots visible
    # crop (u, v) -> image: center + (u - 0.5) * scale, scale 80 px, query j centred at 100 + 10 j
    for j in range(3):
        expected = np.array([100.0 + 10 * j, 51.0]) + (kp - 0.5) * 80.0
        np.testing.assert_allclose(out[1]['pred_kpts'][j], expected, atol=1e-3)
    assert out[1]['query_ann_ids'] == [100, 101, 102] and out[1]['category_id'] == 1


def test_data_preprocessor_normalises_and_flips_channels():
    pre = CAPEDataPreprocessor(mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0), bgr_to_rgb=True)
    img = torch.zeros(1, 1, 3, 2, 2, dtype=torch.uint8)
    img[:, :, 0] = 10  # B channel in the loader's BGR order
    data = dict(inputs=dict(support_imgs=img, query_imgs=img.clone()),
                data_samples=dict(x=torch.ones(1)))
    out = pre(data)
    sup = out['inputs']['support_imgs']
    assert sup.dtype == torch.float32
    torch.testing.assert_close(sup[0, 0, :, 0, 0], torch.tensor([-0.5, -1.0, (10 - 3) / 2]))


def test_registry_builds_supportcopy_and_wrapper_handles_parameter_free_model():
    model = MODELS.build(dict(type='SupportCopy', data_preprocessor=dict(
        type='CAPEDataPreprocessor')))
    assert isinstance(model, SupportCopy)
    wrapped = CAPEDistributedDataParallel(model)  # torch DDP alone refuses parameter-free modules
    assert wrapped.module is model
    inputs, samples = _batch()
    data = dict(inputs=dict(support_imgs=inputs['support_imgs'].to(torch.uint8),
                            query_imgs=inputs['query_imgs'].to(torch.uint8)),
                data_samples=samples)
    assert len(wrapped.test_step(data)) == 2
    with pytest.raises(RuntimeError, match='no trainable parameter'):
        wrapped.train_step(data, None)
