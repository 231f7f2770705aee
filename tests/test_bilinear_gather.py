"""Attention-weighted bilinear gather == grid_sample deformable attention, values and gradients."""
import pytest
import torch

from metapoint.models.layers.bilinear_gather import (_WeightedRowSum, bilinear_corners,
                                                     weighted_row_sum)
from metapoint.models.layers.ms_deform_attn import multi_scale_deformable_attn_pytorch

SHAPES = torch.tensor([[3, 4], [5, 2], [6, 7]])


def _inputs(n=2, q=5, m=3, p=2, c=4, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = int(SHAPES.prod(1).sum())
    value = torch.randn(n, s, m, c, generator=g, dtype=dtype)
    # locations well beyond [0, 1] too: corners outside the map must read zero
    loc = torch.rand(n, q, m, len(SHAPES), p, 2, generator=g, dtype=dtype) * 1.6 - 0.3
    loc[0, 0, 0, 0, 0] = torch.tensor([0.0, 1.0], dtype=dtype)  # exact borders
    loc[0, 0, 0, 1, 0] = torch.tensor([-0.75, 1.5], dtype=dtype)  # fully outside
    weights = torch.rand(n, q, m, len(SHAPES), p, generator=g, dtype=dtype)
    return value, loc, weights


def _gather(value, loc, weights):
    """Same function as multi_scale_deformable_attn_pytorch, through bilinear_gather."""
    n, s, m, c = value.shape
    q = loc.shape[1]
    # table rows: one C-channel row per (item, position, head): heads become the group axis
    table = value.permute(2, 0, 1, 3).reshape(m * n * s, c)
    pixels = loc * SHAPES.flip(-1)[:, None].to(loc.dtype) - 0.5  # normalised -> pixel centres
    index, weight = bilinear_corners(pixels.permute(2, 0, 1, 3, 4, 5),
                                     weights.permute(2, 0, 1, 3, 4), SHAPES, s)
    index = index + (torch.arange(m) * n * s).repeat_interleave(n * q)[:, None].to(index.dtype)
    out = weighted_row_sum(index, table, weight)  # [M*N*Q, C]
    return out.view(m, n, q, c).permute(1, 2, 0, 3).reshape(n, q, m * c)


def test_gather_equals_grid_sample_values_and_gradients():
    value, loc, weights = _inputs()
    grads = []
    for fn in (multi_scale_deformable_attn_pytorch, None):
        v, l_, w = (t.clone().requires_grad_() for t in (value, loc, weights))
        out = (multi_scale_deformable_attn_pytorch(v, SHAPES, l_, w) if fn else
               _gather(v, l_, w))
        (out * torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads.append((out.detach(), v.grad, l_.grad, w.grad))
    for ref, got in zip(*grads):
        torch.testing.assert_close(got, ref, atol=1e-10, rtol=1e-10)
    assert grads[0][0].abs().max() > 0 and grads[0][2].abs().max() > 0


def test_fully_outside_points_read_zero():
    value, loc, weights = _inputs()
    loc[...] = torch.tensor([-2.0, 3.0], dtype=loc.dtype)
    assert _gather(value, loc, weights).abs().max() == 0


def test_corner_weights_are_the_bilinear_ones():
    """One 2x2 level, the point between all four pixel centres: four rows of weight 1/4."""
    loc = torch.tensor([0.5, 0.5]).view(1, 1, 1, 1, 1, 2)  # pixels: normalised (0.5, 0.5)
    index, weight = bilinear_corners(loc, torch.ones(1, 1, 1, 1, 1), torch.tensor([[2, 2]]), 4)
    assert index.tolist() == [[0, 1, 2, 3]]
    torch.testing.assert_close(weight, torch.full((1, 4), 0.25))
    with pytest.raises(ValueError, match='must be'):
        bilinear_corners(loc, torch.ones(1, 1, 1, 1, 2), torch.tensor([[2, 2]]), 4)


def test_weighted_row_sum_backward_matches_embedding_bag():
    """The sort-based CPU backward is the exact gradient (gradcheck in float64)."""
    g = torch.Generator().manual_seed(1)
    table = torch.randn(9, 3, dtype=torch.float64, generator=g, requires_grad=True)
    index = torch.randint(0, 9, (6, 5), generator=g)
    weight = torch.rand(6, 5, dtype=torch.float64, generator=g, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t, w: _WeightedRowSum.apply(index, t, w),
                                    (table, weight))
    assert torch.autograd.gradcheck(lambda t, w: _WeightedRowSum.apply(index.int(), t, w),
                                    (table, weight))
    out = weighted_row_sum(index, table, weight)
    manual = (weight[..., None] * table[index]).sum(1)
    torch.testing.assert_close(out, manual)
