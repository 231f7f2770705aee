"""Train a CAPE model: ``python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]``.

``--amp`` trains with mixed precision: bfloat16 autocast (``AutocastOptimWrapper``) on CPU and
on GPUs that support bfloat16, float16 with a dynamic loss scale (mmengine's ``AmpOptimWrapper``)
on older GPUs or with ``--amp-dtype float16``. ``--compile`` compiles the model's parts with
``torch.compile`` (``model.compile``, docs/benchmarks.md), ``--channels-last`` runs the image
backbone in the channels-last memory format.

The console shows the progress (iteration and epoch lines, checkpoints, validation results) and
every warning, without mmengine's environment dump, the config and the per-parameter optimizer
lines; ``--verbose`` shows those too. The log file in the work dir always has everything
(docs/engine.md, "Console output").
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

from metapoint.utils import (build_runner, check_model_config,  # noqa: E402
                             keep_total_batch, launch_world_size, register_all_modules,
                             setup_cpu_distributed, share_episode_seed, teardown_distributed)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a CAPE model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and checkpoints')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from the given checkpoint, or from the latest one in the '
                        'work dir when no path is given')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision')
    parser.add_argument('--amp-dtype', choices=['auto', 'bfloat16', 'float16'], default='auto',
                        help="with --amp: 'auto' = bfloat16 on CPU and on GPUs with bfloat16 "
                        'support, else float16 with loss scaling')
    parser.add_argument('--compile', action='store_true',
                        help='torch.compile the model parts (model.compile=True)')
    parser.add_argument('--channels-last', action='store_true',
                        help='channels-last memory format for the backbone '
                        '(model.channels_last=True)')
    parser.add_argument('--no-validate', action='store_true',
                        help='do not evaluate checkpoints during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch / auto_scale_lr.base_batch_size)')
    parser.add_argument('--seed', type=int, help='random seed (overrides randomness.seed)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. model.x=1)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--verbose', action='store_true',
                        help='also print the environment, the config and the per-parameter '
                        'optimizer lines on the console (the log file always has them)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:  # torchrun sets it; mpirun names it its own way
        os.environ['LOCAL_RANK'] = os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK',
                                                  str(args.local_rank))
    return args


def apply_amp(cfg, amp_dtype: str = 'auto') -> str:
    """Switch ``cfg.optim_wrapper`` to mixed precision; returns the dtype chosen (module doc)."""
    cuda = torch.cuda.is_available()
    if amp_dtype == 'auto':
        amp_dtype = 'bfloat16' if not cuda or torch.cuda.is_bf16_supported() else 'float16'
    if amp_dtype == 'float16':
        if not cuda:
            raise SystemExit('--amp-dtype float16 needs a CUDA GPU (a loss-scaled float16 '
                             'AmpOptimWrapper); on CPU use --amp-dtype bfloat16')
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        cfg.optim_wrapper.dtype = 'float16'
    else:
        cfg.optim_wrapper.type = 'AutocastOptimWrapper'
        cfg.optim_wrapper.pop('loss_scale', None)
        cfg.optim_wrapper.dtype = 'bfloat16'
    return amp_dtype


def merge_args(cfg, args):
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp:
        apply_amp(cfg, args.amp_dtype)
    if args.compile:
        cfg.model.compile = True
    if args.channels_last:
        cfg.model.channels_last = True
    if args.resume == 'auto':
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
        cfg.default_hooks.checkpoint.pop('save_best', None)
    if args.auto_scale_lr:
        cfg.auto_scale_lr = dict(cfg.get('auto_scale_lr', {}), enable=True)
    if args.seed is not None:
        cfg.randomness = dict(cfg.get('randomness', {}), seed=args.seed)
    for key in ('val_evaluator', 'test_evaluator'):
        if cfg.get(key) and isinstance(cfg[key], dict):
            cfg[key].setdefault('out_dir', cfg.work_dir)
    cfg.launcher = args.launcher
    return cfg


def main(argv=None):
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    cfg = merge_args(cfg, args)
    batch_given = any(k == 'train_dataloader.batch_size' for k in (args.cfg_options or {}))
    keep_total_batch(cfg, launch_world_size(args.launcher), batch_given)
    share_episode_seed(cfg)
    check_model_config(cfg)
    setup_cpu_distributed(cfg, args.launcher)
    runner = build_runner(cfg, verbose=args.verbose)
    runner.train()
    teardown_distributed()


if __name__ == '__main__':
    main()
