#!/usr/bin/env python
"""Add skeleton links to an MP-100 annotation file from another release that has them.

Examples::

    # FMMP's linked file: links only where the unified file has none (as the official file)
    python tools/dataset_converters/add_mp100_skeletons.py \
        data/mp100/annotations/unified_ann_file.json \
        data/mp100/annotations/mp100_all_link_0412.json \
        --source SOURCE_DIR --report-json work_dirs/links_report.json
    # every category's links from the source
    python tools/dataset_converters/add_mp100_skeletons.py IN.json OUT.json --source DIR \
        --mode replace

SOURCE_DIR: MP-100 files with links for every category (e.g. the val/test files redistributed
with skeletons for all categories). Categories are matched by id; the keypoint count (and name)
must agree, else nothing is written.
Index bases are decided per category (1-indexed, 0-indexed, empty) and the output is 0-indexed.
Prints one line per category: links before and after and what changed. See
docs/annotation_files.md.
"""
import argparse
import json
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

from metapoint.datasets.ann_file_tools import add_skeletons_to_file  # noqa: E402


def _base(value):
    return value if value == 'auto' else int(value)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('target', help='annotation file to add links to (e.g. unified_ann_file.json)')
    p.add_argument('out', help='file to write (e.g. mp100_all_link_0412.json)')
    p.add_argument('--source', nargs='+', required=True,
                   help='annotation file(s) or folder(s) of *.json with the links to copy')
    p.add_argument('--mode', choices=['only-empty', 'replace'], default='only-empty',
                   help='only-empty (default): add links only to categories without any, keep '
                        'the others (as the official FMMP file); replace: take every '
                        "category's links from the source")
    p.add_argument('--source-base', choices=['auto', '0', '1'], default='auto',
                   help='skeleton index base of the source files (default: decided per category)')
    p.add_argument('--target-base', choices=['auto', '0', '1'], default='auto',
                   help='skeleton index base of the target file (default: decided per category)')
    p.add_argument('--ignore-names', action='store_true',
                   help='do not refuse when a category name differs (the keypoint count must '
                        'still agree)')
    p.add_argument('--report-json', default=None,
                   help='also write the per-category report (links before / after) as json')
    p.add_argument('--overwrite', action='store_true', help='replace an existing output file')
    return p.parse_args(argv)


def main(argv=None):
    a = parse_args(argv)
    if a.report_json:  # before writing the output: its folder, and not a folder itself
        os.makedirs(osp.dirname(osp.abspath(a.report_json)), exist_ok=True)
        if osp.isdir(a.report_json):
            raise IsADirectoryError(f'--report-json {a.report_json} is a folder, not a file')
    report = add_skeletons_to_file(
        a.target, a.out, a.source, mode=a.mode, source_base=_base(a.source_base),
        target_base=_base(a.target_base), check_names=not a.ignore_names, overwrite=a.overwrite)
    print(report.table())
    print(report.summary())
    if a.report_json:
        with open(a.report_json, 'w', encoding='utf-8') as f:
            json.dump(report.to_dict(), f, indent=1)
        print(f'report: {a.report_json}')
    print(f'wrote {a.out}')
    return report


if __name__ == '__main__':
    main()
