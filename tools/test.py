"""Evaluate a CAPE model: ``python tools/test.py CONFIG [CHECKPOINT] [--work-dir DIR]``.

Prints the PCK table and writes it (with per-category PCK@0.2 and the predictions in image
pixels) as JSON to the work dir. Both say how many categories were evaluated out of how many the
dataset was asked for (fewer with ``skip_incomplete_categories=True`` on partial data).
With a checkpoint, the backbone's ``pretrained`` is set to None: the checkpoint replaces those
weights, so ImageNet weights are neither read nor downloaded.

``--show-dir DIR [--show-interval N]`` switches the episode pictures on
(``CAPEVisualizationHook``: supports | query ground truth | prediction, every N-th episode) and
writes them to DIR, relative to the work dir or absolute (docs/visualization.md).

The console shows the progress, the warnings and the tables, without mmengine's environment and
config dumps; ``--verbose`` shows those too. The log file in the work dir always has everything.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.dist import get_rank  # noqa: E402

from metapoint.evaluation import format_pck_table  # noqa: E402
from metapoint.models.backbones import disable_backbone_pretrained  # noqa: E402
from metapoint.registry import HOOKS, VISUALIZERS  # noqa: E402
from metapoint.utils import (build_runner, check_model_config,  # noqa: E402
                             register_all_modules, setup_cpu_distributed, teardown_distributed)
from metapoint.utils.config_checks import check_init_keys  # noqa: E402
from metapoint.utils.quiet_logging import METRIC_TABLE, quiet_console  # noqa: E402

VISUALIZATION_HOOK = 'CAPEVisualizationHook'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Evaluate a CAPE model on MP-100 episodes')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', nargs='?', default=None,
                        help='checkpoint file (not needed for non-learned models)')
    parser.add_argument('--work-dir', help='where logs and result JSON files go')
    parser.add_argument('--out', help='also write the metrics JSON to this path')
    parser.add_argument('--amp', action='store_true', help='mixed precision inference')
    parser.add_argument('--show-dir', help='save pictures of evaluation episodes (supports | '
                        'query ground truth | prediction) in this folder, relative to the work '
                        'dir or absolute')
    parser.add_argument('--show-interval', type=int, default=None,
                        help='with --show-dir: draw every N-th episode (default: the config\'s '
                        'default_hooks.visualization.interval)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    parser.add_argument('--verbose', action='store_true',
                        help='also print the environment and the config on the console (the log '
                        'file always has them)')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:  # torchrun sets it; mpirun names it its own way
        os.environ['LOCAL_RANK'] = os.environ.get('OMPI_COMM_WORLD_LOCAL_RANK',
                                                  str(args.local_rank))
    if args.show_interval is not None and args.show_dir is None:
        parser.error('--show-interval needs --show-dir')
    if args.show_interval is not None and args.show_interval < 1:
        parser.error(f'--show-interval must be >= 1, got {args.show_interval}')
    return args


def setup_visualization(cfg: Config, show_dir=None, show_interval=None) -> None:
    """Switch the episode pictures on (``--show-dir``) and check the hook and visualizer keys.

    The hook entry ``default_hooks.visualization`` is added when the config has none; its
    ``out_dir`` (relative to the work dir, or absolute) becomes ``show_dir``.
    """
    if cfg.get('default_hooks') is None:
        cfg.default_hooks = {}
    hooks = cfg.default_hooks
    if show_dir is not None:
        if hooks.get('visualization') is None:
            hooks['visualization'] = dict(type=VISUALIZATION_HOOK)
        hook = hooks['visualization']  # the stored (ConfigDict) copy
        hook['enable'] = True
        hook['out_dir'] = show_dir
        if show_interval is not None:
            hook['interval'] = show_interval
    hook = hooks.get('visualization')
    if isinstance(hook, dict):
        check_init_keys(hook, HOOKS)
    if isinstance(cfg.get('visualizer'), dict):
        check_init_keys(cfg.visualizer, VISUALIZERS, default_args=dict(name='', save_dir=''))


def main(argv=None):
    args = parse_args(argv)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    # non-learned models (SupportCopy) take no checkpoint; dist_test.sh passes 'none' then
    cfg.load_from = None if args.checkpoint in (None, '', 'none') else args.checkpoint
    # the checkpoint holds the backbone: do not read or download ImageNet weights first
    if cfg.load_from is not None and disable_backbone_pretrained(cfg.model):
        print('tools/test.py: model.backbone.pretrained set to None, the checkpoint provides '
              'the backbone weights')
    cfg.test_evaluator = dict(cfg.test_evaluator)
    cfg.test_evaluator.setdefault('out_dir', cfg.work_dir)
    if args.amp:
        cfg.test_cfg = dict(cfg.get('test_cfg') or dict(type='TestLoop'), fp16=True)
    cfg.launcher = args.launcher
    setup_visualization(cfg, args.show_dir, args.show_interval)
    check_model_config(cfg)
    setup_cpu_distributed(cfg, args.launcher)
    runner = build_runner(cfg, verbose=args.verbose)
    if not args.verbose:  # the metric's per-category table: printed below with the summary
        quiet_console(runner.logger, METRIC_TABLE)
    metrics = runner.test()
    if get_rank() == 0:
        per_category = coverage = None
        for metric in runner.test_evaluator.metrics:
            per_category = getattr(metric, 'last_per_category', None) or per_category
            coverage = getattr(metric, 'last_coverage', None) or coverage
        print(format_pck_table(metrics, per_category, coverage))
        if args.out:
            os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
            payload = dict(metrics=metrics, per_category=per_category)
            if coverage is not None:
                payload['categories'] = coverage
            with open(args.out, 'w', encoding='utf-8') as f:
                json.dump(payload, f, indent=2)
    teardown_distributed()
    return metrics


if __name__ == '__main__':
    main()
