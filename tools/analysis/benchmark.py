"""Speed of a CAPE model on random weights and random synthetic episodes (docs/benchmarks.md).

``python tools/analysis/benchmark.py CONFIG --mode {eval,train,data,all} [--shots S]
[--queries Q] [--batch B] [--threads T] [--device D] [--amp] [--compile [--compile-parts P ...]]
[--channels-last] [--iters N] [--warmup W] [--json OUT]``

* ``eval``: pairs/s of episode-batched evaluation (B episodes x Q queries, supports encoded
  once) vs the per-pair protocol (one forward per support/query pair) -> ``ratio_episode_vs_pair``.
* ``train``: one optimiser step (loss forward + backward + Adam) at batch B vs backbone-only
  forward + backward on the same images -> ``ratio_step_vs_backbone``; FLOPs of the step
  (counted fwd+bwd), achieved FLOP/s vs an fp32 square matmul -> ``ratio_train_flops_vs_matmul``.
* ``data``: episodes/s of the config's train / test pipelines (needs the data; skipped with a
  message otherwise) vs the model's consumption -> ``ratio_train_data_vs_model``,
  ``ratio_test_data_vs_model``.

The variants of a mode take turns (round robin over ``--iters`` timed rounds after ``--warmup``
untimed ones) and each reports its median. ``--amp`` / ``--compile`` / ``--channels-last`` add
variants (autocast bf16 by default, fp16 with ``--amp-dtype fp16`` on CUDA; the model's own
``compile`` option, ``torch.compile`` of its parts (``--compile-parts``, default all); its
``channels_last`` option); a variant that fails is reported with its error.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from mmengine.config import DictAction  # noqa: E402

from metapoint.utils.benchmarking import (MODES, Benchmark, BenchmarkSettings,  # noqa: E402
                                          format_result)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--mode', default='all', choices=list(MODES) + ['all'])
    parser.add_argument('--shots', type=int, default=None,
                        help='support shots S (default: the config\'s)')
    parser.add_argument('--queries', type=int, default=15,
                        help='queries per evaluation episode Q (default 15, MP-100 testing)')
    parser.add_argument('--train-queries', type=int, default=1,
                        help='queries per training episode (default 1, as the train set)')
    parser.add_argument('--batch', type=int, default=1,
                        help='episodes per batch B (eval; train too unless --train-batch)')
    parser.add_argument('--train-batch', type=int, default=None,
                        help='episodes per train step (default: --batch)')
    parser.add_argument('--threads', type=int, default=None, help='torch.set_num_threads')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--amp', action='store_true',
                        help='add autocast variants (bf16; --amp-dtype fp16 for CUDA fp16)')
    parser.add_argument('--amp-dtype', choices=['bf16', 'fp16'], default=None)
    parser.add_argument('--compile', action='store_true',
                        help='add variants with model.compile (torch.compile of the parts)')
    parser.add_argument('--compile-parts', nargs='+', default=None, metavar='PART',
                        help="the parts --compile compiles (e.g. 'backbone'; default: all)")
    parser.add_argument('--compile-backend', default=None,
                        help="torch.compile backend (default inductor; e.g. 'aot_eager')")
    parser.add_argument('--channels-last', action='store_true',
                        help='add variants with model.channels_last=True')
    parser.add_argument('--iters', type=int, default=3, help='timed rounds (median)')
    parser.add_argument('--warmup', type=int, default=1, help='untimed rounds first')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help='crop size, height width (default: the config\'s)')
    parser.add_argument('--backbone-depth', type=int, default=None,
                        help='swap the ResNet depth (e.g. 18 for a quick check)')
    parser.add_argument('--num-kpts', type=int, default=17,
                        help='real keypoints of the synthetic episodes (K slots stay the '
                             'config\'s)')
    parser.add_argument('--matmul-size', type=int, default=2048)
    parser.add_argument('--no-flops', action='store_true', help='skip the FLOP count (train)')
    parser.add_argument('--data-root', default=None, help='data mode: dataset root')
    parser.add_argument('--img-prefix', default=None, help='data mode: image folder')
    parser.add_argument('--ann-file', default=None, help='data mode: annotation file')
    parser.add_argument('--data-episodes', type=int, default=8,
                        help='data mode: episodes loaded per turn of a pipeline variant')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--json', default=None, help='write the result JSON here')
    parser.add_argument('--profile', type=int, default=0, metavar='ROWS',
                        help='after the run, print a torch.profiler table (top ROWS ops by '
                             'self CPU time) of one fp32 eval forward / train step of each '
                             'mode run (eval, train)')
    parser.add_argument('--verbose', action='store_true', help='log every timed call')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.amp_dtype and not args.amp:
        args.amp = True
    settings = BenchmarkSettings(
        shots=args.shots, queries=args.queries, train_queries=args.train_queries,
        batch=args.batch, train_batch=args.train_batch, threads=args.threads,
        device=args.device, amp=args.amp, amp_dtype=args.amp_dtype, compile=args.compile,
        compile_parts=args.compile_parts, compile_backend=args.compile_backend,
        channels_last=args.channels_last,
        iters=args.iters, warmup=args.warmup,
        input_size=(args.input_size[1], args.input_size[0]) if args.input_size else None,
        backbone_depth=args.backbone_depth, num_kpts=args.num_kpts,
        matmul_size=args.matmul_size, data_root=args.data_root, img_prefix=args.img_prefix,
        ann_file=args.ann_file, data_episodes=args.data_episodes, seed=args.seed,
        flops=not args.no_flops, verbose=args.verbose)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)
    bench = Benchmark(args.config, settings, args.cfg_options, log=log)
    modes = list(MODES) if args.mode == 'all' else [args.mode]
    result = bench.run(modes)
    result['command'] = ' '.join(['python', 'tools/analysis/benchmark.py'] +
                                 (sys.argv[1:] if argv is None else list(argv)))
    print(format_result(result))
    if args.profile:
        result['profile'] = {}
        for mode in modes:
            if mode in ('eval', 'train'):
                table = bench.profile(mode, args.profile)
                result['profile'][mode] = table
                print(f'\ntorch.profiler, one {mode} call (top {args.profile} ops by self CPU '
                      f'time):\n{table}')
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
        print(f'written: {args.json}')
    return result


if __name__ == '__main__':
    main()
