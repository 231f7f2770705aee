"""FMMP model behaviour: structural attention, mining layer, predictor options, estimator."""
import pytest
import torch
from mmengine.config import Config

from metapoint.datasets.keypoint_padding_ops import structural_neighbours
from metapoint.models.heads import RecurrentFGSAPredictor
from metapoint.models.layers.fgsa_mining_layer import FGSAMiningLayer
from metapoint.models.layers.ms_deform_attn import flatten_multilevel
from metapoint.models.layers.structural_deform_attn import (StructuralDeformableAttention,
                                                            gather_structural_points)
from metapoint.models.layers.similarity_peaks import similarity_peak_points
from metapoint.models.necks import LevelProjectionNeck
from metapoint.registry import MODELS
from metapoint.structures import make_episode_batch
from metapoint.utils import UnknownConfigKeyError, register_all_modules
from tests.helpers import REPO

CONFIG = REPO / 'configs' / 'fmmp' / 'fmmp_r50_1xb16_mp100-split1_1shot.py'
SHAPES = torch.tensor([[2, 2], [4, 4], [8, 8]])


def _randomise(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return module


def _chain_neighbours(n, k, width=16):
    """BFS tables of a chain skeleton 0-1-...-(k-1), all visible, [n, k, width]."""
    links = [[i, i + 1] for i in range(k - 1)]
    idx, _ = structural_neighbours(links, [1] * k, width)
    return torch.from_numpy(idx).long()[None].expand(n, -1, -1)


def test_gather_structural_points_picks_neighbour_coordinates():
    pts = torch.rand(2, 5, 2)
    idx = torch.randint(0, 5, (2, 5, 16))
    ref = gather_structural_points(pts, idx, 3)
    for n in range(2):
        for k in range(5):
            for h in range(3):
                assert torch.equal(ref[n, k, h], pts[n, idx[n, k, h]])
    with pytest.raises(ValueError, match='side heads'):
        gather_structural_points(pts, idx[..., :2], 3)


@pytest.mark.parametrize('gather_mode', ['project_first', 'sample_first'])
@pytest.mark.parametrize('side_heads', [1, 2, 4])
def test_vectorised_structural_attention_equals_per_sample_loop(side_heads, gather_mode):
    """Both vectorised orders (all samples and heads at once) == the per-sample, per-side-head
    loop, in value and in every gradient (value, query, reference points, parameters)."""
    torch.manual_seed(0)
    attn = _randomise(StructuralDeformableAttention(side_heads, 32, 4, 3, 2,
                                                    gather_mode=gather_mode))
    value = torch.randn(3, int(SHAPES.prod(1).sum()), 32)
    query = torch.randn(3, 6, 32)
    ref = gather_structural_points(torch.rand(3, 6, 2) * 1.2 - 0.1, _chain_neighbours(3, 6),
                                   side_heads)
    results = []
    for fn in (attn.forward, attn.forward_loop):
        attn.zero_grad()
        inputs = [t.clone().requires_grad_() for t in (query, ref, value)]
        out = fn(inputs[0], inputs[1], inputs[2], SHAPES)
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
        results.append([out.detach()] + [t.grad for t in inputs]
                       + [p.grad.clone() for p in attn.parameters()])
    for fast, slow in zip(*results):
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)


def test_gather_mode_auto_samples_first_only_for_large_pyramids():
    official = StructuralDeformableAttention(8, 256, 8, 3, 4)
    assert official.samples_first(8 * 8 + 16 * 16 + 32 * 32, 70)  # official size
    cpu = StructuralDeformableAttention(4, 128, 8, 3, 4)
    assert not cpu.samples_first(4 * 4 + 8 * 8 + 16 * 16, 70)  # CPU recipe
    assert StructuralDeformableAttention(2, 32, 4, 3, 2, gather_mode='sample_first') \
        .samples_first(1, 1000)
    with pytest.raises(ValueError, match='gather_mode'):
        StructuralDeformableAttention(2, gather_mode='fast')


def test_side_heads_see_their_neighbours():
    """Moving keypoint 3 changes what head h of keypoint k reads iff N[k, h] == 3."""
    torch.manual_seed(0)
    attn = _randomise(StructuralDeformableAttention(2, 32, 4, 3, 2))
    pts = torch.rand(1, 6, 2)
    nbr = _chain_neighbours(1, 6)  # keypoint k's first neighbour is k-1 (k=0: 1)
    value = torch.randn(1, int(SHAPES.prod(1).sum()), 32)
    query = torch.randn(1, 6, 32)
    moved = pts.clone()
    moved[0, 3] = torch.tensor([0.9, 0.1])
    a = attn(query, gather_structural_points(pts, nbr, 2), value, SHAPES)
    b = attn(query, gather_structural_points(moved, nbr, 2), value, SHAPES)
    changed = {k for k in range(6) if not torch.allclose(a[0, k], b[0, k])}
    expected = {k for k in range(6) if 3 in nbr[0, k, :2].tolist()}
    assert changed == expected and 3 in changed and len(changed) > 1


def test_zero_initialised_projector_gets_no_gradient():
    """Why projector_init defaults to xavier: ReLU(0 * x + 0) passes no gradient (Q-F6)."""
    attn = StructuralDeformableAttention(3, 32, 4, 3, 2, projector_init='zero')
    value = torch.randn(1, int(SHAPES.prod(1).sum()), 32)
    ref = torch.rand(1, 5, 3, 2)
    attn(torch.randn(1, 5, 32), ref, value, SHAPES).sum().backward()
    assert attn.projector[0].weight.grad.abs().max() == 0
    xavier = StructuralDeformableAttention(3, 32, 4, 3, 2)
    xavier(torch.randn(1, 5, 32), ref, value, SHAPES).sum().backward()
    assert xavier.projector[0].weight.grad.abs().max() > 0


def test_mining_layer_token_sets_share_an_image():
    """T token sets mining one image == each set mined alone (self-attention stays per set)."""
    torch.manual_seed(0)
    layer = _randomise(FGSAMiningLayer(32, 4, 3, 2, 64, side_heads=3, dropout=0.0)).eval()
    value = torch.randn(2, int(SHAPES.prod(1).sum()), 32)
    embed = torch.randn(2, 3, 6, 32)
    args = (torch.randn(1, 6, 32), torch.randn(2, 6, 32), torch.rand(2, 6, 2), value, SHAPES)
    mask = torch.zeros(2, 6, dtype=torch.bool)
    mask[0, 4:] = True
    nbr = _chain_neighbours(2, 6)
    together = layer(embed, *args, None, nbr, mask)
    for t in range(3):
        alone = layer(embed[:, t:t + 1], *args, None, nbr, mask)
        torch.testing.assert_close(alone[:, 0], together[:, t], atol=1e-5, rtol=1e-5)


def test_mining_layer_with_every_key_masked_stays_finite():
    layer = FGSAMiningLayer(32, 4, 3, 2, 64, side_heads=0, dropout=0.0)
    value = torch.randn(1, int(SHAPES.prod(1).sum()), 32)
    out = layer(torch.randn(1, 1, 5, 32), torch.randn(1, 5, 32), torch.randn(1, 5, 32),
                torch.rand(1, 5, 2), value, SHAPES,
                key_padding_mask=torch.ones(1, 5, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_top_down_neck_fuses_coarse_into_fine():
    neck = LevelProjectionNeck([8, 16, 32], num_levels=3, out_channels=4, top_down=True)
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4), torch.randn(1, 32, 2, 2)]
    p5, p4, p3 = neck(feats)
    assert [m.shape[-1] for m in (p5, p4, p3)] == [2, 4, 8]
    torch.testing.assert_close(p5, neck.projs[0](feats[2]))
    up = p5.repeat_interleave(2, -1).repeat_interleave(2, -2)
    torch.testing.assert_close(p4, neck.projs[1](feats[1]) + up)


def _predictor_inputs(b=1, s=2, q=3, k=8, c=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    maps_s = [torch.randn(b * s, c, h, w, generator=g) for h, w in SHAPES.tolist()]
    maps_q = [torch.randn(b * q, c, h, w, generator=g) for h, w in SHAPES.tolist()]
    pts = torch.rand(b, s, k, 2, generator=g)
    w = (torch.rand(b, s, k, generator=g) > 0.3).float()
    nbr = _chain_neighbours(b * s, k).reshape(b, s, k, 16)
    return maps_q, maps_s, pts, w, nbr


def _small_predictor(**kw):
    torch.manual_seed(0)
    return RecurrentFGSAPredictor(num_layers=2, embed_dims=32, num_heads=4, num_points=2,
                                  ffn_dims=64, dropout=0.0, side_heads=3, **kw)


@pytest.mark.parametrize('options', [
    dict(), dict(side_heads=0), dict(side_heads=1), dict(self_attn=False),
    dict(embed_init='cst'), dict(ref_feat_aware=True), dict(use_joint_encoder=True),
    dict(top_down_fuse=True), dict(reuse_layers=True)
], ids=lambda o: '-'.join(f'{k}={v}' for k, v in o.items()) or 'default')
def test_predictor_options_run_and_train(options):
    side = options.pop('side_heads', 3)
    torch.manual_seed(0)
    pred = RecurrentFGSAPredictor(num_layers=2, embed_dims=32, num_heads=4, num_points=2,
                                  ffn_dims=64, dropout=0.0, side_heads=side, **options)
    _randomise(pred)  # zero-initialised heads would make every prediction the centre
    maps_q, maps_s, pts, w, nbr = _predictor_inputs()
    out = pred(maps_q, maps_s, pts, w, nbr)
    assert len(out['points']) == 2 and out['points'][-1].shape == (3, 8, 2)
    assert all(torch.isfinite(p).all() for p in out['points'])
    out['points'][-1].sum().backward()
    assert pred.query_layers[1].norm2.weight.grad is not None
    if options.get('reuse_layers'):
        assert pred.support_layers[0] is pred.support_layers[1]
        keys = pred.state_dict().keys()
        assert 'predictor' not in keys and any(k.startswith('support_layers.1.') for k in keys)


def test_fresh_predictor_starts_at_the_centre_and_cst_embedding_ignores_support():
    maps_q, maps_s, pts, w, nbr = _predictor_inputs()
    out = _small_predictor()(maps_q, maps_s, pts, w, nbr)
    assert torch.equal(out['points'][0], torch.full_like(out['points'][0], 0.5))
    cst = _randomise(_small_predictor(embed_init='cst'))
    assert cst(maps_q, maps_s, pts, w, nbr)['init_embed'].abs().max() == 0


def test_points_accumulate_in_logit_space_and_layers_are_detached():
    pred = _randomise(_small_predictor())
    maps_q, maps_s, pts, w, nbr = _predictor_inputs()
    out = pred(maps_q, maps_s, pts, w, nbr)
    z = out['deltas'][0] + out['deltas'][1]
    torch.testing.assert_close(out['points'][1], z.sigmoid(), atol=1e-6, rtol=0)
    out['points'][1].sum().backward()  # layer 1 only: no gradient into layer 0's head
    assert all(p.grad is None or p.grad.abs().max() == 0
               for p in pred.kpt_branch[0].parameters())


def test_episode_queries_batched_equal_one_at_a_time():
    pred = _randomise(_small_predictor()).eval()
    maps_q, maps_s, pts, w, nbr = _predictor_inputs(q=3)
    with torch.no_grad():
        together = pred(maps_q, maps_s, pts, w, nbr)['points'][-1]
        for i in range(3):
            one = pred([m[i:i + 1] for m in maps_q], maps_s, pts, w, nbr)['points'][-1]
            torch.testing.assert_close(one[0], together[i], atol=1e-5, rtol=1e-5)


def test_invisible_shot_does_not_change_the_fused_embedding():
    """A shot whose keypoints are all invisible has zero weight in the shot fusion."""
    pred = _randomise(_small_predictor()).eval()
    maps_q, maps_s, pts, w, nbr = _predictor_inputs(s=2, q=1)
    w[:, 1] = 0
    with torch.no_grad():
        both = pred(maps_q, maps_s, pts, w, nbr)['points'][-1]
        nbr1 = nbr[:, 1:].clone()
        nbr1[:] = nbr[:, :1]  # the query uses the last shot's table (Q-F4): keep it the same
        first = pred(maps_q, [m[:1] for m in maps_s], pts[:, :1], w[:, :1],
                     nbr[:, :1])['points'][-1]
        both_same_table = pred(maps_q, maps_s, pts, w,
                               torch.cat([nbr[:, :1], nbr1], 1))['points'][-1]
    assert torch.isfinite(both).all()
    torch.testing.assert_close(both_same_table, first, atol=1e-5, rtol=1e-5)


def _episode(shots=1, queries=2, k=70, size=64, num_kpts=(12,), seed=0):
    g = torch.Generator().manual_seed(seed)
    b = len(num_kpts)
    w_s = torch.zeros(b, shots, k)
    w_q = torch.zeros(b, queries, k)
    for i, n in enumerate(num_kpts):
        w_s[i, :, :n + 5] = 1  # 5 padded (mixup) slots visible
        w_q[i, :, :n + 5] = 1
    nbr = _chain_neighbours(b * shots, k).reshape(b, shots, k, 16)
    return make_episode_batch(
        torch.randn(b, shots, 3, size, size, generator=g),
        torch.randn(b, queries, 3, size, size, generator=g),
        torch.rand(b, shots, k, 2, generator=g), torch.rand(b, queries, k, 2, generator=g),
        support_weights=w_s, query_weights=w_q, num_kpts=torch.tensor(num_kpts),
        support_neighbour_idx=nbr)


def _small_fmmp(**predictor):
    register_all_modules()
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone = dict(type='TorchvisionResNet', depth=18, out_indices=(1, 2, 3))
    cfg.model.predictor.update(dict(num_layers=2, dropout=0.0), **predictor)
    torch.manual_seed(0)
    return MODELS.build(cfg.model)


def test_loss_terms_follow_the_official_normalisation():
    model = _small_fmmp()
    _randomise(model.predictor)
    model.train()
    batch = _episode(num_kpts=(12, 30), queries=2)
    losses = model.loss(batch)
    out = model.run_episode(batch)  # BN batch stats: same batch, same numbers
    gt = batch.query_keypoints.flatten(0, 1)
    w = batch.query_keypoint_weights.flatten(0, 1)
    num = [12, 12, 30, 30]
    real_terms, mix_terms = [], []
    for i in range(4):
        r = [sum(((out['points'][l][i, :num[i]] - gt[i, :num[i]]).abs().sum(-1)
                  * w[i, :num[i]]).sum() / w[i, :num[i]].sum() for l in range(2))]
        m = [sum(((out['points'][l][i, num[i]:] - gt[i, num[i]:]).abs().sum(-1)
                  * w[i, num[i]:]).sum() / w[i, num[i]:].sum() for l in range(2))]
        real_terms += r
        mix_terms += m
    torch.testing.assert_close(losses['l1_loss_real'], torch.stack(real_terms).mean(),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(losses['l1_loss_mix'], 0.5 * torch.stack(mix_terms).mean(),
                               atol=1e-5, rtol=1e-5)
    sum(losses.values()).backward()
    assert model.backbone.conv1.weight.grad.abs().max() > 0


def test_estimator_predicts_episode_batches_and_requires_neighbours():
    model = _small_fmmp().eval()
    batch = _episode(shots=2, queries=3)
    with torch.no_grad():
        pts = model(batch, mode='tensor')
    assert pts.shape == (1, 3, 70, 2)
    with pytest.raises(KeyError, match='StructuralNeighbours'):
        model(batch.replace(support_neighbour_idx=None), mode='tensor')
    short = _episode(shots=2, queries=3, k=60)
    with pytest.raises(ValueError, match='max_kpt_num'):
        model(short, mode='tensor')


def test_unsupported_options_are_refused():
    with pytest.raises(ValueError, match='point_init'):
        RecurrentFGSAPredictor(point_init='sm')
    with pytest.raises(ValueError, match='embed_init'):
        RecurrentFGSAPredictor(embed_init='mean')
    with pytest.raises(ValueError, match='projector_init'):
        StructuralDeformableAttention(2, projector_init='ones')


def test_flatten_levels_order_matches_spatial_shapes():
    maps = [torch.randn(1, 3, h, w) for h, w in SHAPES.tolist()]
    value, shapes, start = flatten_multilevel(maps)
    assert torch.equal(shapes, SHAPES) and start.tolist() == [0, 4, 20]
    assert value.shape == (1, 84, 3)


def test_optional_similarity_aid_adds_loss_and_starts_at_the_peak():
    """similarity_aid (a CPU-budget aid, not the paper method): loss_sim0 and peak init."""
    model = _small_fmmp()
    batch = _episode(num_kpts=(12,), queries=2)
    model.train()
    assert 'loss_sim0' not in model.loss(batch)
    register_all_modules()
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.backbone = dict(type='TorchvisionResNet', depth=18, out_indices=(1, 2, 3))
    cfg.model.predictor.update(num_layers=2, dropout=0.0)
    cfg.model.similarity_aid = dict(type='SimilarityAid', levels=(-1,),
                                    support_features='point', init_points=True)
    torch.manual_seed(0)
    aided = MODELS.build(cfg.model)
    aided.train()
    losses = aided.loss(batch)
    assert torch.isfinite(losses['loss_sim0']) and losses['loss_sim0'] > 0
    losses['loss_sim0'].backward()
    assert aided.backbone.conv1.weight.grad.abs().max() > 0
    aided.eval()
    with torch.no_grad():
        out = aided.run_episode(batch)
    # coordinate heads start at zero: the first layer's points are the similarity peaks
    peaks = out['similarity_aid']['init_points']
    state = out['similarity_aid']
    torch.testing.assert_close(
        peaks, similarity_peak_points(state['features'][0], state['query_maps'][0]))
    torch.testing.assert_close(out['points'][0], peaks, atol=1e-5, rtol=0)
    assert not torch.allclose(peaks, torch.full_like(peaks, 0.5))
    cfg.model.similarity_aid = dict(type='SimilarityAid', level=-1)
    with pytest.raises(UnknownConfigKeyError, match="unknown key.*'level'"):
        MODELS.build(cfg.model)


def test_group_norm_neck_projects_each_level_without_fusion():
    neck = LevelProjectionNeck([8, 16, 32], num_levels=2, out_channels=4, norm='gn',
                               num_groups=2)
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4), torch.randn(1, 32, 2, 2)]
    p5, p4 = neck(feats)
    torch.testing.assert_close(p4, neck.projs[1](feats[1]))
    assert isinstance(neck.projs[0][1], torch.nn.GroupNorm)
    with pytest.raises(ValueError, match='norm'):
        LevelProjectionNeck([8], num_levels=1, norm='bn')
