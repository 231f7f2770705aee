#!/usr/bin/env python
"""Build a unified MP-100 annotation file (MetaPoint / FMMP layout) from the per-split files.

Examples::

    python tools/dataset_converters/build_mp100_unified.py data/mp100/annotations \
        data/mp100/annotations/unified_ann_file.json
    # only the val + test files (they already hold all 100 categories):
    python tools/dataset_converters/build_mp100_unified.py VAL_TEST_DIR \
        work_dirs/unified_ann_file.json --allow-missing

Reads ``mp100_split{1..5}_{train,val,test}.json`` from the folder, checks that each holds exactly
its official split/subset categories (``metapoint/datasets/mp100_splits.py``) and that the result
holds every category of every split, and writes every category, image and annotation once. See
docs/annotation_files.md.
"""
import argparse
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from metapoint.datasets.ann_file_tools import build_unified_to_file  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('ann_dir', help='folder of the official mp100_split{N}_{subset}.json files')
    p.add_argument('out', help='unified file to write (e.g. .../annotations/unified_ann_file.json)')
    p.add_argument('--allow-missing', action='store_true',
                   help='build from the per-split files that are there (missing ones are listed); '
                        'without it, all 15 must be there. Every category of every split must '
                        'still be found')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output file')
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    report = build_unified_to_file(a.ann_dir, a.out, allow_missing=a.allow_missing,
                                   overwrite=a.overwrite)
    print(report.summary())
    print(f'wrote {a.out}')
    return report


if __name__ == '__main__':
    main()
