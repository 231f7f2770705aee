"""Parameters and FLOPs per model part of a CAPE model, for one episode (docs/benchmarks.md).

``python tools/analysis/get_flops.py CONFIG [--shots S] [--queries Q] [--input-size H W]``

The parts are the top-level child modules of the estimator (backbone, neck, encoders, heads,
decoders ...); ops the estimator runs itself are the ``(estimator)`` row, so the parts sum to
the total. FLOPs: multiply-adds x 2 of matmuls, convolutions and attention kernels (the formulas
of ``torch.utils.flop_counter``), for one ``'tensor'`` forward (eval mode, no_grad) of one
random synthetic episode of the config's K; ``--train`` counts the loss forward + backward in
train mode instead (counted, not 3x forward). Element-wise ops, normalisation, softmax and
``grid_sample`` are not counted (the most called are listed). Random weights: the backbone's
``pretrained`` is disabled.
"""
import argparse
import json
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import DictAction  # noqa: E402

from metapoint.utils.benchmarking import (build_model, flops_table,  # noqa: E402
                                          format_flops_table, load_config, synthetic_episodes)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('--shots', type=int, default=None,
                        help="support shots (default: the config's)")
    parser.add_argument('--queries', type=int, default=1, help='queries of the episode')
    parser.add_argument('--input-size', type=int, nargs=2, metavar=('H', 'W'), default=None,
                        help="crop size (default: the config's)")
    parser.add_argument('--train', action='store_true',
                        help='count a training step (loss forward + backward)')
    parser.add_argument('--backbone-depth', type=int, default=None,
                        help='swap the ResNet depth')
    parser.add_argument('--num-kpts', type=int, default=17)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    parser.add_argument('--json', default=None, help='also write the table as JSON')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    model = build_model(cfg, args.backbone_depth)
    shots = args.shots or cfg.test_dataloader.dataset.get('num_shots', 1)
    size = (args.input_size[1], args.input_size[0]) if args.input_size else None  # (W, H)
    batch = synthetic_episodes(cfg, model, shots, args.queries, 1, train=args.train,
                               num_kpts=args.num_kpts, input_size=size)
    table = flops_table(model, batch, train=args.train)
    h, w = batch.support_imgs.shape[-2:]
    print(f'{type(model).__name__} ({args.config}): one episode, {shots} shot(s), '
          f'{args.queries} quer{"y" if args.queries == 1 else "ies"}, input {h}x{w}, '
          f'K {batch.num_slots}, {"train step (fwd+bwd)" if args.train else "forward (eval)"}'
          f', torch {torch.__version__}')
    print(format_flops_table(table, train=args.train))
    top = ', '.join(f'{op} x{n}' for op, n in table['uncounted'][:8])
    print(f'not counted (no FLOP formula; calls): {top}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(config=args.config, shots=shots, queries=args.queries,
                           input_size=[h, w], train=args.train, **table), f, indent=2)
    return table


if __name__ == '__main__':
    main()
