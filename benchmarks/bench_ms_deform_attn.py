"""Timings of the pure-PyTorch multi-scale deformable attention core (not a test).

Compares, at MetaPoint and FMMP sizes, forward and forward+backward:

* ``core``: :func:`metapoint.models.layers.multi_scale_deformable_attn_pytorch`, the library
  core: batch and heads folded into one ``grid_sample`` per level (3 calls for 3 levels).
* ``padded``: a fully batched variant, kept here for the comparison: every level is zero-padded
  to ``(max H, max W)`` and all levels and heads go through ONE ``grid_sample``.
* ``naive``: explicit loops over levels and heads (one ``grid_sample`` per level and head).

Also prints each variant's max abs deviation from the float64 core on the same inputs.

Usage::

    python benchmarks/bench_ms_deform_attn.py                 # CPU
    python benchmarks/bench_ms_deform_attn.py --device cuda   # GPU, when there is one
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metapoint.models.layers import multi_scale_deformable_attn_pytorch  # noqa: E402

CONFIGS = {
    # name: (N, Lq, M heads, D per head, P points, level shapes (H, W))
    'metapoint': (16, 100, 4, 64, 4, [(8, 8), (16, 16), (32, 32)]),
    # FMMP: 8 side heads, each a full 8-head MSDA; batched as N * 8
    'fmmp(x8 side heads)': (16 * 8, 70, 8, 32, 4, [(8, 8), (16, 16), (32, 32)]),
}


def padded_core(value, spatial_shapes, sampling_locations, attention_weights):
    """All levels and heads in one ``grid_sample`` over zero-padded level maps.

    Level l (H_l x W_l) is stored in the top-left corner of a zero (Hmax x Wmax) map. With
    ``align_corners=False`` a normalised x samples pixel coordinate ``x * W_l - 0.5``; the same
    pixel of the padded map is reached by ``x' = x * W_l / Wmax`` (likewise for y). Every pixel
    the bilinear stencil reads is then either a true value or a zero: the padded zeros to the
    right/bottom stand exactly where grid_sample's zero padding would be for the unpadded level,
    and left/top (and beyond Wmax/Hmax) grid_sample pads with zeros itself. So the result is
    mathematically the per-level zero-padded bilinear sample; only the rounding of the rescaled
    coordinate differs (by up to ~Wmax/W_l ulps of the pixel coordinate).
    """
    n, s, m, d = value.shape
    _, lq, _, nl, p, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    hmax, wmax = max(h for h, _ in shapes), max(w for _, w in shapes)
    padded = value.new_zeros(n, m, nl, d, hmax, wmax)
    for lvl, (v, (h, w)) in enumerate(zip(value.split([h * w for h, w in shapes], 1), shapes)):
        padded[:, :, lvl, :, :h, :w] = v.permute(0, 2, 3, 1).unflatten(-1, (h, w))
    ratio = torch.tensor([[w / wmax, h / hmax] for h, w in shapes], dtype=value.dtype,
                         device=value.device)
    grid = sampling_locations * (2 * ratio)[:, None, :] - 1           # [N, Lq, M, L, P, 2]
    grid = grid.permute(0, 2, 3, 1, 4, 5).reshape(n * m * nl, lq, p, 2)
    sampled = F.grid_sample(padded.view(n * m * nl, d, hmax, wmax), grid, mode='bilinear',
                            padding_mode='zeros', align_corners=False)  # [N*M*L, D, Lq, P]
    weights = attention_weights.permute(0, 2, 3, 1, 4).reshape(n * m, nl, 1, lq, p)
    out = (sampled.view(n * m, nl, d, lq, p) * weights).sum((1, 4))  # [N*M, D, Lq]
    return out.view(n, m * d, lq).transpose(1, 2).contiguous()


def naive_core(value, spatial_shapes, sampling_locations, attention_weights):
    """Loops over levels and heads: one ``grid_sample`` per (level, head)."""
    n, s, m, d = value.shape
    _, lq, _, nl, p, _ = sampling_locations.shape
    shapes = [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    heads = []
    for head in range(m):
        acc = 0
        start = 0
        for lvl, (h, w) in enumerate(shapes):
            v = value[:, start:start + h * w, head].transpose(1, 2).reshape(n, d, h, w)
            start += h * w
            g = 2 * sampling_locations[:, :, head, lvl] - 1                 # [N, Lq, P, 2]
            smp = F.grid_sample(v, g, mode='bilinear', padding_mode='zeros',
                                align_corners=False)                          # [N, D, Lq, P]
            acc = acc + (smp * attention_weights[:, None, :, head, lvl]).sum(-1)
        heads.append(acc.transpose(1, 2))                                    # [N, Lq, D]
    return torch.stack(heads, 2).reshape(n, lq, m * d)


IMPLS = {'core': multi_scale_deformable_attn_pytorch, 'padded': padded_core, 'naive': naive_core}


def make_inputs(cfg, device, seed=0):
    n, lq, m, d, p, shapes = cfg
    g = torch.Generator().manual_seed(seed)
    shapes_t = torch.tensor(shapes, dtype=torch.long)
    s = int(shapes_t.prod(1).sum())
    nl = len(shapes)
    value = torch.randn(n, s, m, d, generator=g)
    loc = torch.rand(n, lq, m, nl, p, 2, generator=g) * 1.2 - 0.1
    attn = torch.randn(n, lq, m, nl * p, generator=g).softmax(-1).view(n, lq, m, nl, p)
    return [t.to(device) for t in (value, shapes_t, loc, attn)]


def timeit(fn, args, backward, device, repeats, warmup=3):
    leaves = [a.detach().requires_grad_(backward) if a.is_floating_point() else a for a in args]

    def once():
        out = fn(*leaves)
        if backward:
            out.sum().backward()
            for a in leaves:
                if a.is_floating_point():
                    a.grad = None

    sync = torch.cuda.synchronize if device.type == 'cuda' else (lambda: None)
    for _ in range(warmup):
        once()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        once()
        sync()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2] * 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--threads', type=int, default=None, help='torch intra-op threads')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f'torch {torch.__version__}, device {device}'
          + (f' ({torch.cuda.get_device_name(device)})' if device.type == 'cuda' else
             f', {torch.get_num_threads()} threads'))
    print(f'median of {args.repeats} runs, milliseconds; err = max |x - float64 core|')
    print(f"{'config':<22}{'impl':<8}{'forward':>10}{'fwd+bwd':>10}{'err':>10}")
    for name, cfg in CONFIGS.items():
        inputs = make_inputs(cfg, device)
        ref = multi_scale_deformable_attn_pytorch(
            *[a.double() if a.is_floating_point() else a for a in inputs])
        for impl_name, fn in IMPLS.items():
            with torch.no_grad():
                err = (fn(*inputs).double() - ref).abs().max().item()
            fwd = timeit(fn, inputs, False, device, args.repeats)
            bwd = timeit(fn, inputs, True, device, args.repeats)
            print(f'{name:<22}{impl_name:<8}{fwd:>10.2f}{bwd:>10.2f}{err:>10.1e}')


if __name__ == '__main__':
    main()
