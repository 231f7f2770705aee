"""Timings of FMMP's structure-aware deformable attention (not a test).

Compares, forward and forward+backward, at the official size (batch 16, K = 70 keypoints,
8 side heads, each an 8-head x 3-level x 4-point MSDA, C = 256, levels 8x8 / 16x16 / 32x32 of a
256 input):

* ``vectorised``: :class:`StructuralDeformableAttention` as the model runs it: one gather for the
  structural reference points, the side heads' weights stacked, ONE deformable-attention core call
  for all samples, keypoints and 8 x 8 heads;
* ``per-sample loop``: the same module evaluated sample by sample and side head by side head
  (:meth:`StructuralDeformableAttention.forward_loop`);
* ``official loop``: the official formulation: a Python loop over side heads, each calling its
  MSDA on the whole batch after a per-sample Python loop that gathers the reference points.

It also prints the max abs difference of the loops' outputs from the vectorised one.

Usage::

    python benchmarks/bench_structural_attention.py [--batch 16] [--repeats 3] [--device cuda]
"""
import argparse
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


def timed(fn, repeats, backward, device):
    times = []
    for _ in range(repeats + 1):  # first call warms up
        if device == 'cuda':
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if backward:
            out.sum().backward()
        if device == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times[1:]), out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--batch', type=int, default=16)
    parser.add_argument('--keypoints', type=int, default=70)
    parser.add_argument('--side-heads', type=int, default=8)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--device', default='cpu')
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = args.device
    n, k, hh, c = args.batch, args.keypoints, args.side_heads, 256
    shapes = torch.tensor([[8, 8], [16, 16], [32, 32]], device=dev)
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
        'per-sample loop': lambda: attn.forward_loop(query, refs, value, shapes),
        'official loop': lambda: official_loop(attn, query, points, nbr, value, shapes),
    }
    print(f'torch {torch.__version__}, device {dev}, threads {torch.get_num_threads()}, '
          f'batch {n}, K {k}, side heads {hh}')
    print(f"{'variant':<18}{'fwd ms':>10}{'fwd+bwd ms':>12}{'x fwd':>8}{'x fwd+bwd':>11}"
          f"{'max|diff|':>12}")
    base = {}
    for name, fn in variants.items():
        with torch.no_grad():
            fwd, out = timed(fn, args.repeats, False, dev)
        both, _ = timed(fn, args.repeats, True, dev)
        if name == 'vectorised':
            base = dict(fwd=fwd, both=both, out=out)
        diff = (out - base['out']).abs().max().item()
        print(f'{name:<18}{fwd * 1e3:>10.1f}{both * 1e3:>12.1f}{fwd / base["fwd"]:>8.2f}'
              f'{both / base["both"]:>11.2f}{diff:>12.2e}')


if __name__ == '__main__':
    main()
