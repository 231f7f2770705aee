#!/usr/bin/env python
"""Generate a deterministic synthetic MP-100-style CAPE data set (no downloads).

Examples::

    python tools/dataset_converters/make_synthetic_mp100.py --out data/synthetic_mp100
    python tools/dataset_converters/make_synthetic_mp100.py --out data/synthetic_mp100_real \
        --source mp100 --mp100-ann-dir data/mp100_annotations --img-size 128 --workers 2

See docs/synthetic_data.md for the output layout and the rendering design.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from metapoint.datasets.synthetic.writer import generate_dataset  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--out', required=True, help='output data set folder')
    p.add_argument('--source', choices=['random', 'mp100'], default='random',
                   help='random categories (default) or real MP-100 poses + skeletons')
    p.add_argument('--mp100-ann-dir', default=None,
                   help='folder of MP-100 COCO json files (every *.json is read); --source mp100')
    p.add_argument('--img-size', type=int, default=256, help='square image side (pixels)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--num-categories', type=int, default=100, help='--source random only')
    p.add_argument('--instances-per-category', type=int, default=30,
                   help='--source random only')
    p.add_argument('--max-instances-per-category', type=int, default=None,
                   help='keep at most N instances per category (mp100: first N in file order)')
    p.add_argument('--workers', type=int, default=1, help='rendering processes')
    p.add_argument('--overwrite', action='store_true',
                   help='replace the generated files already in --out')
    p.add_argument('--calib-pairs', type=int, default=2000,
                   help='(support, query) pairs for the SupportCopy PCK written to meta.json')
    args = p.parse_args(argv)
    if args.source == 'mp100' and not args.mp100_ann_dir:
        p.error('--source mp100 needs --mp100-ann-dir')
    return args


def main(argv=None):
    a = parse_args(argv)
    meta = generate_dataset(
        a.out, source=a.source, mp100_ann_dir=a.mp100_ann_dir, img_size=a.img_size, seed=a.seed,
        num_categories=a.num_categories, instances_per_category=a.instances_per_category,
        max_instances_per_category=a.max_instances_per_category, workers=a.workers,
        overwrite=a.overwrite, calib_pairs=a.calib_pairs, log=print)
    c = meta['counts']
    print(f"wrote {c['images']} images / {c['categories']} categories to {a.out}; "
          f"SupportCopy PCK@0.2 = {meta['support_copy_pck@0.2']:.4f}; "
          f"{meta['timing']['render_cpu_ms_per_image']:.2f} ms/image (one core), "
          f"{meta['timing']['elapsed_s']:.1f} s total")


if __name__ == '__main__':
    main()
