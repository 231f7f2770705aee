"""The optional similarity aid (``similarity_aid``, default off): its functions and its use by
MetaPoint (FMMP's use is in test_fmmp_model.py)."""
import math

import pytest
import torch
from mmengine.config import Config

from metapoint.models.layers.keypoint_pooling import heatmap_pool
from metapoint.models.layers.similarity_peaks import similarity_peak_points
from metapoint.models.losses import keypoint_target_maps, similarity_heatmap_loss
from metapoint.registry import MODELS
from metapoint.utils import UnknownConfigKeyError, register_all_modules
from test_metapoint_configs import REPO, _batch


def test_keypoint_target_maps_peak_and_normalisation():
    # keypoint 0 at the centre of cell (x=2, y=3) of a 4x8 map, keypoint 1 on the top-left corner
    kpts = torch.tensor([[[(2 + 0.5) / 8, (3 + 0.5) / 4], [0.0, 0.0]]])
    t = keypoint_target_maps(kpts, (4, 8), sigma=0.5)
    assert t.shape == (1, 2, 4, 8)
    torch.testing.assert_close(t.sum((-1, -2)), torch.ones(1, 2))
    assert divmod(int(t[0, 0].argmax()), 8) == (3, 2)
    assert t[0, 0, 3, 2] > 0.5  # sigma 0.5 cell: most of the mass on the cell itself
    assert divmod(int(t[0, 1].argmax()), 8) == (0, 0)


def test_heatmap_pool_picks_the_heatmap_location():
    feat = torch.randn(2, 5, 4, 4)
    hm = torch.zeros(2, 3, 4, 4)
    hm[0, 0, 1, 2] = 1.0
    hm[1, 2, 3, 0] = 2.0  # scale does not matter
    out = heatmap_pool(feat, hm)
    assert out.shape == (2, 3, 5)
    torch.testing.assert_close(out[0, 0], feat[0, :, 1, 2])
    torch.testing.assert_close(out[1, 2], feat[1, :, 3, 0])
    assert out[0, 1].abs().max() == 0  # empty heatmap -> zero feature


@pytest.mark.parametrize('hw, out_hw', [((8, 8), (64, 64)), ((7, 9), (64, 48)),
                                         ((32, 32), (64, 64)), ((5, 3), (17, 11))])
def test_heatmap_pool_equals_pooling_the_upsampled_map(hw, out_hw):
    """The transposed-resize form equals upsampling the features first (values and grads)."""
    torch.manual_seed(0)
    feat = torch.randn(2, 6, *hw, dtype=torch.float64, requires_grad=True)
    hm = torch.rand(2, 4, *out_hw, dtype=torch.float64)
    hm[1, 3] = 0  # an empty heatmap
    up = torch.nn.functional.interpolate(feat, size=out_hw, mode='bilinear',
                                         align_corners=False)
    norm = hm / (hm.sum((-1, -2), keepdim=True) + 1e-8)
    ref = norm.flatten(2) @ up.flatten(2).transpose(1, 2)
    out = heatmap_pool(feat, hm)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    g_ref, = torch.autograd.grad(ref.square().sum(), feat)
    g_out, = torch.autograd.grad(out.square().sum(), feat)
    torch.testing.assert_close(g_out, g_ref, atol=1e-12, rtol=0)


def _one_hot_map(n_pos=16, c=16):
    """A 4x4 map whose position p holds basis vector e_p (all positions mutually orthogonal)."""
    return torch.eye(c)[:, :n_pos].reshape(1, c, 4, 4)


def test_similarity_loss_low_when_support_feature_matches_target_position():
    qmap = _one_hot_map()
    pos = torch.tensor([[1, 2], [3, 0]])  # (y, x) of two keypoints
    kpts = torch.stack([(pos[:, 1] + 0.5) / 4, (pos[:, 0] + 0.5) / 4], -1)[None].float()
    right = torch.stack([qmap[0, :, y, x] for y, x in pos.tolist()])[None]
    wrong = torch.stack([qmap[0, :, 0, 3], qmap[0, :, 2, 2]])[None]
    mask = torch.ones(1, 2, dtype=torch.bool)
    good = similarity_heatmap_loss(right, qmap, kpts, mask, temperature=0.1, sigma=0.3)
    bad = similarity_heatmap_loss(wrong, qmap, kpts, mask, temperature=0.1, sigma=0.3)
    assert good < 1.0 < bad
    # uniform similarity (zero feature) -> log(h*w) whatever the target
    zero = similarity_heatmap_loss(torch.zeros(1, 2, 16), qmap, kpts, mask)
    assert zero.item() == pytest.approx(math.log(16), abs=1e-5)


def test_similarity_loss_ignores_masked_keypoints_and_is_zero_without_any():
    qmap = torch.randn(2, 8, 4, 4, requires_grad=True)
    feats = torch.randn(2, 3, 8)
    kpts = torch.rand(2, 3, 2)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    full = similarity_heatmap_loss(feats, qmap, kpts, mask)
    changed = feats.clone()
    changed[0, 1] = torch.randn(8)
    changed[1, :2] = torch.randn(2, 8)
    torch.testing.assert_close(similarity_heatmap_loss(changed, qmap, kpts, mask), full)
    none = similarity_heatmap_loss(feats, qmap, kpts, torch.zeros(2, 3, dtype=torch.bool))
    assert none.item() == 0
    none.backward()  # graph kept
    assert qmap.grad is not None


def _model(aux):
    register_all_modules()
    cfg = Config.fromfile(
        str(REPO / 'configs/metapoint/metapoint_r50_4xb16_mp100-split1_1shot.py'))
    cfg.model.backbone = dict(type='TorchvisionResNet', depth=18, out_indices=(0, 1, 2, 3))
    if aux is not None:
        cfg.model.similarity_aid = dict(type='SimilarityAid', **aux)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def test_metapoint_default_has_no_aux_loss_and_aux_adds_only_a_loss():
    base, aux = _model(None), _model(dict(levels=(-1, -2), weight=0.5))
    assert base.similarity_aid is None
    # no parameters added: the same state dict loads both ways, predictions are identical
    assert base.state_dict().keys() == aux.state_dict().keys()
    aux.load_state_dict(base.state_dict())
    batch = _batch(1, queries=2)
    base.train(), aux.train()
    torch.manual_seed(1)
    l_base = base.loss(batch)
    torch.manual_seed(1)
    l_aux = aux.loss(batch)
    assert not any(k.startswith('loss_sim') for k in l_base)
    assert set(l_aux) - set(l_base) == {'loss_sim0', 'loss_sim1'}
    for k, v in l_base.items():
        torch.testing.assert_close(l_aux[k], v)
    assert all(torch.isfinite(l_aux[k]) and l_aux[k] > 0 for k in ('loss_sim0', 'loss_sim1'))
    # the aux loss reaches the backbone
    l_aux['loss_sim0'].backward()
    assert aux.backbone.conv1.weight.grad.abs().sum() > 0
    base.eval(), aux.eval()
    with torch.no_grad():
        torch.testing.assert_close(aux(batch, mode='tensor'), base(batch, mode='tensor'))


def test_similarity_aid_cfg_is_validated():
    with pytest.raises(UnknownConfigKeyError, match="unknown key.*'level'"):
        _model(dict(level=-1))
    with pytest.raises(ValueError, match='support_features'):
        _model(dict(support_features='mean'))
    model = _model(dict(levels=(3,)))
    with pytest.raises(ValueError, match='outside'):
        model.loss(_batch(1, queries=1))


def test_similarity_peak_points_find_the_matching_cell():
    qmap = _one_hot_map()
    feats = torch.stack([qmap[0, :, 1, 2], qmap[0, :, 3, 0], 0.7 * qmap[0, :, 0, 3]])[None]
    pts = similarity_peak_points(feats, qmap, temperature=0.01, radius=1)
    expect = torch.tensor([[[2.5, 1.5], [0.5, 3.5], [3.5, 0.5]]]) / 4
    torch.testing.assert_close(pts, expect, atol=1e-4, rtol=0)
    # a feature between two neighbouring cells lands between their centres
    mix = (qmap[0, :, 1, 1] + qmap[0, :, 1, 2])[None, None]
    torch.testing.assert_close(similarity_peak_points(mix, qmap, temperature=0.02, radius=1),
                               torch.tensor([[[2.0 / 4, 1.5 / 4]]]), atol=1e-4, rtol=0)


def test_metapoint_init_points_start_the_refine_decoder_at_the_similarity_peaks():
    model = _model(dict(levels=(-1,), init_points=True))
    model.eval()
    batch = _batch(1, queries=2)
    with torch.no_grad():
        out = model.run_episode(batch)
        support_maps, _ = model.extract_features(batch)
        feats = heatmap_pool(support_maps[-1], batch.support_heatmaps.flatten(0, 1))
        feats = feats.view(1, 1, 70, -1).expand(1, 2, 70, -1).flatten(0, 1)  # 1 shot, 2 queries
        peaks = similarity_peak_points(feats, out['query_maps'][-1], temperature=0.1)
    gate = out['gate']
    assert gate.any() and (~gate).any()
    torch.testing.assert_close(out['ref_init_points'][gate], peaks[gate])
    assert (out['ref_init_points'][~gate] == 0).all()  # ungated slots as without the option
    plain = _model(dict(levels=(-1,)))
    plain.load_state_dict(model.state_dict())
    plain.eval()
    with torch.no_grad():
        ref = plain.run_episode(batch)['ref_init_points']
    assert not torch.allclose(ref[gate], peaks[gate])
