"""Timings of FMMP's structure-aware deformable attention (not a test).

Compares, forward and forward+backward, by default at the official size (batch 16, K = 70
keypoints, 8 side heads, each an 8-head x 3-level x 4-point MSDA, C = 256, levels 8x8 / 16x16 /
32x32 of a 256 input):

* ``vectorised``: :class:`StructuralDeformableAttention` as the model runs it
  (``gather_mode='auto'``): one gather for the structural reference points, the side heads'
  weights stacked, ONE sampling call for all samples, keypoints and 8 x 8 heads;
* ``sample first`` / ``project first``: the same with the order forced (see the module docstring);
* ``per-sample loop``: the same module evaluated sample by sample and side head by side head
  (:meth:`StructuralDeformableAttention.forward_loop`), each step a plain MSDA;
* ``official loop``: the official formulation: a Python loop over side heads, each calling its
  MSDA on the whole batch after a per-sample Python loop that gathers the reference points.

Ratios are ``variant time / vectorised time`` (> 1: the vectorised module is that much faster).
It also prints the max abs difference of every output from the vectorised one.

Usage::

    python benchmarks/bench_structural_attention.py [--batch 16] [--repeats 10] [--device cuda]
    # the CPU recipe's size: 128 channels, 4 side heads, 4/8/16 levels of a 128 input
    python benchmarks/bench_structural_attention.py --channels 128 --side-heads 4 --finest 16
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from metapoint.models.layers.structural_deform_attn import (  # noqa: E402
    StructuralDeformableAttention, gather_structural_points)


def official_loop(attn, query, points, neighbour_idx, value, shapes):
    """Side-head loop; per-sample gather of the reference points (the official code's shape)."""
    outs = []
    for h, layer in enumerate(attn.attn_layers):
        refs = torch.stack([points[b][neighbour_idx[b][:, h]] for b in range(len(points))])
        outs.append(layer(query, refs, value, shapes))
    res = outs[0]
    if attn.side_heads >= 2:
        res = res + attn.projector(torch.cat(outs[1:], -1))
    return res


def forced(attn, mode, *args):
    """The vectorised module with its gather order forced."""
    attn.gather_mode = mode
    try:
        return attn(*args)
    finally:
        attn.gather_mode = 'auto'


def _once(fn, backward, device):
    if device == 'cuda':
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if backward:
        out.sum().backward()
    if device == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - t, out


def timed(variants, repeats, backward, device, warmup=2):
    """Median seconds per variant. The variants take turns (round robin), so slow phases of a
    shared machine hit all of them alike; ``warmup`` untimed rounds let allocators settle."""
    times = {name: [] for name in variants}
    outs = {}
    for i in range(warmup + repeats):
        for name, fn in variants.items():
            with torch.set_grad_enabled(backward):
                sec, outs[name] = _once(fn, backward, device)
            if i >= warmup:
                times[name].append(sec)
    return {name: statistics.median(t) for name, t in times.items()}, outs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--keypoints', type=int, default=70)
    parser.add_argument('--side-heads', type=int, default=8)
    parser.add_argument('--channels', type=int, default=256)
    parser.add_argument('--finest', type=int, default=32,
                        help='finest level side; the others are 1/2 and 1/4 of it')
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = args.device
    n, k, hh, c, f = args.batch, args.keypoints, args.side_heads, args.channels, args.finest
    shapes = torch.tensor([[f // 4, f // 4], [f // 2, f // 2], [f, f]], device=dev)
    attn = StructuralDeformableAttention(hh, c, 8, 3, 4).to(dev)
    with torch.no_grad():
        for p in attn.parameters():
            p.add_(0.05 * torch.randn_like(p))
    value = torch.randn(n, int(shapes.prod(1).sum()), c, device=dev, requires_grad=True)
    query = torch.randn(n, k, c, device=dev, requires_grad=True)
    points = torch.rand(n, k, 2, device=dev)
    nbr = torch.randint(0, k, (n, k, 16), device=dev)
    refs = gather_structural_points(points, nbr, hh)
    variants = {
        'vectorised': lambda: attn(query, gather_structural_points(points, nbr, hh), value,
                                   shapes),
        'sample first': lambda: forced(attn, 'sample_first', query, refs, value, shapes),
        'project first': lambda: forced(attn, 'project_first', query, refs, value, shapes),
        'per-sample loop': lambda: attn.forward_loop(query, refs, value, shapes),
        'official loop': lambda: official_loop(attn, query, points, nbr, value, shapes),
    }
    print(f'torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, '
          f'batch {n}, K {k}, side heads {hh}, C {c}, levels {shapes.tolist()}, auto = '
          f"{'sample' if attn.samples_first(int(shapes.prod(1).sum()), k) else 'project'} first")
    print(f"{'variant':<18}{'fwd ms':>10}{'fwd+bwd ms':>12}{'x fwd':>8}{'x fwd+bwd':>11}"
          f"{'max|diff|':>12}")
    fwd, outs = timed(variants, args.repeats, False, dev)
    both, _ = timed(variants, args.repeats, True, dev)
    for name in variants:
        diff = (outs[name] - outs['vectorised']).abs().max().item()
        print(f'{name:<18}{fwd[name] * 1e3:>10.1f}{both[name] * 1e3:>12.1f}'
              f'{fwd[name] / fwd["vectorised"]:>8.2f}{both[name] / both["vectorised"]:>11.2f}'
              f'{diff:>12.2e}')

if __name__ == '__main__':
    main()
