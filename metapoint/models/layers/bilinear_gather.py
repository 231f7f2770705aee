"""Attention-weighted bilinear sampling of multi-level feature rows, as one weighted row sum.

Deformable attention computes, for every query ``q`` and head ``g``::

    out[q, g] = sum_{l, p} A[q, g, l, p] * bilinear(V_l, loc[q, g, l, p])

Bilinear sampling with zero padding is itself a weighted sum of at most 4 pixels, so the whole
expression is ``sum_j w_j * V[r_j]`` over ``L * P * 4`` rows ``r_j`` of the flattened multi-level
map, with ``w_j = A * (corner weight) * (corner inside the map)``. This module computes those
indices and weights (:func:`bilinear_corners`) and evaluates the sum with ``embedding_bag``
(:func:`weighted_row_sum`), which reads each feature row once per use, at any channel count.

Because the sum is linear in ``V``, a projection ``V = X W^T + b`` can be applied AFTER sampling:
``out = (sum_j w_j X[r_j]) W^T + (sum_j w_j) b``. Structure-aware attention samples the raw
``C``-channel features once per side head and internal head and projects the ``[G, N*Q, C]``
result, instead of projecting the whole pyramid once per side head (8x fewer multiply-adds at the
official size; see ``benchmarks/bench_structural_attention.py``).

Coordinates follow ``ms_deform_attn``: normalised ``(x, y)`` with ``align_corners=False``, so
pixel ``i`` of a ``W``-wide level covers ``[i / W, (i + 1) / W)`` and its centre is at
``(i + 0.5) / W``; samples beyond the border read zeros (``grid_sample(padding_mode='zeros')``).
:func:`bilinear_corners` takes *pixel* coordinates ``x * W_l - 0.5`` (pixel centres at integers),
which deformable attention gets with one add (its offsets are already in pixels of each level).
"""
from typing import Tuple

import torch
import torch.nn.functional as F

from .precision import float32_region

__all__ = ['bilinear_corners', 'weighted_row_sum']


@float32_region
def bilinear_corners(pixels: torch.Tensor, weights: torch.Tensor,
                     spatial_shapes: torch.Tensor,
                     rows_per_item: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Rows and weights of attention-weighted bilinear sampling.

    Args:
        pixels: ``[G, N, Q, L, P, 2]`` ``(x, y)`` in pixels of each level, pixel centres at
            integers: ``x = x_normalised * W_l - 0.5`` (any leading ``G`` groups, e.g. heads;
            ``N`` batch items; ``Q`` queries; ``L`` levels; ``P`` points per level).
        weights: ``[G, N, Q, L, P]`` attention weights.
        spatial_shapes: LongTensor ``[L, 2]`` of ``(H_l, W_l)``; levels are concatenated in this
            order inside each batch item's ``rows_per_item = sum_l H_l * W_l`` rows.
        rows_per_item: S, the rows of one batch item (item ``n`` owns rows ``[n*S, (n+1)*S)``).

    Returns:
        ``(index, weight)``, both ``[G * N * Q, L * P * 4]`` (bags ordered ``(g, n, q)``): int32
        (int64 beyond 2**31 rows) row indices into the ``[N * S, C]`` table and their weights.
        Corners outside their level get weight 0 (their index is some valid row). Gradients flow
        to ``pixels`` (through the bilinear fractions, as ``grid_sample``'s) and to ``weights``.
    """
    if pixels.shape[:-1] != weights.shape or pixels.shape[-1] != 2:
        raise ValueError(f'pixels {tuple(pixels.shape)} must be weights '
                         f'{tuple(weights.shape)} + (2,)')
    g, n, q, nl, p, _ = pixels.shape
    if spatial_shapes.shape != (nl, 2):
        raise ValueError(f'spatial_shapes {tuple(spatial_shapes.shape)} must be ({nl}, 2)')
    # int32 rows when they fit (half the index traffic; embedding_bag takes either)
    index_dtype = torch.int32 if n * rows_per_item < 2**31 else torch.long
    shapes = spatial_shapes.to(device=pixels.device, dtype=index_dtype)
    heights, widths = shapes[:, 0, None], shapes[:, 1, None]  # [L, 1], broadcast over P
    sizes = shapes.prod(1)
    starts = (sizes.cumsum(0) - sizes)[:, None]
    px, py = pixels.unbind(-1)  # unbind, not select: one cheap backward
    x0f, y0f = px.detach().floor(), py.detach().floor()
    fx, fy = px - x0f, py - y0f
    x0, y0 = x0f.to(index_dtype), y0f.to(index_dtype)
    # (first, second) corner weight of each axis with its in-map test folded in
    in_x = torch.stack(((x0 >= 0) & (x0 < widths), (x0 >= -1) & (x0 < widths - 1)), -1)
    in_y = torch.stack(((y0 >= 0) & (y0 < heights), (y0 >= -1) & (y0 < heights - 1)), -1)
    wx = torch.stack((1 - fx, fx), -1) * in_x.to(fx.dtype)
    wy = torch.stack((1 - fy, fy), -1) * in_y.to(fy.dtype) * weights[..., None]
    weight = (wy[..., :, None] * wx[..., None, :]).reshape(g * n * q, nl * p * 4)
    item = torch.arange(n, device=pixels.device, dtype=index_dtype) * rows_per_item
    item = item.view(1, n, 1, 1, 1)
    top_left = item + starts + y0 * widths + x0  # [G, N, Q, L, P]
    step = torch.stack((torch.zeros_like(widths), torch.ones_like(widths), widths, widths + 1),
                       -1)  # [L, 1, 4]: (y0,x0) (y0,x1) (y1,x0) (y1,x1)
    # corners outside their level carry weight 0, so any in-range row may stand in for them
    index = (top_left[..., None] + step).clamp_(0, n * rows_per_item - 1)
    index = index.reshape(g * n * q, nl * p * 4)
    return index, weight


class _WeightedRowSum(torch.autograd.Function):
    """``embedding_bag(index, table, weight, 'sum')`` with a sort-based table gradient.

    PyTorch's CPU backward for the table goes through a generic per-row reduction; the
    transposed problem solved by one more ``embedding_bag`` (bags = table rows, gathered from the
    output gradient) was measured 2.2x faster on the structural-attention workload.
    """

    @staticmethod
    def forward(ctx, index, table, weight):
        ctx.save_for_backward(index, table, weight)
        return F.embedding_bag(index, table, per_sample_weights=weight, mode='sum')

    @staticmethod
    def backward(ctx, grad_out):
        index, table, weight = ctx.saved_tensors
        grad_table = grad_weight = None
        bags, per_bag = index.shape
        flat = index.reshape(-1)
        if ctx.needs_input_grad[1]:
            order = torch.argsort(flat, stable=True)  # radix sort for int32 on CPU
            counts = torch.bincount(flat, minlength=table.shape[0])
            offsets = counts.cumsum(0) - counts
            grad_table = F.embedding_bag(torch.div(order, per_bag, rounding_mode='floor'),
                                         grad_out.contiguous(), offsets,
                                         per_sample_weights=weight.reshape(-1)[order],
                                         mode='sum')
        if ctx.needs_input_grad[2]:
            # d out[b] / d weight[b, j] = table[index[b, j]]: a row-wise dot product
            offsets = torch.arange(0, bags * per_bag, per_bag, device=index.device,
                                   dtype=index.dtype)
            bag_of = torch.arange(bags, device=index.device,
                                  dtype=index.dtype).repeat_interleave(per_bag)
            grad_weight = torch.ops.aten._embedding_bag_per_sample_weights_backward(
                grad_out.contiguous(), table, flat, offsets, bag_of, 0, -1).view(bags, per_bag)
        return None, grad_table, grad_weight


@float32_region
def weighted_row_sum(index: torch.Tensor, table: torch.Tensor,
                     weight: torch.Tensor) -> torch.Tensor:
    """``out[b] = sum_j weight[b, j] * table[index[b, j]]``.

    Args:
        index: int32 or int64 ``[B, J]`` rows of ``table``; table: ``[R, C]``; weight: ``[B, J]``.
    Returns ``[B, C]``. Differentiable in ``table`` and ``weight``. On CPU the table gradient
    uses :class:`_WeightedRowSum`; elsewhere PyTorch's own ``embedding_bag`` backward.
    """
    if table.device.type == 'cpu' and torch.is_grad_enabled() and (
            table.requires_grad or weight.requires_grad):
        return _WeightedRowSum.apply(index, table, weight)
    return F.embedding_bag(index, table, per_sample_weights=weight, mode='sum')
