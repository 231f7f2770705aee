"""Official MP-100 category splits (the single source of truth for split category ids).

``MP100_SPLITS[n][role]`` is the list of MP-100 category ids (1..100) of split ``n`` (1..5) and
role ``'train'`` (70 ids), ``'val'`` (10 ids) or ``'test'`` (20 ids), in the order of the
official MetaPoint / FMMP releases (episodes are drawn in this order). Within a split the three
roles are disjoint; the five test lists are disjoint and together cover 1..100.
:func:`resolve_class_ids` turns a config's ``valid_class_ids`` / ``split`` / ``subset`` /
``split_file`` into the id list (used by the dataset and by the data checker).

Also the one definition of the subset names (:data:`SUBSETS`), of the official per-split file
names ``mp100_split{N}_{subset}.json`` (:func:`per_split_file_name`,
:func:`parse_per_split_file_name`) and of where a relative ``split_file`` is looked up
(:func:`locate_split_file`).
"""
import json
import os.path as osp
import re
from typing import List, Optional, Tuple

#: the three subsets (roles) of a split, in this order
SUBSETS = ('train', 'val', 'test')
#: name of an official per-split annotation file
PER_SPLIT_FILE = 'mp100_split{split}_{subset}.json'
_PER_SPLIT_FILE_RE = re.compile(r'mp100_split(\d+)_(train|val|test)\.json')

MP100_SPLITS = {
    1: {
        'train': [
            37, 36, 56, 89, 65, 69, 74, 19, 9, 23, 79, 13, 93, 82, 99, 94, 34, 4, 61, 57, 51, 52,
            7, 85, 21, 90, 76, 38, 5, 63, 59, 50, 88, 100, 31, 32, 26, 41, 71, 15, 87, 54, 43, 27,
            58, 55, 16, 20, 28, 83, 44, 46, 86, 98, 17, 49, 45, 40, 8, 64, 80, 62, 11, 18, 1, 97,
            75, 67, 25, 72
        ],
        'val': [48, 22, 12, 91, 96, 6, 35, 95, 66, 92],
        'test': [
            10, 77, 24, 47, 33, 29, 70, 68, 81, 73, 2, 14, 30, 53, 42, 3, 39, 84, 78, 60
        ],
    },
    2: {
        'train': [
            10, 56, 22, 69, 65, 12, 74, 19, 9, 77, 23, 13, 94, 34, 24, 4, 47, 61, 33, 51, 7, 52,
            85, 96, 29, 70, 21, 90, 68, 6, 38, 5, 35, 81, 63, 59, 88, 73, 100, 31, 32, 2, 26, 41,
            15, 87, 54, 14, 30, 58, 55, 16, 20, 42, 83, 44, 3, 46, 39, 66, 84, 49, 40, 64, 80, 92,
            60, 18, 75, 72
        ],
        'val': [36, 93, 57, 50, 95, 27, 53, 78, 11, 1],
        'test': [
            37, 48, 89, 79, 82, 99, 91, 76, 71, 43, 28, 86, 98, 17, 45, 8, 62, 97, 67, 25
        ],
    },
    3: {
        'train': [
            48, 37, 10, 36, 56, 89, 65, 74, 77, 23, 79, 13, 93, 99, 94, 24, 4, 47, 61, 57, 51, 7,
            29, 76, 68, 6, 38, 35, 5, 81, 59, 50, 88, 73, 32, 2, 95, 41, 71, 15, 27, 43, 14, 58,
            55, 53, 20, 28, 42, 83, 3, 46, 86, 98, 17, 45, 40, 8, 64, 80, 78, 92, 62, 60, 18, 1,
            97, 75, 67, 25
        ],
        'val': [19, 82, 91, 33, 21, 70, 26, 30, 39, 84],
        'test': [
            22, 69, 12, 9, 34, 52, 96, 85, 90, 63, 100, 31, 87, 54, 16, 44, 66, 49, 11, 72
        ],
    },
    4: {
        'train': [
            48, 37, 10, 36, 22, 89, 69, 74, 19, 9, 77, 79, 93, 82, 99, 34, 24, 47, 61, 91, 57, 33,
            52, 96, 85, 29, 70, 21, 90, 76, 68, 5, 81, 63, 59, 31, 32, 2, 71, 87, 54, 43, 14, 30,
            58, 53, 16, 28, 42, 44, 3, 46, 39, 66, 84, 86, 98, 17, 49, 45, 8, 64, 78, 62, 60, 11,
            97, 75, 67, 72
        ],
        'val': [56, 12, 51, 6, 73, 100, 26, 18, 1, 25],
        'test': [
            65, 23, 13, 94, 4, 7, 38, 35, 50, 88, 95, 41, 15, 27, 55, 20, 83, 40, 80, 92
        ],
    },
    5: {
        'train': [
            48, 37, 10, 22, 89, 65, 69, 12, 23, 79, 13, 82, 99, 94, 34, 24, 4, 47, 91, 33, 7, 85,
            96, 29, 70, 90, 76, 68, 38, 81, 35, 63, 88, 73, 100, 95, 71, 15, 87, 54, 27, 43, 30,
            55, 16, 20, 28, 42, 83, 44, 3, 39, 66, 84, 86, 98, 49, 45, 40, 8, 80, 78, 92, 62, 60,
            11, 97, 67, 25, 72
        ],
        'val': [9, 77, 52, 50, 31, 2, 41, 14, 53, 17],
        'test': [
            36, 56, 74, 19, 93, 61, 57, 51, 21, 6, 5, 59, 32, 26, 58, 46, 64, 18, 1, 75
        ],
    },
}


def resolve_class_ids(valid_class_ids, split: Optional[int], subset: Optional[str],
                      split_file: Optional[str]) -> Optional[List[int]]:
    """Category ids to load: explicit ids, or a split's subset from a split file / MP-100's table.

    ``split_file`` may be ``{"split1": {"train": [...], ...}, ...}`` (our generator) or
    ``{"train": [...], "test": [...]}`` (mp100_mini, used with ``split=None``).
    """
    if valid_class_ids is not None:
        return [int(i) for i in valid_class_ids]
    if subset is None:
        if split is not None:
            raise ValueError('split given without subset (train / val / test)')
        return None
    if split_file is not None:
        with open(split_file, 'r', encoding='utf-8') as f:
            table = json.load(f)
        entry = table[f'split{split}'] if split is not None else table
        if subset not in entry:
            raise KeyError(f'{split_file}: no subset {subset!r} for split {split}')
        return [int(i) for i in entry[subset]]
    if split is None:
        raise ValueError('subset given without split or split_file')
    if int(split) not in MP100_SPLITS:
        raise ValueError(f'MP-100 has splits 1..5, got {split}')
    return list(MP100_SPLITS[int(split)][subset])


def per_split_file_name(split: int, subset: str) -> str:
    """``mp100_split{split}_{subset}.json``."""
    return PER_SPLIT_FILE.format(split=split, subset=subset)


def parse_per_split_file_name(path: str) -> Optional[Tuple[int, str]]:
    """(split, subset) when the base name of ``path`` is ``mp100_split{N}_{subset}.json``."""
    m = _PER_SPLIT_FILE_RE.fullmatch(osp.basename(path))
    return (int(m.group(1)), m.group(2)) if m else None


def locate_split_file(split_file: Optional[str], data_root: str) -> Optional[str]:
    """A relative ``split_file`` is taken from the working directory when it exists there,
    else from ``data_root``; absolute paths (and None) are returned unchanged."""
    if split_file is None or osp.isabs(split_file) or osp.exists(split_file) or not data_root:
        return split_file
    return osp.join(data_root, split_file)
