"""Heatmap pooling of support keypoint features: upsample-then-pool vs the transposed resize.

    python benchmarks/bench_heatmap_pool.py [--threads 2] [--iters 5]

CapeFormer pools the stride-32 ResNet-50 map (2048 x 8 x 8 at 256 px) with 64 x 64 heatmaps of
K = 100 slots, for every support image; MetaPoint pools its 256-channel pyramid levels. The two
forms give the same result (tests/test_similarity_aid.py); this prints the seconds of forward +
backward of each, median of the rounds, taking turns.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from metapoint.models.layers.keypoint_pooling import heatmap_pool


def upsample_then_pool(feature_map, heatmaps):
    hm = heatmaps / (heatmaps.sum((-1, -2), keepdim=True) + 1e-8)
    up = F.interpolate(feature_map, size=heatmaps.shape[-2:], mode='bilinear',
                       align_corners=False)
    return hm.flatten(2) @ up.flatten(2).transpose(1, 2)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--threads', type=int, default=2)
    parser.add_argument('--iters', type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cases = {'CapeFormer C5 (4 x 2048 x 8 x 8, K=100)': ((4, 2048, 8, 8), (4, 100, 64, 64)),
             'MetaPoint level (4 x 256 x 16 x 16, K=70)': ((4, 256, 16, 16), (4, 70, 64, 64))}
    for name, (fshape, hshape) in cases.items():
        feat = torch.randn(*fshape, requires_grad=True)
        hm = torch.rand(*hshape)
        times = {'upsample_then_pool': [], 'heatmap_pool': []}
        fns = {'upsample_then_pool': upsample_then_pool, 'heatmap_pool': heatmap_pool}
        for it in range(args.iters + 1):
            for key, fn in fns.items():
                t = time.perf_counter()
                fn(feat, hm).sum().backward()
                if it:
                    times[key].append(time.perf_counter() - t)
        a, b = (statistics.median(times[k]) for k in fns)
        print(f'{name}: upsample_then_pool {a * 1e3:.1f} ms, heatmap_pool {b * 1e3:.1f} ms '
              f'(fwd+bwd, median of {args.iters}), {a / b:.1f}x')


if __name__ == '__main__':
    main()
