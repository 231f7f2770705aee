"""Check an MP-100 data tree before training / evaluation.

``python tools/misc/check_mp100.py DATA_ROOT [--ann-file F] [--split N] [--decode] [--json OUT]``

Prints, per category, the annotations and the images present / missing / unreadable, the known
traps found (with what to do; see docs/data_preparation.md) and a verdict per split. Exit status:
0 when every checked split is complete, 1 when one is not, 2 on bad arguments or when no
annotation file is found.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from metapoint.datasets.mp100_check import check_mp100  # noqa: E402
from metapoint.datasets.mp100_splits import SUBSETS  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Check an MP-100 data tree: annotations, images, known traps, verdict per '
                    'split')
    parser.add_argument('data_root', help='dataset root, e.g. data/mp100')
    parser.add_argument('--ann-file', help='one annotation file (relative to DATA_ROOT or '
                        'absolute); default: annotations/unified_ann_file.json, else the '
                        'per-split files annotations/mp100_split{N}_{subset}.json')
    parser.add_argument('--img-dir', help='image root (relative to DATA_ROOT or absolute); '
                        'default: the first of mp100_images_cc, images, DATA_ROOT that exists')
    parser.add_argument('--split-file', help='split table instead of the official MP-100 splits '
                        '({"splitN": {...}} or {"train": [...], "test": [...]}); per-split '
                        'files must then hold exactly its splitN lists')
    parser.add_argument('--split', action='append', help='split to check (repeatable); '
                        'default: every split of the layout')
    parser.add_argument('--subset', action='append', choices=SUBSETS,
                        help='subset to check (repeatable); default: train, val and test '
                        '(a per-split --ann-file is its own subset, which must be among them)')
    parser.add_argument('--decode', action='store_true',
                        help='decode every image (slow) instead of checking size only')
    parser.add_argument('--json', metavar='OUT', help='also write the full report as JSON')
    parser.add_argument('--problems-only', action='store_true',
                        help='list only categories that block or show a trap')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if not osp.isdir(args.data_root):
        print(f'error: DATA_ROOT {args.data_root} is not a folder', file=sys.stderr)
        return 2
    try:
        report = check_mp100(args.data_root, ann_file=args.ann_file, img_dir=args.img_dir,
                             split_file=args.split_file, splits=args.split,
                             subsets=args.subset or SUBSETS, decode=args.decode)
    except (FileNotFoundError, ValueError, KeyError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 2
    print(report.format(all_categories=not args.problems_only))
    if args.json:
        os.makedirs(osp.dirname(osp.abspath(args.json)), exist_ok=True)
        with open(args.json, 'w', encoding='utf-8') as f:
            json.dump(report.to_dict(), f, indent=1)
        print(f'\nJSON report written to {args.json}')
    return 0 if report.complete else 1


if __name__ == '__main__':
    sys.exit(main())
