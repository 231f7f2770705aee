"""Check an MP-100 data tree: annotations, images and the known traps, with a verdict per split.

Used by ``tools/misc/check_mp100.py`` (see ``docs/data_preparation.md``). Everything the dataset
decides is decided here the same way: categories and instances come from
:func:`~metapoint.datasets.annotation_parsing.parse_categories` /
:func:`~metapoint.datasets.annotation_parsing.parse_instances` (keypoint count from the
annotations for an empty name list, ``'auto'`` skeleton index base, the official instance drops)
and split category lists from :func:`~metapoint.datasets.mp100_splits.resolve_class_ids`.

Layouts (``DATA_ROOT`` relative):

* ``annotations/unified_ann_file.json``: one file, splits from ``MP100_SPLITS`` (or a split file);
* ``annotations/mp100_split{N}_{train,val,test}.json``: one file per split and subset;
* ``ann_file`` given: that file; a ``mp100_split{N}_{subset}.json`` name is that split's subset,
  anything else is split by ``split_file`` or by ``MP100_SPLITS``.

A per-split file must hold exactly the categories of its split's list (``MP100_SPLITS``, or the
``splitN`` entry of ``split_file`` when one is given); a difference blocks that subset, with the
missing and extra ids. The whole file is parsed once, as the dataset parses it, so what the
dataset refuses for the file (e.g. an annotation id used twice, in any categories) blocks every
subset read from it; only when that parse fails are the categories parsed one by one, to say
which of them the error belongs to.

Images are ``<image root>/<file_name>``; the image root is ``img_dir`` or, when not given, the
first of ``mp100_images_cc``, ``images`` and ``DATA_ROOT`` itself (the official guide's layout)
that exists. An image is *present* when it is a non-empty file (and, with ``decode``, decodes),
*missing* when there is no file, *unreadable* when it is empty (0 bytes) or does not decode.
Only the images of usable instances are checked (those the dataset loads); for a category whose
annotations do not parse, every image its annotations name.

A split is *complete* when every category of every checked subset is in its annotation file,
parses, has at least one usable instance and has every image present, and every per-split file
holds exactly its list.
"""
from __future__ import annotations

import difflib
import json
import os
import os.path as osp
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .ann_file_tools import SplitMismatchError, check_split_categories
from .annotation_parsing import (AnnotationError, ParseReport, UndecidableSkeletonBaseError,
                                 load_json, parse_categories, parse_instances)
from .image_files import image_problem
from .mp100_splits import (MP100_SPLITS, PER_SPLIT_FILE, SUBSETS, locate_split_file,
                           parse_per_split_file_name, per_split_file_name, resolve_class_ids)

UNIFIED_ANN_FILE = 'annotations/unified_ann_file.json'
ANN_DIR = 'annotations'
IMAGE_ROOT_CANDIDATES = ('mp100_images_cc', 'images', '')
#: the split name used for a split file without numbered splits (``{"train": [...], ...}``)
DEFAULT_SPLIT = 'default'

#: MP-100's CarFusion categories (folder = category name in the release)
CARFUSION_NAMES = ('car', 'bus', 'suv')
#: the 13 DeepFashion2 clothing types (MP-100's clothes categories carry these names)
DEEPFASHION2_NAMES = ('short_sleeved_shirt', 'long_sleeved_shirt', 'short_sleeved_outwear',
                      'long_sleeved_outwear', 'vest', 'sling', 'shorts', 'trousers', 'skirt',
                      'short_sleeved_dress', 'long_sleeved_dress', 'vest_dress', 'sling_dress')
H5_SUFFIXES = ('.h5', '.hdf5')
#: how many problem files / suggestions the text report shows per category
NUM_EXAMPLES = 3


def _slash(path: str) -> str:
    """A file name with ``/`` separators (annotations may use ``\\``)."""
    return path.replace('\\', '/')


# ------------------------------------------------------------------------------ name matching
def _norm(text: str) -> str:
    """Lower case, separators dropped, leading zeros of every number dropped."""
    text = re.sub(r'[\s_\-.]+', '', text.lower())
    return re.sub(r'\d+', lambda m: str(int(m.group())), text)


def _name_keys(name: str) -> List[Tuple[str, str]]:
    """Keys under which two file names count as closely related.

    Same stem up to case / separators / zero padding (any extension), or the same single number
    behind a different non-numeric prefix (``1500902961.jpg`` ~ ``car_001500902961.png``).
    """
    stem = osp.splitext(name)[0]
    keys = [('stem', _norm(stem))]
    runs = re.findall(r'\d+', stem)
    if len(runs) == 1 and stem.endswith(runs[0]):
        keys.append(('number', str(int(runs[0]))))
    return keys


class _DirIndex:
    """The entries of one folder: subfolders, .h5 files and a close-name index of its files."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.subdirs: List[str] = []
        self.files: List[str] = []
        self.h5: List[str] = []
        self._by_key: Dict[Tuple[str, str], List[str]] = {}
        try:
            entries = sorted(os.scandir(path), key=lambda e: e.name)
        except OSError:
            entries = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                self.subdirs.append(entry.name)
                continue
            self.files.append(entry.name)
            if entry.name.lower().endswith(H5_SUFFIXES):
                self.h5.append(entry.name)
            for key in _name_keys(entry.name):
                self._by_key.setdefault(key, []).append(entry.name)

    def close_names(self, name: str) -> List[str]:
        """Files here whose name is closely related to ``name`` (not ``name`` itself)."""
        out: List[str] = []
        for key in _name_keys(name):
            for cand in self._by_key.get(key, []):
                if cand != name and cand not in out:
                    out.append(cand)
        return out

    def close_subdirs(self, name: str) -> List[str]:
        """Subfolders whose name equals ``name`` up to case / separators, else is similar."""
        same = [d for d in self.subdirs if _norm(d) == _norm(name)]
        if same:
            return same
        by_norm = {_norm(d): d for d in self.subdirs}
        return [by_norm[m] for m in difflib.get_close_matches(_norm(name), list(by_norm), n=3,
                                                              cutoff=0.85)]


# ------------------------------------------------------------------------------ results
@dataclass
class Trap:
    """A known MP-100 pitfall found in the tree: its id, the categories, what to do."""
    id: str
    categories: List[int]
    message: str

    def to_dict(self) -> dict:
        return dict(id=self.id, categories=list(self.categories), message=self.message)


@dataclass
class CategoryCheck:
    """One category in one or more annotation files.

    ``image_files`` maps each checked image (``file_name``, relative to the image root) to its
    problem (None = present); counts are derived from it.
    """
    id: int
    name: str
    num_kpts: Optional[int] = None
    num_keypoint_names: int = 0
    #: '0', '1', 'empty' (as 'auto' decides), 'undecidable', or None when parsing failed earlier
    skeleton_index_base: Optional[str] = None
    ann_ids: set = field(default_factory=set)
    instance_ids: set = field(default_factory=set)
    image_files: Dict[str, Optional[str]] = field(default_factory=dict)
    errors: List[str] = field(default_factory=list)
    suggestions: Dict[str, List[str]] = field(default_factory=dict)
    traps: List[str] = field(default_factory=list)
    ann_files: List[str] = field(default_factory=list)

    @property
    def folders(self) -> List[str]:
        """Top-level folders of the category's image file names."""
        return sorted({_slash(f).split('/')[0] for f in self.image_files if '/' in _slash(f)})

    @property
    def present(self) -> int:
        return sum(p is None for p in self.image_files.values())

    @property
    def missing(self) -> int:
        return sum(p == 'missing' for p in self.image_files.values())

    @property
    def unreadable(self) -> int:
        return sum(p not in (None, 'missing') for p in self.image_files.values())

    @property
    def complete(self) -> bool:
        return not self.blocker()

    def blocker(self) -> str:
        """Why this category blocks a split ('' when it does not)."""
        if self.errors:
            return 'annotation error'
        parts = []
        if self.missing:
            parts.append(f'{self.missing} missing')
        if self.unreadable:
            parts.append(f'{self.unreadable} unreadable')
        if not parts and not self.instance_ids:
            parts.append('no usable instance')
        return ', '.join(parts)

    def merge(self, other: 'CategoryCheck') -> None:
        """Add the files / annotations of the same category from another annotation file."""
        self.ann_ids |= other.ann_ids
        self.instance_ids |= other.instance_ids
        self.image_files.update(other.image_files)
        self.errors += [e for e in other.errors if e not in self.errors]
        self.ann_files += [f for f in other.ann_files if f not in self.ann_files]
        if self.num_kpts is None:
            self.num_kpts, self.skeleton_index_base = other.num_kpts, other.skeleton_index_base
            self.num_keypoint_names = other.num_keypoint_names

    def to_dict(self) -> dict:
        problems = {f: p for f, p in sorted(self.image_files.items()) if p is not None}
        return dict(
            id=self.id, name=self.name, folders=self.folders, num_kpts=self.num_kpts,
            num_keypoint_names=self.num_keypoint_names,
            skeleton_index_base=self.skeleton_index_base,
            annotations=len(self.ann_ids), instances=len(self.instance_ids),
            images=len(self.image_files), present=self.present, missing=self.missing,
            unreadable=self.unreadable, complete=self.complete, blocker=self.blocker() or None,
            problems=problems, suggestions=dict(sorted(self.suggestions.items())),
            traps=list(self.traps), errors=list(self.errors), ann_files=list(self.ann_files))


@dataclass
class SubsetCheck:
    """One (split, subset): its annotation file, categories and the categories that block it."""
    split: str
    subset: str
    ann_file: str
    category_ids: List[int] = field(default_factory=list)
    blocked: Dict[int, str] = field(default_factory=dict)  # category id -> reason
    error: Optional[str] = None  # the annotation file itself is missing / broken

    @property
    def complete(self) -> bool:
        return self.error is None and not self.blocked

    def to_dict(self) -> dict:
        return dict(split=self.split, subset=self.subset, ann_file=self.ann_file,
                    complete=self.complete, num_categories=len(self.category_ids),
                    category_ids=list(self.category_ids), error=self.error,
                    blocked={str(c): r for c, r in self.blocked.items()})


@dataclass
class MP100CheckReport:
    """Everything :func:`check_mp100` found; :meth:`format` is the text report."""
    data_root: str
    img_root: str
    layout: str
    decode: bool
    categories: 'OrderedDict[int, CategoryCheck]'
    subsets: List[SubsetCheck]
    traps: List[Trap]
    notes: List[str] = field(default_factory=list)

    @property
    def splits(self) -> List[str]:
        out: List[str] = []
        for s in self.subsets:
            if s.split not in out:
                out.append(s.split)
        return out

    def split_complete(self, split: Union[int, str]) -> bool:
        subsets = [s for s in self.subsets if s.split == str(split)]
        if not subsets:
            raise KeyError(f'split {split} was not checked (checked: {self.splits})')
        return all(s.complete for s in subsets)

    @property
    def complete(self) -> bool:
        """Every checked split is complete."""
        return all(s.complete for s in self.subsets)

    def to_dict(self) -> dict:
        splits = OrderedDict()
        for name in self.splits:
            subs = [s for s in self.subsets if s.split == name]
            splits[name] = dict(complete=all(s.complete for s in subs),
                                subsets={s.subset: s.to_dict() for s in subs})
        return dict(
            data_root=self.data_root, img_root=self.img_root, layout=self.layout,
            decode=self.decode, complete=self.complete, notes=list(self.notes),
            num_categories=len(self.categories),
            num_complete_categories=sum(c.complete for c in self.categories.values()),
            skeleton_index_base=_base_table(self.categories.values()),
            traps=[t.to_dict() for t in self.traps], splits=splits,
            categories={str(c): r.to_dict() for c, r in self.categories.items()})

    def format(self, all_categories: bool = True) -> str:
        """The text report: category table, problem details, traps, verdict per split."""
        return _format_report(self, all_categories)


# ------------------------------------------------------------------------------ layout
@dataclass
class _Unit:
    """One checked (split, subset): the annotation file and its category ids (None = all).

    ``expected_ids``: for a per-split file, the list its categories must equal exactly
    (``list_name`` names that list in the mismatch error).
    """
    split: str
    subset: str
    ann_file: str
    class_ids: Optional[List[int]]
    expected_ids: Optional[List[int]] = None
    list_name: str = ''


def _split_file_table(split_file: str) -> 'OrderedDict[str, List[str]]':
    """``{split name: [subsets]}`` of a split file (numbered ``splitN`` entries or flat)."""
    with open(split_file, 'r', encoding='utf-8') as f:
        table = json.load(f)
    if not isinstance(table, dict):
        raise ValueError(f'{split_file}: expected a JSON object')
    numbered = OrderedDict()
    for key, entry in table.items():
        m = re.fullmatch(r'split(\d+)', str(key))
        if m and isinstance(entry, dict):
            numbered[m.group(1)] = [s for s in SUBSETS if s in entry]
    if numbered:
        return numbered
    flat = [s for s in SUBSETS if isinstance(table.get(s), list)]
    if not flat:
        raise ValueError(f'{split_file}: neither "splitN" entries nor train/val/test id lists')
    return OrderedDict([(DEFAULT_SPLIT, flat)])


def _units(data_root: str, ann_file: Optional[str], split_file: Optional[str],
           splits: Optional[Sequence[Union[int, str]]], subsets: Sequence[str]
           ) -> Tuple[str, List[_Unit]]:
    """The layout's name and the (split, subset, file, ids) units to check.

    Raises ValueError for a setting that cannot apply to the layout (never ignored silently).
    """
    want = None if splits is None else [str(s) for s in splits]

    def pick(available: Iterable[str]) -> List[str]:
        available = list(available)
        if want is None:
            return available
        unknown = [s for s in want if s not in available]
        if unknown:
            raise ValueError(f'split(s) {unknown} not available here (available: {available})')
        return want

    def rel(path: str) -> str:
        return path if osp.isabs(path) else osp.join(data_root, path)

    split_file = locate_split_file(split_file, data_root)
    table = None if split_file is None else _split_file_table(split_file)

    def per_split_unit(name: str, subset: str, path: str) -> _Unit:
        """A per-split file: every category in it, which must be exactly its split's list."""
        if table is None:
            if int(name) not in MP100_SPLITS:
                raise ValueError(f'{path}: names split {name}, MP-100 has splits '
                                 f'{sorted(MP100_SPLITS)} (pass a split file with a '
                                 f'"split{name}" entry)')
            return _Unit(name, subset, path, None, list(MP100_SPLITS[int(name)][subset]),
                         f'the official split {name} {subset!r} list')
        if name not in table or subset not in table[name]:
            raise ValueError(f'{path}: the split file {split_file} has no split{name} '
                             f'{subset!r} list to check this per-split file against')
        return _Unit(name, subset, path, None,
                     resolve_class_ids(None, int(name), subset, split_file),
                     f'the split {name} {subset!r} list of {split_file}')

    if ann_file is None and osp.isfile(rel(UNIFIED_ANN_FILE)):
        ann_file = UNIFIED_ANN_FILE
    if ann_file is not None:
        path = rel(ann_file)
        named = parse_per_split_file_name(path)
        if named is not None:
            name, subset = str(named[0]), named[1]
            if subset not in subsets:
                raise ValueError(f'{osp.basename(path)} is the {subset!r} file of split {name}, '
                                 f'not among the subsets to check {list(subsets)}: name the '
                                 'file of that subset, or leave the subsets out')
            pick([name])
            return 'per-split file', [per_split_unit(name, subset, path)]
        if table is not None:
            units = []
            for name in pick(table):
                split_arg = None if name == DEFAULT_SPLIT else int(name)
                for subset in table[name]:
                    if subset in subsets:
                        units.append(_Unit(name, subset, path, resolve_class_ids(
                            None, split_arg, subset, split_file)))
            return f'one file, splits from {osp.basename(split_file)}', units
        units = [_Unit(name, subset, path, resolve_class_ids(None, int(name), subset, None))
                 for name in pick(str(n) for n in MP100_SPLITS) for subset in subsets]
        return 'one file, official MP-100 splits', units
    pattern = f'{ANN_DIR}/{PER_SPLIT_FILE}'
    if table is not None and DEFAULT_SPLIT in table:
        raise ValueError(f'{split_file} has no "splitN" entries, so it cannot say which '
                         f'per-split files {pattern} to check: pass the annotation file '
                         '(--ann-file) it splits')
    names = pick(table if table is not None else (str(n) for n in MP100_SPLITS))
    units = [per_split_unit(name, subset, rel(f'{ANN_DIR}/{per_split_file_name(name, subset)}'))
             for name in names for subset in subsets
             if table is None or subset in table[name]]
    if not any(osp.isfile(u.ann_file) for u in units):
        raise FileNotFoundError(
            f'{data_root}: no annotation file found: expected {UNIFIED_ANN_FILE} or '
            f'{pattern} (give --ann-file for another name)')
    layout = 'per-split files' + (f', lists from {osp.basename(split_file)}'
                                  if split_file is not None else '')
    return layout, units


def _image_root(data_root: str, img_dir: Optional[str]) -> str:
    if img_dir is not None:
        return img_dir if osp.isabs(img_dir) else osp.join(data_root, img_dir)
    for cand in IMAGE_ROOT_CANDIDATES:
        path = osp.join(data_root, cand) if cand else data_root
        if osp.isdir(path):
            return path.rstrip('/\\') if cand else data_root
    return osp.join(data_root, IMAGE_ROOT_CANDIDATES[0])


# ------------------------------------------------------------------------------ checking
def _set_parsed(check: CategoryCheck, rec) -> None:
    """Copy K_c and the decided skeleton index base of a parsed category record."""
    check.num_kpts = rec.num_kpts
    check.skeleton_index_base = 'empty' if rec.skeleton_index_base is None \
        else str(rec.skeleton_index_base)


class _Checker:

    def __init__(self, img_root: str, decode: bool) -> None:
        self.img_root = img_root
        self.decode = decode
        #: top-level folders named by the annotations (never suggested for another folder)
        self.known_folders: set = set()
        self._status: Dict[str, Optional[str]] = {}
        self._dirs: Dict[str, _DirIndex] = {}

    def status(self, file_name: str) -> Optional[str]:
        if file_name not in self._status:
            self._status[file_name] = image_problem(osp.join(self.img_root, file_name),
                                                    self.decode)
        return self._status[file_name]

    def dir_index(self, rel_dir: str) -> _DirIndex:
        if rel_dir not in self._dirs:
            self._dirs[rel_dir] = _DirIndex(osp.join(self.img_root, rel_dir))
        return self._dirs[rel_dir]

    # -------------------------------------------------------------- one annotation file
    def check_file(self, path: str, class_ids: Optional[List[int]]
                   ) -> Tuple['OrderedDict[int, CategoryCheck]', List[int]]:
        """Category checks of ``path`` for ``class_ids`` (None: all) and the ids not in it.

        The wanted categories are parsed together, as the dataset parses them. When that fails,
        the file-wide checks run alone (their error, e.g. an annotation id used twice, is
        raised: it blocks every subset of the file), then each category is parsed alone so that
        a category's error blocks that category only.

        Raises:
            FileNotFoundError / AnnotationError: the file is missing, or the dataset would refuse
                it whichever categories are selected.
        """
        data = load_json(path)
        by_id = OrderedDict()
        for cat in data['categories']:
            if isinstance(cat, dict) and 'id' in cat:
                by_id.setdefault(cat['id'], cat)
        ids = list(by_id) if class_ids is None else list(OrderedDict.fromkeys(class_ids))
        absent = [c for c in ids if c not in by_id]
        wanted = [c for c in ids if c in by_id]
        images = {img['id']: img for img in data['images'] if isinstance(img, dict) and 'id' in img}
        anns_by_cat: Dict[int, List[dict]] = {c: [] for c in wanted}
        for ann in data['annotations']:
            if isinstance(ann, dict) and ann.get('category_id') in anns_by_cat:
                anns_by_cat[ann['category_id']].append(ann)
        out = OrderedDict()
        for cid in wanted:
            cat = by_id[cid]
            out[cid] = CategoryCheck(id=cid, name=str(cat.get('name', cid)),
                                     num_keypoint_names=len(cat.get('keypoints') or []),
                                     ann_ids={a.get('id') for a in anns_by_cat[cid]},
                                     ann_files=[path])
        usable: Dict[int, Optional[List[str]]] = {}  # category -> image file names to check
        try:
            report = ParseReport()
            recs = parse_categories(data, path, wanted, 10**9, 'auto', False, report)
            instances = parse_instances(data, path, recs,
                                        max([r.num_kpts for r in recs.values()], default=1), '',
                                        report)
        except AnnotationError:
            # the file-wide part of the dataset's checks (entries without an id, duplicate
            # category / annotation ids, over every category of the file)
            parse_categories(data, path, [], 1, 'auto', False, ParseReport())
            parse_instances(data, path, OrderedDict(), 1, '', ParseReport())
            for cid in wanted:
                usable[cid] = self._parse_category(data, path, by_id[cid], anns_by_cat[cid],
                                                   images, out[cid])
            if not any(c.errors for c in out.values()):  # not one category's fault
                raise
        else:
            for cid, rec in recs.items():
                _set_parsed(out[cid], rec)
                usable[cid] = []
            for inst in instances:
                out[inst['category_id']].instance_ids.add(inst['ann_id'])
                usable[inst['category_id']].append(inst['img_path'])
        for cid, check in out.items():
            names = usable[cid]
            if names is None:  # not parsable: check every image its annotations name
                names = [images[a['image_id']]['file_name'] for a in anns_by_cat[cid]
                         if a.get('image_id') in images and 'file_name' in images[a['image_id']]]
            for name in names:
                check.image_files[name] = self.status(name)
        return out, absent

    @staticmethod
    def _parse_category(data: dict, path: str, cat: dict, anns: List[dict], images: Dict,
                        check: CategoryCheck) -> Optional[List[str]]:
        """Parse one category alone into ``check``; its usable image names, None on error."""
        cid = cat['id']
        try:
            report = ParseReport()
            sub = dict(data, annotations=anns)
            rec = parse_categories(sub, path, [cid], 10**9, 'auto', False, report)[cid]
            _set_parsed(check, rec)
            sub['images'] = [images[i] for i in dict.fromkeys(a.get('image_id') for a in anns)
                             if i in images]
            instances = parse_instances(sub, path, OrderedDict([(cid, rec)]), rec.num_kpts, '',
                                        report)
        except UndecidableSkeletonBaseError as e:
            check.errors.append(str(e))
            check.skeleton_index_base = 'undecidable'
            return None
        except AnnotationError as e:
            check.errors.append(str(e))
            return None
        check.instance_ids = {inst['ann_id'] for inst in instances}
        return [inst['img_path'] for inst in instances]

    # -------------------------------------------------------------- traps per category
    def diagnose(self, check: CategoryCheck) -> List[Trap]:
        """Suggestions for the missing files of one category and the traps they point to."""
        missing = [f for f, p in check.image_files.items() if p == 'missing']
        if not missing:
            return []
        traps: Dict[str, str] = {}
        by_dir: Dict[str, List[str]] = OrderedDict()
        for f in missing:
            by_dir.setdefault(osp.dirname(_slash(f)), []).append(f)
        clothes = check.name in DEEPFASHION2_NAMES or any(
            _norm(d).startswith('deepfashion') for d in check.folders)
        close_found = 0
        nested_hits: List[Tuple[str, str]] = []
        for rel_dir, files in by_dir.items():
            gone = self._missing_folder(rel_dir)
            if gone is not None:
                parent, name, similar = gone
                where = f'{parent}/{name}' if parent else name
                found = [f'{parent}/{s}' if parent else s for s in similar]
                check.suggestions[where + '/'] = [f + '/' for f in found]
                df_like = [f for f in found if _norm(osp.basename(f)).startswith('deepfashion')]
                if not df_like and clothes:
                    df_like = [f'{parent}/{s}' if parent else s
                               for s in self.dir_index(parent).subdirs
                               if _norm(s).startswith('deepfashion')]
                if clothes and df_like:
                    inner = [f'{d}/train/image' for d in df_like
                             if osp.isdir(osp.join(self.img_root, d, 'train', 'image'))]
                    traps['deepfashion_folder'] = (
                        f'the annotations expect folder {where}/, which does not exist, but '
                        f'{", ".join(d + "/" for d in df_like)} does: MP-100\'s clothes images '
                        'come from DeepFashion2 (its train/image/NNNNNN.jpg), while the official '
                        f'guide names DeepFashion; make {where}/ point at '
                        + (f'{inner[0]}/' if inner else 'the DeepFashion2 train/image folder')
                        + ' (a symlink is enough)')
                elif found:
                    traps.setdefault('similar_folder', (
                        f'folder {where}/ does not exist, a folder with a similar name does: '
                        f'{", ".join(f + "/" for f in found)}; rename or link it'))
                continue
            index = self.dir_index(rel_dir)
            for f in files:
                cands = index.close_names(osp.basename(_slash(f)))
                if cands:
                    close_found += 1
                    check.suggestions[f] = [osp.join(rel_dir, c) if rel_dir else c
                                            for c in cands]
                else:
                    nested = self._nested(rel_dir, osp.basename(_slash(f)))
                    if nested:
                        check.suggestions[f] = nested
                        nested_hits.append((f, nested[0]))
            h5 = index.h5 or (self.dir_index(check.folders[0]).h5
                              if check.folders and check.folders[0] != rel_dir else [])
            if h5:
                traps['h5_only'] = (
                    f'{len(files)} image(s) missing in {rel_dir or "."}/ which holds '
                    f'{", ".join(h5[:2])}: DeepPoseKit-Data (Vinegar Fly, Desert Locust) ships '
                    'its frames only inside .h5 volumes; extract the frames from the .h5 volume '
                    'as <frame number>.jpg files, numbered as MP-100 expects (see '
                    'docs/data_preparation.md#h5_only)')
            if clothes and ('img' in index.subdirs
                            or any(re.fullmatch(r'img_\d+\.jpg', n) for n in index.files[:50])):
                traps['deepfashion_folder'] = (
                    f'{rel_dir}/ holds DeepFashion (FLD) images (img/, img_00000001.jpg); '
                    'MP-100\'s clothes images come from DeepFashion2 (train/image/NNNNNN.jpg): '
                    'download DeepFashion2 and point the folder at its train/image')
        if close_found:
            example = next(((f, s[0]) for f, s in check.suggestions.items()
                            if s and not f.endswith('/')
                            and osp.dirname(_slash(s[0])) == osp.dirname(_slash(f))), None)
            if check.name in CARFUSION_NAMES or any(d in CARFUSION_NAMES for d in check.folders):
                traps['carfusion_names'] = _carfusion_text(close_found, len(missing), example)
            else:
                traps['close_file_names'] = (
                    f'{close_found} missing file(s) have a file with a closely related name '
                    '(case, zero padding, prefix or extension)'
                    + (f', e.g. {example[0]} -> {example[1]}' if example else '')
                    + ': rename the files to the names in the annotations')
        elif check.name in CARFUSION_NAMES or any(d in CARFUSION_NAMES for d in check.folders):
            traps['carfusion_names'] = _carfusion_text(0, len(missing), None)
        if nested_hits and 'deepfashion_folder' not in traps:
            f, found = nested_hits[0]
            traps['nested_folder'] = (
                f'{len(nested_hits)} missing file(s) exist one or two folders deeper, e.g. {f} '
                f'-> {found}: point the folder at {osp.dirname(found)}/ instead')
        check.traps = list(traps)
        return [Trap(tid, [check.id], f'{check.id} {check.name}: {msg}')
                for tid, msg in traps.items()]

    def _missing_folder(self, rel_dir: str) -> Optional[Tuple[str, str, List[str]]]:
        """(existing parent, first missing component, similar siblings) or None if it exists."""
        if not rel_dir or osp.isdir(osp.join(self.img_root, rel_dir)):
            return None
        parts = rel_dir.split('/')
        parent = ''
        for part in parts:
            here = f'{parent}/{part}' if parent else part
            if not osp.isdir(osp.join(self.img_root, here)):
                similar = [d for d in self.dir_index(parent).close_subdirs(part)
                           if parent or d not in self.known_folders]
                return parent, part, similar
            parent = here
        return None

    def _nested(self, rel_dir: str, name: str) -> List[str]:
        """``name`` found one or two subfolders below ``rel_dir`` (a root linked too high)."""
        index = self.dir_index(rel_dir)
        found = []
        for sub in index.subdirs[:20]:
            first = f'{rel_dir}/{sub}' if rel_dir else sub
            if osp.isfile(osp.join(self.img_root, first, name)):
                found.append(f'{first}/{name}')
            for sub2 in self.dir_index(first).subdirs[:20]:
                if osp.isfile(osp.join(self.img_root, first, sub2, name)):
                    found.append(f'{first}/{sub2}/{name}')
        return found[:NUM_EXAMPLES]


def _carfusion_text(close: int, missing: int, example: Optional[Tuple[str, str]]) -> str:
    text = (f'{missing} CarFusion image(s) missing. MP-100 names its CarFusion images by the '
            'image ids of its own CarFusion-to-COCO conversion; images named after a conversion '
            'of your own carry different ids')
    if close:
        text += (f'; {close} have a closely related name on disk'
                 + (f', e.g. {example[0]} -> {example[1]}' if example else '') + ': rename them')
    return text + ('. Re-map the rest by annotation: find the frame of each MP-100 annotation '
                   'in your conversion by its box and keypoints and store it under the file '
                   "name of the annotation's image (docs/data_preparation.md#carfusion_names)")


def _base_table(cats: Iterable[CategoryCheck]) -> Dict[str, List[int]]:
    table: Dict[str, List[int]] = {}
    for c in cats:
        table.setdefault(c.skeleton_index_base or 'unknown', []).append(c.id)
    return {k: sorted(v) for k, v in sorted(table.items())}


def _global_traps(cats: 'OrderedDict[int, CategoryCheck]') -> List[Trap]:
    traps = []
    by_name: Dict[str, List[CategoryCheck]] = {}
    for c in cats.values():
        by_name.setdefault(c.name, []).append(c)
    for name, same in by_name.items():
        if len(same) > 1:
            desc = ', '.join(f'{c.id} (folder {"/".join(c.folders) or "?"}, {c.num_kpts} '
                             'keypoints)' for c in same)
            traps.append(Trap('duplicate_name', [c.id for c in same],
                              f'{len(same)} categories are named {name!r}: {desc}; key '
                              'anything per category by id, never by name'))
    empty = [c for c in cats.values() if c.num_keypoint_names == 0 and c.num_kpts]
    if empty:
        traps.append(Trap('empty_keypoint_names', [c.id for c in empty],
                          'empty keypoint-name list; the keypoint count is taken from the '
                          'annotations: ' + ', '.join(f'{c.id} {c.name} K={c.num_kpts}'
                                                      for c in empty)))
    base = _base_table(cats.values())
    odd = {k: v for k, v in base.items() if k != '0'}
    if odd:
        parts = [f'{k}: {v}' for k, v in odd.items()]
        traps.append(Trap('skeleton_index_base', sorted(i for v in odd.values() for i in v),
                          'skeleton index base decided per category (auto): '
                          f'0-indexed {len(base.get("0", []))}, ' + '; '.join(parts)
                          + ('; an undecidable skeleton needs skeleton_index_base=0 or 1 in '
                             'the config' if 'undecidable' in odd else '')))
    return traps


def check_mp100(data_root: str,
                ann_file: Optional[str] = None,
                img_dir: Optional[str] = None,
                split_file: Optional[str] = None,
                splits: Optional[Sequence[Union[int, str]]] = None,
                subsets: Sequence[str] = SUBSETS,
                decode: bool = False) -> MP100CheckReport:
    """Check an MP-100 tree (see the module docstring for layouts and definitions).

    Args:
        data_root: the dataset root (``data/mp100``).
        ann_file: one annotation file (relative to ``data_root`` or absolute); default: the
            unified file, else the per-split files.
        img_dir: the image root (relative to ``data_root`` or absolute); default: auto.
        split_file: a split table (``{"splitN": {...}}`` or ``{"train": [...], ...}``); a
            relative path is taken from the working directory when it exists there, else from
            ``data_root``. With per-split files, their ``splitN`` lists replace the official
            ones.
        splits: the splits to check (default: all of the layout).
        subsets: which of train / val / test to check.
        decode: decode every image (slow) instead of a stat.
    Raises:
        FileNotFoundError: no annotation file under ``data_root``.
        ValueError: an unknown split / subset, or a setting the layout cannot use (a per-split
            ``ann_file`` of a subset not in ``subsets``, a flat split file with per-split files).
    """
    bad = [s for s in subsets if s not in SUBSETS]
    if bad or not subsets:
        raise ValueError(f'subsets must be among {SUBSETS}, got {list(subsets)}')
    layout, units = _units(data_root, ann_file, split_file, splits, subsets)
    img_root = _image_root(data_root, img_dir)
    checker = _Checker(img_root, decode)
    notes = []
    if not osp.isdir(img_root):
        notes.append(f'image root {img_root} does not exist')
    elif (img_dir is None and ann_file is None and split_file is None
          and osp.basename(img_root.rstrip('/\\')) != IMAGE_ROOT_CANDIDATES[0]):
        notes.append(f'images are read from {img_root}; the shipped configs expect '
                     f'{osp.join(data_root, IMAGE_ROOT_CANDIDATES[0])} (set data_prefix=dict('
                     'img=...) in the config, or move / link the folders)')
    categories: 'OrderedDict[int, CategoryCheck]' = OrderedDict()
    subset_checks: List[SubsetCheck] = []
    file_cache: Dict[str, Tuple[dict, Optional[str]]] = {}
    for unit in units:
        sc = SubsetCheck(unit.split, unit.subset, unit.ann_file)
        subset_checks.append(sc)
        if unit.ann_file not in file_cache:
            try:
                # a unified file is parsed once for all its units, with every needed id
                ids = None
                same = [u.class_ids for u in units if u.ann_file == unit.ann_file]
                if all(i is not None for i in same):
                    ids = list(OrderedDict.fromkeys(i for lst in same for i in lst))
                per_cat, absent = checker.check_file(unit.ann_file, ids)
                file_cache[unit.ann_file] = ({'cats': per_cat, 'absent': absent}, None)
            except (FileNotFoundError, AnnotationError) as e:
                file_cache[unit.ann_file] = ({}, str(e))
        parsed, error = file_cache[unit.ann_file]
        if error is not None:
            sc.error = error
            sc.category_ids = list(unit.class_ids or [])
            continue
        per_cat, absent = parsed['cats'], parsed['absent']
        sc.category_ids = list(unit.class_ids) if unit.class_ids is not None else list(per_cat)
        for cid in sc.category_ids:
            if cid in absent:
                sc.blocked[cid] = 'not in the annotation file'
                continue
            check = per_cat[cid]
            if check.blocker():
                sc.blocked[cid] = check.blocker()
        if unit.expected_ids is not None:  # a per-split file: exactly its split's list
            try:
                check_split_categories(per_cat, unit.expected_ids, unit.ann_file, unit.list_name)
            except SplitMismatchError as e:
                sc.error = str(e)
    # one entry per category, merged over the files it sits in (per-split layout)
    for parsed, _ in file_cache.values():
        for cid, check in parsed.get('cats', {}).items():
            if cid not in categories:
                categories[cid] = CategoryCheck(id=cid, name=check.name)
            categories[cid].merge(check)
    categories = OrderedDict(sorted(categories.items()))
    traps = _global_traps(categories)
    for check in categories.values():
        checker.known_folders.update(check.folders)
    by_id: Dict[str, Trap] = {}
    for check in categories.values():
        for trap in checker.diagnose(check):
            if trap.id in by_id:  # one entry per trap kind, listing every category
                by_id[trap.id].categories.append(trap.categories[0])
                by_id[trap.id].message += '\n' + trap.message
            else:
                by_id[trap.id] = trap
    traps += list(by_id.values())
    return MP100CheckReport(data_root=data_root, img_root=img_root, layout=layout,
                            decode=decode, categories=categories, subsets=subset_checks,
                            traps=traps, notes=notes)


# ------------------------------------------------------------------------------ text report
def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: Sequence[int]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells):
        return '  '.join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return '\n'.join([line(headers), line(['-' * w for w in widths])] + [line(r) for r in rows])


def _format_report(rep: MP100CheckReport, all_categories: bool) -> str:
    out = [f'MP-100 check of {rep.data_root}',
           f'  annotations: {rep.layout}',
           f'  images: {rep.img_root} ('
           + ('decoded' if rep.decode else 'stat only; --decode to decode every image') + ')']
    out += [f'  note: {n}' for n in rep.notes]
    cats = [c for c in rep.categories.values() if all_categories or not c.complete or c.traps]
    rows = []
    for c in cats:
        rows.append([str(c.id), c.name, ','.join(c.folders)[:28], str(c.num_kpts or '?'),
                     str(len(c.ann_ids)), str(len(c.instance_ids)), str(len(c.image_files)),
                     str(c.present), str(c.missing), str(c.unreadable),
                     c.skeleton_index_base or '?', 'ok' if c.complete else 'BLOCKS',
                     ','.join(c.traps)])
    n_ok = sum(c.complete for c in rep.categories.values())
    out += ['', f'Categories: {n_ok} of {len(rep.categories)} complete'
            + ('' if all_categories else ' (only the others are listed)')]
    if rows:
        out.append(_table(['id', 'name', 'folder', 'K', 'anns', 'inst', 'images', 'present',
                           'missing', 'unreadable', 'skel', 'status', 'traps'], rows,
                          left=(1, 2, 11, 12)))
    details = []
    for c in rep.categories.values():
        if c.complete:
            continue
        gone = [f for f in c.suggestions if f.endswith('/')]
        details.append(f'  {c.id} {c.name}: {c.blocker()}'
                       + (f' (folder {", ".join(gone)} does not exist)' if gone else ''))
        details += [f'    error: {e}' for e in c.errors]
        problems = sorted(((f, p) for f, p in c.image_files.items() if p is not None
                           and not any(f.startswith(g) for g in gone)),
                          key=lambda fp: fp[0] not in c.suggestions)  # hinted ones first
        for f, p in problems[:NUM_EXAMPLES]:
            hint = c.suggestions.get(f)
            details.append(f'    {p}: {f}' + (f'  (found: {", ".join(hint)})' if hint else ''))
        if len(problems) > NUM_EXAMPLES:
            details.append(f'    ... and {len(problems) - NUM_EXAMPLES} more')
    if details:
        out += ['', 'Problems'] + details
    if rep.traps:
        out += ['', 'Known traps (what to do: docs/data_preparation.md)']
        for t in rep.traps:
            lines = t.message.split('\n')
            out.append(f'  [{t.id}] {lines[0]}')
            out += [f'      {m}' for m in lines[1:]]
    out += ['', 'Verdict']
    for name in rep.splits:
        subs = [s for s in rep.subsets if s.split == name]
        label = f'split {name}' if name != DEFAULT_SPLIT else 'split (split file)'
        ok = all(s.complete for s in subs)
        out.append(f'  {label}: {"complete" if ok else "INCOMPLETE"}')
        for s in subs:
            n = len(s.category_ids)
            if s.error:
                out.append(f'    {s.subset}: blocked: {s.error}')
            elif s.complete:
                out.append(f'    {s.subset}: complete ({n} categories)')
            else:
                out.append(f'    {s.subset}: {n - len(s.blocked)} of {n} categories complete, '
                           f'blocked by {len(s.blocked)}:')
                for cid, why in s.blocked.items():
                    name = rep.categories[cid].name if cid in rep.categories else '?'
                    out.append(f'      {cid} {name}: {why}')
    return '\n'.join(out)
