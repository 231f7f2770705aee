"""Multi-scale deformable attention (Deformable-DETR), as used by MetaPoint and FMMP.

Conventions shared by everything in this module:

* Points are normalised ``(x, y)`` in ``[0, 1]`` of the whole feature map: ``x = 0`` is the left
  edge of the leftmost pixel and ``x = 1`` the right edge of the rightmost one (the
  ``align_corners=False`` convention, sampled with ``grid_sample`` at ``2 * loc - 1``).
  Locations outside ``[0, 1]`` are allowed; what lies beyond the border reads as zero.
* Multi-level values are flattened and concatenated level after level, in the order given
  (coarse to fine in this project): ``value [N, S, ...]`` with ``S = sum_l H_l * W_l``.
  ``spatial_shapes`` is a LongTensor ``[L, 2]`` of ``(H_l, W_l)`` and ``level_start_index`` the
  ``[L]`` offsets of every level inside ``S``.

Two execution paths compute the same function:

* :func:`multi_scale_deformable_attn_pytorch`, pure PyTorch, for any device and dtype
  (the official code's fallback, reproduced operation for operation).
* the compiled mmcv kernel, used only when mmcv with compiled ops is importable, the tensors live
  on CUDA and the caller did not opt out (``use_cuda_kernel=False``).
"""
import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .precision import float32_region

try:  # the compiled op ships only with a full mmcv build; mmcv-lite has no ``mmcv._ext``
    from mmcv.ops.multi_scale_deform_attn import \
        MultiScaleDeformableAttnFunction as _MmcvMSDAFunction
except (ImportError, OSError):
    _MmcvMSDAFunction = None

#: True when mmcv's compiled multi-scale deformable attention kernel could be imported.
MSDA_CUDA_AVAILABLE: bool = _MmcvMSDAFunction is not None

#: Process-wide switch: set to False to force the pure PyTorch path everywhere (e.g. for parity
#: runs against the official CPU fallback), whatever the modules' ``use_cuda_kernel`` says.
ALLOW_CUDA_KERNEL: bool = True

__all__ = [
    'MSDA_CUDA_AVAILABLE', 'ALLOW_CUDA_KERNEL', 'MultiScaleDeformableAttention',
    'multi_scale_deformable_attn', 'multi_scale_deformable_attn_pytorch', 'level_start_index',
    'flatten_multilevel', 'cuda_kernel_applicable', 'sample_levels'
]


def level_start_index(spatial_shapes: torch.Tensor) -> torch.Tensor:
    """``[L, 2]`` (H, W) -> ``[L]`` start offset of each level in the flattened value."""
    sizes = spatial_shapes.prod(1)
    return torch.cat((sizes.new_zeros(1), sizes.cumsum(0)[:-1]))


def flatten_multilevel(
        feature_maps: Sequence[torch.Tensor]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """List of ``[N, C, H_l, W_l]`` -> (value ``[N, S, C]``, spatial_shapes ``[L, 2]`` (H, W),
    level_start_index ``[L]``), levels kept in the given order, rows in raster (y, x) order."""
    sizes = [tuple(m.shape[-2:]) for m in feature_maps]
    shapes = torch.as_tensor(sizes, dtype=torch.long, device=feature_maps[0].device)
    if torch.compiler.is_exporting():  # torch.export cannot read a traced tensor's values
        shapes.export_level_sizes = [(int(h), int(w)) for h, w in sizes]
    value = torch.cat([m.flatten(2).transpose(1, 2) for m in feature_maps], 1)
    return value, shapes, level_start_index(shapes)


def _level_sizes(spatial_shapes: torch.Tensor, num_values: int) -> List[Tuple[int, int]]:
    shapes = getattr(spatial_shapes, 'export_level_sizes', None) \
        if torch.compiler.is_exporting() else None  # set by flatten_multilevel (ONNX export)
    if shapes is None:
        shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    total = sum(h * w for h, w in shapes)
    if total != num_values:
        raise ValueError(f'spatial_shapes {shapes} cover {total} positions but value has '
                         f'{num_values}')
    return shapes


@float32_region
def multi_scale_deformable_attn_pytorch(value: torch.Tensor, spatial_shapes: torch.Tensor,
                                        sampling_locations: torch.Tensor,
                                        attention_weights: torch.Tensor) -> torch.Tensor:
    """Pure PyTorch core of multi-scale deformable attention.

    Args:
        value: ``[N, S, M, D]`` per-head values, levels concatenated as in ``spatial_shapes``.
        spatial_shapes: LongTensor ``[L, 2]`` of ``(H_l, W_l)``.
        sampling_locations: ``[N, Lq, M, L, P, 2]`` normalised ``(x, y)``; any value is allowed,
            samples beyond the border read zeros.
        attention_weights: ``[N, Lq, M, L, P]`` (usually a softmax over ``L * P`` per head).

    Returns:
        ``[N, Lq, M * D]``: ``out[n, q, m*D:(m+1)*D] = sum_{l,p} A[n,q,m,l,p] *
        bilinear(value_l[n, :, m], loc[n,q,m,l,p])`` with ``grid_sample(mode='bilinear',
        padding_mode='zeros', align_corners=False)`` at ``2 * loc - 1``.

    Batch and heads are folded into the ``grid_sample`` batch; the only Python loop runs over the
    L levels, which have different sizes. This is the official fallback's arithmetic, so it
    reproduces it bit for bit (0 difference on the official fixtures).

    A fully batched variant was measured and rejected: every level zero-padded to
    ``(max H, max W)`` with coordinates rescaled by ``(W_l / W_max, H_l / H_max)`` and ONE
    ``grid_sample`` over all levels and heads. It is mathematically exact (the padded zeros sit
    where ``grid_sample``'s zero padding would be) but rounds the rescaled coordinates
    differently (<= 4e-7 on the official fixtures), and on CPU it was about 2x slower for
    forward+backward because the padded maps hold 2.3x more data than the 8/16/32 levels (see
    ``benchmarks/bench_ms_deform_attn.py``, which keeps it for the comparison).
    """
    n, s, m, d = value.shape
    _, _, m2, nl, _, two = sampling_locations.shape
    if m2 != m or two != 2 or nl != spatial_shapes.shape[0]:
        raise ValueError(f'sampling_locations {tuple(sampling_locations.shape)} does not match '
                         f'value {tuple(value.shape)} and {spatial_shapes.shape[0]} levels')
    if attention_weights.shape != sampling_locations.shape[:-1]:
        raise ValueError(f'attention_weights {tuple(attention_weights.shape)} must be '
                         f'{tuple(sampling_locations.shape[:-1])}')
    shapes = _level_sizes(spatial_shapes, s)
    value_list = value.split([h * w for h, w in shapes], dim=1)
    # [N, HW, M, D] -> [N, HW, M*D] -> [N, M*D, HW] -> [N*M, D, H, W]
    value_levels = [value_list[lvl].flatten(2).transpose(1, 2).reshape(n * m, d, h, w)
                    for lvl, (h, w) in enumerate(shapes)]
    return sample_levels(value_levels, sampling_locations, attention_weights)


@float32_region
def sample_levels(value_levels: Sequence[torch.Tensor], sampling_locations: torch.Tensor,
                  attention_weights: torch.Tensor) -> torch.Tensor:
    """The sampling step of :func:`multi_scale_deformable_attn_pytorch` on per-level maps.

    Args:
        value_levels: L maps ``[N*M, D, H_l, W_l]`` (batch-major, then head).
        sampling_locations: ``[N, Lq, M, L, P, 2]``; attention_weights ``[N, Lq, M, L, P]``.
    Returns ``[N, Lq, M * D]``. Callers that can produce channel-first maps directly (e.g. from a
    projection computed as ``W @ value^T``) skip the transposing copy of the flattened layout.
    """
    n, lq, m, nl, p, _ = sampling_locations.shape
    d = value_levels[0].shape[1]
    sampling_grids = 2 * sampling_locations - 1
    sampled = []
    for lvl, value_l in enumerate(value_levels):
        # [N, Lq, M, P, 2] -> [N, M, Lq, P, 2] -> [N*M, Lq, P, 2]
        grid_l = sampling_grids[:, :, :, lvl].transpose(1, 2).flatten(0, 1)
        # -> [N*M, D, Lq, P]
        sampled.append(F.grid_sample(value_l, grid_l, mode='bilinear', padding_mode='zeros',
                                     align_corners=False))
    # [N, Lq, M, L, P] -> [N, M, Lq, L, P] -> [N*M, 1, Lq, L*P]
    weights = attention_weights.transpose(1, 2).reshape(n * m, 1, lq, nl * p)
    out = (torch.stack(sampled, dim=-2).flatten(-2) * weights).sum(-1).view(n, m * d, lq)
    return out.transpose(1, 2).contiguous()


def cuda_kernel_applicable(value: torch.Tensor, use_cuda_kernel: bool = True) -> bool:
    """Whether :func:`multi_scale_deformable_attn` would run mmcv's compiled kernel on ``value``."""
    return bool(use_cuda_kernel and ALLOW_CUDA_KERNEL and MSDA_CUDA_AVAILABLE and value.is_cuda)


def _im2col_step_for(batch: int, im2col_step: int) -> int:
    """The mmcv kernel needs ``batch % min(batch, step) == 0``: largest valid step <= the wish."""
    step = max(1, min(batch, im2col_step))
    while batch % step:
        step -= 1
    return step


@float32_region
def multi_scale_deformable_attn(value: torch.Tensor,
                                spatial_shapes: torch.Tensor,
                                sampling_locations: torch.Tensor,
                                attention_weights: torch.Tensor,
                                level_start: Optional[torch.Tensor] = None,
                                im2col_step: int = 128,
                                use_cuda_kernel: bool = True) -> torch.Tensor:
    """Dispatch: mmcv's compiled kernel when :func:`cuda_kernel_applicable`, else the pure path.

    Same shapes as :func:`multi_scale_deformable_attn_pytorch`; ``level_start`` (``[L]``) is
    computed from ``spatial_shapes`` when not given (only the kernel needs it).
    """
    if not cuda_kernel_applicable(value, use_cuda_kernel):
        return multi_scale_deformable_attn_pytorch(value, spatial_shapes, sampling_locations,
                                                   attention_weights)
    if level_start is None:
        level_start = level_start_index(spatial_shapes)
    return _MmcvMSDAFunction.apply(value.contiguous(), spatial_shapes.to(value.device),
                                   level_start.to(value.device),
                                   sampling_locations.contiguous(),
                                   attention_weights.contiguous(),
                                   _im2col_step_for(value.shape[0], im2col_step))


class MultiScaleDeformableAttention(nn.Module):
    """Deformable-DETR multi-scale deformable attention with the official parameter layout.

    Parameters (state_dict keys as in the official ``MSDeformAttn``):

    * ``sampling_offsets``: Linear ``C -> M*L*P*2``, output laid out ``(head, level, point, xy)``;
      offsets are in pixels of their level: ``loc = ref + offset / (W_l, H_l)``.
    * ``attention_weights``: Linear ``C -> M*L*P``, laid out ``(head, level*point)``; softmax
      jointly over the ``L*P`` samples of each head.
    * ``value_proj``, ``output_proj``: Linear ``C -> C``. There is no dropout (none in the
      official module either).

    Args:
        embed_dims: C. num_heads: M. num_levels: L. num_points: P (per head and level).
        im2col_step: batch chunk of the compiled kernel (128 as in the official code).
        batch_first: True: query ``[N, Lq, C]`` / value ``[N, S, C]`` / output ``[N, Lq, C]``.
            False: ``[Lq, N, C]`` / ``[S, N, C]`` / ``[Lq, N, C]`` (reference points and the
            padding mask stay batch-first).
        use_cuda_kernel: use mmcv's compiled kernel when available and the inputs are on CUDA;
            False always runs :func:`multi_scale_deformable_attn_pytorch`.

    Forward:
        query ``[N, Lq, C]`` (positional embedding already added);
        reference_points normalised ``(x, y)``: ``[N, Lq, 2]`` (same point on every level),
        ``[N, Lq, L, 2]`` (per level) or ``[N, Lq, M, L, 2]`` (per head and level);
        value ``[N, S, C]`` (before ``value_proj``); spatial_shapes ``[L, 2]`` (H, W);
        level_start_index ``[L]`` (optional); value_padding_mask ``[N, S]`` bool, True = padded
        (its projected values are zeroed). Returns ``[N, Lq, C]``.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_levels: int = 4,
                 num_points: int = 4,
                 im2col_step: int = 128,
                 batch_first: bool = True,
                 use_cuda_kernel: bool = True) -> None:
        super().__init__()
        if embed_dims % num_heads:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads '
                             f'({num_heads})')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.num_levels = num_levels
        self.num_points = num_points
        self.im2col_step = im2col_step
        self.batch_first = batch_first
        self.use_cuda_kernel = use_cuda_kernel
        self.sampling_offsets = nn.Linear(embed_dims, num_heads * num_levels * num_points * 2)
        self.attention_weights = nn.Linear(embed_dims, num_heads * num_levels * num_points)
        self.value_proj = nn.Linear(embed_dims, embed_dims)
        self.output_proj = nn.Linear(embed_dims, embed_dims)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Deformable-DETR init: offset weights 0 and bias = head direction x (point index + 1).

        Head h points along ``(cos, sin)(2*pi*h/M)`` rescaled so its larger component is +-1;
        point p of every level gets that direction times ``p + 1`` pixels. Attention weights and
        bias 0 (uniform softmax); value/output projections xavier-uniform with bias 0.
        """
        m, nl, p = self.num_heads, self.num_levels, self.num_points
        nn.init.zeros_(self.sampling_offsets.weight)
        thetas = torch.arange(m, dtype=torch.float32) * (2.0 * math.pi / m)
        grid = torch.stack([thetas.cos(), thetas.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(m, 1, 1, 2).repeat(1, nl, p, 1)
        grid = grid * torch.arange(1, p + 1, dtype=torch.float32).view(1, 1, p, 1)
        self.sampling_offsets.bias.copy_(grid.view(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def _reference_per_head(self, reference_points: torch.Tensor) -> torch.Tensor:
        """Any accepted layout -> ``[N, Lq, M or 1, L or 1, 1, 2]`` ready to broadcast."""
        if reference_points.shape[-1] != 2:
            raise ValueError('reference_points must end with (x, y); got shape '
                             f'{tuple(reference_points.shape)}')
        if reference_points.dim() == 3:  # [N, Lq, 2]
            return reference_points[:, :, None, None, None, :]
        if reference_points.dim() == 4:  # [N, Lq, L, 2]
            return reference_points[:, :, None, :, None, :]
        if reference_points.dim() == 5:  # [N, Lq, M, L, 2]
            return reference_points[:, :, :, :, None, :]
        raise ValueError('reference_points must be [N, Lq, 2], [N, Lq, L, 2] or [N, Lq, M, L, 2]; '
                         f'got {tuple(reference_points.shape)}')

    def forward(self,
                query: torch.Tensor,
                reference_points: torch.Tensor,
                value: torch.Tensor,
                spatial_shapes: torch.Tensor,
                level_start_index: Optional[torch.Tensor] = None,
                value_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.batch_first:
            query, value = query.transpose(0, 1), value.transpose(0, 1)
        n, lq, _ = query.shape
        s = value.shape[1]
        m, nl, p = self.num_heads, self.num_levels, self.num_points
        if spatial_shapes.shape[0] != nl:
            raise ValueError(f'module built for {nl} levels got spatial_shapes '
                             f'{tuple(spatial_shapes.shape)}')

        value = self.value_proj(value)
        if value_padding_mask is not None:
            value = value.masked_fill(value_padding_mask[..., None], 0.0)
        value = value.view(n, s, m, self.embed_dims // m)
        offsets = self.sampling_offsets(query).view(n, lq, m, nl, p, 2)
        weights = self.attention_weights(query).view(n, lq, m, nl * p)
        weights = F.softmax(weights, -1).view(n, lq, m, nl, p)
        normalizer = torch.stack([spatial_shapes[..., 1], spatial_shapes[..., 0]], -1)
        locations = self._reference_per_head(reference_points) \
            + offsets / normalizer[None, None, None, :, None, :]
        out = multi_scale_deformable_attn(value, spatial_shapes, locations, weights,
                                          level_start_index, self.im2col_step,
                                          self.use_cuda_kernel)
        out = self.output_proj(out)
        return out if self.batch_first else out.transpose(0, 1)

    def extra_repr(self) -> str:
        return (f'embed_dims={self.embed_dims}, num_heads={self.num_heads}, '
                f'num_levels={self.num_levels}, num_points={self.num_points}, '
                f'use_cuda_kernel={self.use_cuda_kernel}')
