"""Look at episodes as a config's pipeline makes them, one picture per episode.

    python tools/misc/browse_dataset.py CONFIG [--phase train|val|test] [--output-dir DIR]
        [--num N] [--show-heatmaps] [--panel-size PX] [--cfg-options KEY=VALUE ...]

Each picture shows every support and query crop after the pipeline (augmentation for
``--phase train``, the top-down crop, the episode pipeline's keypoint padding): the category's
keypoints as dots in one colour per keypoint index with the skeleton, the padded keypoint slots
in use (FMMP's 'eqdiv' / 'mixup' padding) as hollow grey rings, and with ``--show-heatmaps`` a
second row with the target heatmaps as a colour overlay (when the pipeline makes heatmaps). The
title holds the phase, episode index, category id and name, keypoint count, slot count and the
number of padded slots in use.

``--num N`` episodes, evenly spaced over the dataset (all when it has fewer), go to
``--output-dir`` (default ``work_dirs/browse_dataset/<config name>/<phase>``) as
``<phase>_episode<index>_cat<id>.png``. Exit status 0, or 2 for bad arguments or missing data.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402

PHASES = ('train', 'val', 'test')


class BrowseError(Exception):
    """Bad arguments or missing data (printed, exit status 2)."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Save pictures of episodes after the pipeline (augmentation, padding, '
                    'heatmaps)')
    parser.add_argument('config', help='config file')
    parser.add_argument('--phase', choices=PHASES, default='train',
                        help='which dataloader\'s dataset to browse (default: train)')
    parser.add_argument('--output-dir', help='where the pictures go (default: '
                        'work_dirs/browse_dataset/<config name>/<phase>)')
    parser.add_argument('--num', type=int, default=10,
                        help='number of episodes, evenly spaced over the dataset (default 10)')
    parser.add_argument('--show-heatmaps', action='store_true',
                        help='add a row with the target heatmaps as a colour overlay')
    parser.add_argument('--panel-size', type=int, default=256,
                        help='height of each crop panel in pixels (default 256)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, key=value (e.g. '
                        'train_dataloader.dataset.data_root=DIR)')
    args = parser.parse_args(argv)
    if args.num < 1:
        parser.error(f'--num must be >= 1, got {args.num}')
    if args.panel_size < 16:
        parser.error(f'--panel-size must be >= 16, got {args.panel_size}')
    return args


def dataset_config(cfg: Config, phase: str, config_path: str) -> dict:
    """The ``{phase}_dataloader.dataset`` config, its data root and annotation file checked."""
    key = f'{phase}_dataloader'
    loader = cfg.get(key)
    if not loader or not loader.get('dataset'):
        have = [p for p in PHASES if cfg.get(f'{p}_dataloader')]
        raise BrowseError(f'{config_path} has no {key} (with a dataset); phases it has: '
                          f'{", ".join(have) or "none"}')
    ds = loader['dataset']
    hint = (f'create the data (docs/data_preparation.md, docs/synthetic_data.md) or point '
            f'to it with --cfg-options {key}.dataset.data_root=DIR')
    root = ds.get('data_root') or ''
    if root and not osp.isdir(root):
        raise BrowseError(f'data root not found: {root} ({key}.dataset.data_root in '
                          f'{config_path}); {hint}')
    ann_file = ds.get('ann_file')
    if ann_file:
        path = osp.join(root, ann_file) if root and not osp.isabs(ann_file) else ann_file
        if not osp.isfile(path):
            raise BrowseError(f'annotation file not found: {path} ({key}.dataset.ann_file = '
                              f'{ann_file!r}, data_root = {root!r}); {hint}')
    return ds


def pick_indices(length: int, num: int) -> list:
    """``num`` distinct indices evenly spaced over ``range(length)`` (all when fewer)."""
    if num >= length:
        return list(range(length))
    return sorted({int(round(v)) for v in np.linspace(0, length - 1, num)})


def browse(args) -> list:
    """Write the pictures; returns their paths."""
    from metapoint.datasets import episode_collate
    from metapoint.registry import DATASETS
    from metapoint.utils import register_all_modules
    from metapoint.visualization import episode_view, render_episode_inputs
    from metapoint.visualization.episode_drawing import episode_title

    if not osp.isfile(args.config):
        raise BrowseError(f'config file not found: {args.config}')
    register_all_modules()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    ds_cfg = dataset_config(cfg, args.phase, args.config)
    try:
        dataset = DATASETS.build(ds_cfg)
    except (ValueError, KeyError, OSError) as e:  # bad annotations, too few instances, ...
        raise BrowseError(f'{args.phase}_dataloader.dataset of {args.config}: '
                          f'{type(e).__name__}: {e}') from e
    out_dir = args.output_dir or osp.join(
        'work_dirs', 'browse_dataset', osp.splitext(osp.basename(args.config))[0], args.phase)
    os.makedirs(out_dir, exist_ok=True)
    categories = getattr(dataset, 'metainfo', {}).get('categories')
    written, no_heatmaps = [], False
    for index in pick_indices(len(dataset), args.num):
        batch = episode_collate([dataset[index]])['inputs']
        view = episode_view(batch, 0, categories=categories)
        no_heatmaps |= args.show_heatmaps and view.support_heatmaps is None
        canvas = render_episode_inputs(
            view, args.panel_size, args.show_heatmaps,
            title=episode_title(view, f'{args.phase} episode {index} | '))
        path = osp.join(out_dir, f'{args.phase}_episode{index:05d}_cat{view.category_id}.png')
        if not cv2.imwrite(path, canvas):
            raise BrowseError(f'could not write {path}')
        written.append(path)
    if no_heatmaps:
        print(f'note: the {args.phase} pipeline makes no target heatmaps '
              '(GenerateCAPETarget with_heatmap=False); none drawn')
    print(f'wrote {len(written)} episode picture(s) of {len(dataset)} episodes to {out_dir}')
    return written


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        browse(args)
    except BrowseError as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
