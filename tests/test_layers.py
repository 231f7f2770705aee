"""Shared layers: deformable attention, positional encoding, point ops, coordinate MLP.

Official-parity cases come from the packed official function fixtures (tests/data/official,
outputs of the official code); the rest checks shapes, layouts and invariants against independent references.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from metapoint.models.layers import (MSDA_CUDA_AVAILABLE, MultiScaleDeformableAttention,
                                     SinePositionalEncoding, TokenDecodeMLP,
                                     cuda_kernel_applicable, flatten_multilevel, inverse_sigmoid,
                                     level_start_index, multi_scale_deformable_attn,
                                     multi_scale_deformable_attn_pytorch, sample_point_features)

from tests.helpers import load_official_functions


@pytest.fixture(scope='module')
def official():
    return load_official_functions()


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


# ----------------------------------------------------------------------- official fixtures
@pytest.mark.parametrize('case', ['small_nonsquare', 'model_levels'])
def test_msda_core_matches_official(official, case):
    c = official['ms_deform_attn_core_pytorch'][case]
    out = multi_scale_deformable_attn_pytorch(c['value'], c['value_spatial_shapes'],
                                              c['sampling_locations'], c['attention_weights'])
    assert out.shape == c['output'].shape
    assert max_abs(out, c['output']) <= 1e-6
    # the dispatcher takes the same pure path on CPU
    out2 = multi_scale_deformable_attn(c['value'], c['value_spatial_shapes'],
                                       c['sampling_locations'], c['attention_weights'])
    assert torch.equal(out, out2)


def test_sample_point_features_matches_official_get_ref_feat(official):
    c = official['get_ref_feat']
    out = sample_point_features(c['values_flatten'], c['ref_points'], c['spatial_shapes'])
    assert out.shape == c['output'].shape
    assert max_abs(out, c['output']) <= 1e-6
    # the list-of-maps form on the same maps
    b, _, ch = c['values_flatten'].shape
    maps, start = [], 0
    for h, w in c['spatial_shapes'].tolist():
        level = c['values_flatten'][:, start:start + h * w]
        maps.append(level.transpose(1, 2).reshape(b, ch, h, w))
        start += h * w
    assert max_abs(sample_point_features(maps, c['ref_points']), c['output']) <= 1e-6


def test_inverse_sigmoid_matches_official(official):
    c = official['inverse_sigmoid']
    assert max_abs(inverse_sigmoid(c['x'], eps=c['eps']), c['output']) <= 1e-6


@pytest.fixture(scope='module')
def pe_case(official):
    c = official['sine_positional_encoding']
    return c, SinePositionalEncoding(**c['config'])


def test_pe_forward_coordinates_matches_official(pe_case):
    c, pe = pe_case
    out = pe.forward_coordinates(c['coords'])
    assert out.shape == (2, 5, 256)
    assert max_abs(out, c['forward_coordinates']) <= 1e-6


@pytest.mark.parametrize('mask_key', ['mask_order', 'mask_map'])
def test_pe_forward_mask_matches_official(pe_case, mask_key):
    c, pe = pe_case
    out = pe(c[mask_key])
    assert out.shape == c['forward_' + mask_key].shape
    assert max_abs(out, c['forward_' + mask_key]) <= 1e-6


def test_pe_helpers_match_official(pe_case):
    c, pe = pe_case
    order = c['forward_mask_order']  # [2, 256, 1, 7]
    assert max_abs(pe.order_pe(7, 2, 'cpu'), order.flatten(2).transpose(1, 2)) <= 1e-6
    assert max_abs(pe.map_pe(8, 6, 2, 'cpu'), c['forward_mask_map']) <= 1e-6


def test_pe_float_mask_quirk_matches_official(pe_case):
    """FMMP F3: float x-coordinates passed as the order 'mask' (|x| >= 1 shifts every slot)."""
    c, pe = pe_case
    assert max_abs(pe(c['float_mask_fmmp']), c['forward_float_mask_fmmp']) <= 1e-6
    # a float mask strictly inside (-1, 1) is the plain order embedding
    inside = torch.rand(2, 1, 7) * 1.8 - 0.9
    assert torch.equal(pe(inside), pe(torch.zeros(2, 1, 7, dtype=torch.bool)))


# ----------------------------------------------------------------------- pure core vs naive
def naive_msda(value, shapes, locs, weights):
    """Explicit loops over batch, queries, heads, levels, points; manual zero-padded bilinear."""
    n, _, m, d = value.shape
    _, lq, _, nl, p, _ = locs.shape
    out = value.new_zeros(n, lq, m, d)
    starts = level_start_index(shapes).tolist()
    for b in range(n):
        for q in range(lq):
            for h in range(m):
                for lvl, (hh, ww) in enumerate(shapes.tolist()):
                    fmap = value[b, starts[lvl]:starts[lvl] + hh * ww, h].view(hh, ww, d)
                    for k in range(p):
                        x = locs[b, q, h, lvl, k, 0] * ww - 0.5  # pixel centres at i
                        y = locs[b, q, h, lvl, k, 1] * hh - 0.5
                        x0, y0 = math.floor(x.item()), math.floor(y.item())
                        acc = value.new_zeros(d)
                        for yi, wy in ((y0, y0 + 1 - y), (y0 + 1, y - y0)):
                            for xi, wx in ((x0, x0 + 1 - x), (x0 + 1, x - x0)):
                                if 0 <= yi < hh and 0 <= xi < ww:
                                    acc = acc + wy * wx * fmap[yi, xi]
                        out[b, q, h] += weights[b, q, h, lvl, k] * acc
    return out.flatten(2)


def random_msda_inputs(n=2, lq=3, m=2, d=3, p=2, shapes=((3, 5), (2, 2), (4, 3)), seed=0,
                       dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = torch.tensor(shapes, dtype=torch.long)
    s = int(shapes.prod(1).sum())
    nl = shapes.shape[0]
    value = torch.randn(n, s, m, d, generator=g, dtype=dtype)
    locs = torch.rand(n, lq, m, nl, p, 2, generator=g, dtype=dtype) * 1.6 - 0.3  # some outside
    weights = torch.randn(n, lq, m, nl * p, generator=g, dtype=dtype).softmax(-1)
    return value, shapes, locs, weights.view(n, lq, m, nl, p)


@pytest.mark.parametrize('seed', [0, 1])
def test_core_equals_naive_reference(seed):
    value, shapes, locs, weights = random_msda_inputs(seed=seed)
    # exact pixel boundaries and far-outside points too
    locs[0, 0, 0, 0, 0] = torch.tensor([0.0, 1.0], dtype=locs.dtype)
    locs[0, 0, 1, 1, 1] = torch.tensor([-2.0, 3.0], dtype=locs.dtype)
    ref = naive_msda(value, shapes, locs, weights)
    out = multi_scale_deformable_attn_pytorch(value, shapes, locs, weights)
    assert out.shape == (2, 3, 2 * 3)
    assert max_abs(out, ref) <= 1e-6
    out32 = multi_scale_deformable_attn_pytorch(value.float(), shapes, locs.float(),
                                                weights.float())
    assert max_abs(out32, ref) <= 1e-6


def test_core_rejects_inconsistent_shapes():
    value, shapes, locs, weights = random_msda_inputs(dtype=torch.float32)
    with pytest.raises(ValueError, match='cover'):
        multi_scale_deformable_attn_pytorch(value[:, 1:], shapes, locs, weights)
    with pytest.raises(ValueError, match='attention_weights'):
        multi_scale_deformable_attn_pytorch(value, shapes, locs, weights[..., :1])


def test_core_gradients_match_naive():
    value, shapes, locs, weights = random_msda_inputs(n=1, lq=2, seed=3)
    leaves = [value.requires_grad_(), locs.requires_grad_(), weights.requires_grad_()]
    probe = torch.randn(1, 2, 6, dtype=torch.float64)
    g1 = torch.autograd.grad((multi_scale_deformable_attn_pytorch(value, shapes, locs, weights)
                              * probe).sum(), leaves)
    g2 = torch.autograd.grad((naive_msda(value, shapes, locs, weights) * probe).sum(), leaves)
    for a, b in zip(g1, g2):
        assert max_abs(a, b) <= 1e-9


# ----------------------------------------------------------------------- the module
SHAPES = torch.tensor([[4, 6], [2, 3], [8, 5]])  # non-square levels


def make_module(seed=0, **kw):
    torch.manual_seed(seed)
    kw = {'embed_dims': 16, 'num_heads': 4, 'num_levels': 3, 'num_points': 2, **kw}
    attn = MultiScaleDeformableAttention(**kw)
    with torch.no_grad():  # non-trivial offsets and weights (init makes them query-independent)
        attn.sampling_offsets.weight.normal_(0, 0.3)
        attn.attention_weights.weight.normal_(0, 0.3)
    return attn


def module_inputs(n=2, lq=5, c=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = int(SHAPES.prod(1).sum())
    return (torch.randn(n, lq, c, generator=g), torch.rand(n, lq, 2, generator=g),
            torch.randn(n, s, c, generator=g))


def test_module_state_dict_layout():
    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=8, num_levels=3, num_points=4)
    sd = {k: tuple(v.shape) for k, v in attn.state_dict().items()}
    assert sd == {
        'sampling_offsets.weight': (8 * 3 * 4 * 2, 32), 'sampling_offsets.bias': (8 * 3 * 4 * 2,),
        'attention_weights.weight': (8 * 3 * 4, 32), 'attention_weights.bias': (8 * 3 * 4,),
        'value_proj.weight': (32, 32), 'value_proj.bias': (32,),
        'output_proj.weight': (32, 32), 'output_proj.bias': (32,)}
    assert not any(isinstance(mod, torch.nn.Dropout) for mod in attn.modules())


def test_module_output_shape_and_reference_forms():
    attn = make_module()
    query, ref, value = module_inputs()
    out = attn(query, ref, value, SHAPES)
    assert out.shape == (2, 5, 16)
    per_level = ref[:, :, None].expand(-1, -1, 3, -1)
    out_lvl = attn(query, per_level, value, SHAPES, level_start_index(SHAPES))
    assert max_abs(out, out_lvl) <= 1e-6
    per_head = per_level[:, :, None].expand(-1, -1, 4, -1, -1)
    assert max_abs(out, attn(query, per_head, value, SHAPES)) <= 1e-6
    with pytest.raises(ValueError):
        attn(query, ref[..., None], value, SHAPES)


def test_module_per_head_reference_points_differ_per_head():
    attn = make_module()
    query, ref, value = module_inputs()
    per_head = ref[:, :, None, None].expand(-1, -1, 4, 3, -1).clone()
    base = attn(query, per_head, value, SHAPES)
    per_head[:, :, 2] = torch.rand(2, 5, 1, 2)  # move only head 2's reference
    moved = attn(query, per_head, value, SHAPES)
    # only head 2's channels change before output_proj: undo the projection to check
    w, b = attn.output_proj.weight, attn.output_proj.bias
    pre = torch.linalg.solve(w, (torch.stack([base, moved]) - b).unsqueeze(-1)).squeeze(-1)
    changed = (pre[0] - pre[1]).abs().amax((0, 1)).view(4, 4).amax(1)
    assert changed[2] > 1e-3 and changed[[0, 1, 3]].max() < 1e-4


def test_module_layout_semantics_single_sample():
    """One-hot attention on (head, level, point) + known pixel offset = one bilinear sample."""
    c, m, nl, p = 8, 2, 3, 2
    attn = MultiScaleDeformableAttention(embed_dims=c, num_heads=m, num_levels=nl, num_points=p)
    h, lvl, k, off = 1, 2, 1, (1.5, -0.75)
    with torch.no_grad():
        attn.value_proj.weight.copy_(torch.eye(c))
        attn.output_proj.weight.copy_(torch.eye(c))
        attn.sampling_offsets.bias.zero_()
        attn.sampling_offsets.bias.view(m, nl, p, 2)[h, lvl, k] = torch.tensor(off)
        attn.attention_weights.bias.fill_(-1e4)
        attn.attention_weights.bias.view(m, nl * p)[h, lvl * p + k] = 0
    _, _, value = module_inputs(n=1, c=c)
    ref = torch.tensor([[[0.4, 0.6]]])
    out = attn(torch.zeros(1, 1, c), ref, value, SHAPES)
    hh, ww = SHAPES[lvl].tolist()
    start = level_start_index(SHAPES)[lvl]
    fmap = value[0, start:start + hh * ww, h * 4:(h + 1) * 4].T.reshape(1, 4, hh, ww)
    loc = torch.tensor([0.4 + off[0] / ww, 0.6 + off[1] / hh])
    expected = F.grid_sample(fmap, (2 * loc - 1).view(1, 1, 1, 2), align_corners=False)
    assert max_abs(out[0, 0, h * 4:(h + 1) * 4], expected.flatten()) <= 1e-6


def test_module_value_padding_mask():
    attn = make_module()
    query, ref, value = module_inputs()
    mask = torch.rand(value.shape[:2]) < 0.3
    out = attn(query, ref, value, SHAPES, value_padding_mask=mask)
    # masked rows do not matter at all ...
    value2 = torch.where(mask[..., None], torch.randn_like(value) * 100, value)
    assert max_abs(out, attn(query, ref, value2, SHAPES, value_padding_mask=mask)) <= 1e-5
    # ... and with a bias-free value projection the mask equals zeroing the input rows
    with torch.no_grad():
        attn.value_proj.bias.zero_()
    out = attn(query, ref, value, SHAPES, value_padding_mask=mask)
    assert max_abs(out, attn(query, ref, value.masked_fill(mask[..., None], 0), SHAPES)) <= 1e-6
    assert max_abs(out, attn(query, ref, value, SHAPES)) > 1e-3


def test_module_init_weights_pattern():
    m, nl, p = 8, 3, 4
    attn = MultiScaleDeformableAttention(embed_dims=32, num_heads=m, num_levels=nl,
                                         num_points=p)
    with torch.no_grad():
        for prm in attn.parameters():
            prm.normal_()
    attn.init_weights()
    assert attn.sampling_offsets.weight.abs().max() == 0
    bias = attn.sampling_offsets.bias.detach().view(m, nl, p, 2)
    for h in range(m):
        direction = torch.tensor([math.cos(2 * math.pi * h / m), math.sin(2 * math.pi * h / m)])
        direction = direction / direction.abs().max()
        for k in range(p):
            assert torch.allclose(bias[h, :, k], (k + 1) * direction.expand(nl, 2), atol=1e-6)
    assert torch.equal(bias[0, 0, :, 0], torch.tensor([1., 2., 3., 4.]))  # head 0 along +x
    assert attn.attention_weights.weight.abs().max() == 0
    assert attn.attention_weights.bias.abs().max() == 0
    for proj in (attn.value_proj, attn.output_proj):
        assert proj.bias.abs().max() == 0
        bound = math.sqrt(6 / (32 + 32))  # xavier-uniform
        assert proj.weight.abs().max() <= bound and proj.weight.std() > bound / 3


def test_module_backward_reaches_everything():
    attn = make_module()
    query, ref, value = module_inputs()
    query.requires_grad_()
    value.requires_grad_()
    attn(query, ref, value, SHAPES).pow(2).sum().backward()
    for t in [query, value] + list(attn.parameters()):
        assert t.grad is not None and t.grad.abs().max() > 0


def test_module_batch_first_false():
    attn = make_module()
    query, ref, value = module_inputs()
    out = attn(query, ref, value, SHAPES)
    attn.batch_first = False
    out_t = attn(query.transpose(0, 1), ref, value.transpose(0, 1), SHAPES)
    assert torch.equal(out, out_t.transpose(0, 1))


def test_kernel_switch_on_cpu_uses_pure_path():
    value, shapes, locs, weights = random_msda_inputs(dtype=torch.float32)
    assert not cuda_kernel_applicable(value, True)
    assert not cuda_kernel_applicable(value, False)
    pure = multi_scale_deformable_attn_pytorch(value, shapes, locs, weights)
    for flag in (True, False):
        assert torch.equal(multi_scale_deformable_attn(value, shapes, locs, weights,
                                                       use_cuda_kernel=flag), pure)
    query, ref, val = module_inputs()
    outs = [make_module(use_cuda_kernel=flag)(query, ref, val, SHAPES) for flag in (True, False)]
    assert torch.equal(outs[0], outs[1])


@pytest.mark.skipif(not (torch.cuda.is_available() and MSDA_CUDA_AVAILABLE),
                    reason='needs CUDA and mmcv compiled ops')
def test_cuda_kernel_agrees_with_pure_path():
    attn = make_module().cuda()
    query, ref, value = (t.cuda() for t in module_inputs())
    assert cuda_kernel_applicable(value, True)
    query.requires_grad_()
    out_k = attn(query, ref, value, SHAPES.cuda())
    attn.use_cuda_kernel = False
    out_p = attn(query, ref, value, SHAPES.cuda())
    assert max_abs(out_k, out_p) <= 1e-5
    g_k, = torch.autograd.grad(out_k.sum(), query)
    g_p, = torch.autograd.grad(out_p.sum(), query)
    assert max_abs(g_k, g_p) <= 1e-4


# ----------------------------------------------------------------------- point ops, MLP, PE
def test_sample_point_features_is_level_average_of_bilinear_samples():
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(2, 6, h, w, generator=g) for h, w in [(3, 5), (6, 4)]]
    points = torch.rand(2, 7, 2, generator=g) * 1.4 - 0.2
    out = sample_point_features(maps, points)
    grid = (2 * points - 1)[:, :, None]
    expected = sum(F.grid_sample(mp, grid, align_corners=False)[..., 0] for mp in maps) / 2
    assert out.shape == (2, 7, 6)
    assert max_abs(out, expected.transpose(1, 2)) <= 1e-6
    value, shapes, _ = flatten_multilevel(maps)
    assert torch.equal(out, sample_point_features(value, points, shapes))
    with pytest.raises(ValueError):
        sample_point_features(value, points)


def test_inverse_sigmoid_properties():
    x = torch.linspace(0.001, 0.999, 101)
    assert max_abs(inverse_sigmoid(x).sigmoid(), x) <= 1e-6
    bound = -math.log(0.001)  # log(eps / 1) at x <= 0
    assert torch.allclose(inverse_sigmoid(torch.tensor([-3., 0., 1., 7.])),
                          torch.tensor([-bound, -bound, bound, bound]))


def test_token_decode_mlp_layout():
    mlp = TokenDecodeMLP()
    keys = {k: tuple(v.shape) for k, v in mlp.state_dict().items()}
    assert keys == {'mlp.0.weight': (256, 256), 'mlp.0.bias': (256,),
                    'mlp.2.weight': (256, 256), 'mlp.2.bias': (256,),
                    'mlp.4.weight': (256, 256), 'mlp.4.bias': (256,),
                    'mlp.6.weight': (2, 256), 'mlp.6.bias': (2,)}
    assert [type(mod).__name__ for mod in mlp.mlp] == ['Linear', 'GELU'] * 3 + ['Linear']
    assert mlp(torch.randn(3, 5, 256)).shape == (3, 5, 2)


def test_pe_layout_and_helpers():
    pe = SinePositionalEncoding(num_feats=8)
    coords = torch.tensor([[[0.25, 0.75]]])
    out = pe.forward_coordinates(coords)[0, 0]
    dim_t = 10000**(2 * (torch.arange(8) // 2) / 8)
    y, x = 0.75 * 2 * math.pi / dim_t, 0.25 * 2 * math.pi / dim_t
    expect_y = torch.where(torch.arange(8) % 2 == 0, y.sin(), y.cos())
    expect_x = torch.where(torch.arange(8) % 2 == 0, x.sin(), x.cos())
    assert max_abs(out, torch.cat([expect_y, expect_x])) <= 1e-6
    order = pe.order_pe(5, 3, 'cpu')
    assert order.shape == (3, 5, 16)
    # slot k of K is encoded like the point (k/(K+eps), 1/(1+eps))
    pts = torch.stack([torch.arange(1, 6) / (5 + 1e-6), torch.full((5,), 1 / (1 + 1e-6))], -1)
    assert max_abs(order[0], pe.forward_coordinates(pts[None])[0]) <= 1e-5
    assert pe.map_pe(4, 6, 2, 'cpu').shape == (2, 16, 4, 6)


def test_visibility_weighted_shot_mean():
    from metapoint.models.layers import visibility_weighted_shot_mean
    values = torch.tensor([[[[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]],
                            [[5.0, 50.0], [4.0, 40.0], [9.0, 90.0]]]])  # [B=1, S=2, K=3, C=2]
    vis = torch.tensor([[[1, 1, 0], [1, 0, 0]]])  # slot 2 seen by no shot
    for floor in (0.1, 1):
        out = visibility_weighted_shot_mean(values, vis, floor)
        assert torch.equal(out, torch.tensor([[[3.0, 30.0], [2.0, 20.0], [0.0, 0.0]]]))
    soft = torch.tensor([[[0.5, 0.05, 0.0], [0.0, 0.0, 0.0]]])  # the floors differ below 1
    torch.testing.assert_close(visibility_weighted_shot_mean(values, soft, 0.1)[0, :2, 0],
                               torch.tensor([1.0, 1.0]))
    torch.testing.assert_close(visibility_weighted_shot_mean(values, soft, 1)[0, :2, 0],
                               torch.tensor([0.5, 0.1]))
    extra = values[:, :, None].expand(1, 2, 4, 3, 2)  # extra dims between shots and slots
    assert visibility_weighted_shot_mean(extra, vis[:, :, None].expand(1, 2, 4, 3), 1).shape == (
        1, 4, 3, 2)
