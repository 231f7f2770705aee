"""Build and edit MP-100 annotation files (the logic behind ``tools/dataset_converters``).

* :func:`build_unified_file`: one *unified* file (MetaPoint / FMMP layout: every category once,
  images and annotations deduplicated by id) from the official per-split files
  ``mp100_split{1..5}_{train,val,test}.json``, checked against the official split lists.
* :func:`add_skeletons`: copy skeleton links into a file from another release that has them, by
  category id, refusing on a keypoint-count (or name) mismatch. The written file is 0-indexed,
  as FMMP needs (its padding and neighbour tables read the links as keypoint slots).

See ``docs/annotation_files.md``. Errors name the file and the category / annotation / image id.
"""
from __future__ import annotations

import copy
import glob
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .annotation_parsing import (AnnotationError, SkeletonBase, annotation_keypoint_lengths,
                                 category_num_kpts, file_skeleton_base, load_json,
                                 resolve_file_skeleton)
from .mp100_splits import MP100_SPLITS, SUBSETS, per_split_file_name


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True)


def _index_by_id(entries: list, kind: str, path: str) -> Dict[int, dict]:
    out: Dict[int, dict] = {}
    for e in entries:
        if not isinstance(e, dict) or 'id' not in e:
            raise AnnotationError(f'{path}: {kind} entry without an id: {str(e)[:80]}')
        if e['id'] in out:
            raise AnnotationError(f'{path}: duplicate {kind} id {e["id"]}')
        out[e['id']] = e
    return out


def write_json(data: dict, path: str, overwrite: bool = False) -> None:
    """Write ``data`` compactly; refuses an existing ``path`` unless ``overwrite``."""
    if osp.exists(path) and not overwrite:
        raise FileExistsError(f'{path} exists; pass overwrite=True (--overwrite) to replace it')
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
        json.dump(data, f, separators=(',', ':'))
    os.replace(tmp, path)


# ------------------------------------------------------------------------- (a) unified file
class SplitMismatchError(AnnotationError):
    """A per-split file or the unified result disagrees with the official split lists."""


@dataclass
class BuildReport:
    """What :func:`build_unified_file` read and wrote."""
    present: List[str] = field(default_factory=list)  # file names read, in read order
    missing: List[str] = field(default_factory=list)  # file names not found
    num_categories: int = 0
    num_images: int = 0
    num_annotations: int = 0
    shared_annotations: int = 0  # annotation ids found in more than one file (all identical)
    shared_images: int = 0

    def summary(self) -> str:
        lines = [f'read {len(self.present)} file(s): {", ".join(self.present)}']
        if self.missing:
            lines.append(f'not found ({len(self.missing)}, allowed): {", ".join(self.missing)}')
        lines.append(
            f'split check: every file read holds exactly the categories of its official '
            f'split/subset list, and the result holds every category of all '
            f'{len(MP100_SPLITS)} splits x {len(SUBSETS)} subsets')
        lines.append(
            f'unified: {self.num_categories} categories, {self.num_images} images, '
            f'{self.num_annotations} annotations ({self.shared_annotations} annotation and '
            f'{self.shared_images} image ids were in more than one file, identical there)')
        return '\n'.join(lines)


def check_split_categories(found: Iterable[int], listed: Sequence[int], path: str,
                           list_name: str) -> None:
    """The category ids ``found`` in ``path`` must equal ``listed``.

    ``list_name`` names the list in the error, e.g. ``"the official split 1 'test' list"``.
    """
    found, listed = set(found), set(listed)
    if found != listed:
        raise SplitMismatchError(
            f'{path}: categories differ from {list_name}: missing {sorted(listed - found)}, '
            f'not in the list {sorted(found - listed)}')


def check_split_file(data: dict, path: str, split: int, subset: str,
                     splits: Dict[int, Dict[str, List[int]]] = MP100_SPLITS) -> None:
    """The categories of ``mp100_split{split}_{subset}.json`` must equal the official list."""
    check_split_categories((c.get('id') for c in data['categories'] if isinstance(c, dict)),
                           splits[split][subset], path,
                           f'the official split {split} {subset!r} list')


def check_unified_splits(data: dict, path: str,
                         splits: Dict[int, Dict[str, List[int]]] = MP100_SPLITS) -> None:
    """Every category of every official split/subset list must be a category of ``data``."""
    have = {c.get('id') for c in data['categories'] if isinstance(c, dict)}
    lacking = []
    for n in sorted(splits):
        for s in SUBSETS:
            absent = sorted(set(splits[n].get(s, [])) - have)
            if absent:
                lacking.append(f'split {n} {s}: {absent}')
    if lacking:
        raise SplitMismatchError(
            f'{path}: the unified file lacks categories of the official split lists '
            f'({"; ".join(lacking)}); add the per-split files that hold them')
    listed = {i for n in splits for s in SUBSETS for i in splits[n].get(s, [])}
    extra = sorted(have - listed)
    if extra:
        raise SplitMismatchError(f'{path}: categories {extra} are in no official split list')


def _merge(kind: str, entry: dict, into: Dict[int, Tuple[dict, str]], name: str) -> bool:
    """Add ``entry`` by id; an id already seen must carry identical content. True if new."""
    old = into.get(entry['id'])
    if old is None:
        into[entry['id']] = (entry, name)
        return True
    if _canonical(old[0]) != _canonical(entry):
        diff = sorted(k for k in set(old[0]) | set(entry) if old[0].get(k) != entry.get(k))
        raise AnnotationError(
            f'{kind} id {entry["id"]} differs between {old[1]} and {name} (fields {diff}); '
            'the per-split files must come from one release')
    return False


def build_unified_file(ann_dir: str, allow_missing: bool = False,
                       splits: Dict[int, Dict[str, List[int]]] = MP100_SPLITS
                       ) -> Tuple[dict, BuildReport]:
    """Merge ``ann_dir/mp100_split{N}_{subset}.json`` into one unified COCO dict.

    Files are read in the order split 1..5, then train, val, test. Categories come out sorted by
    id; images and annotations in order of first appearance (the loader draws episodes over
    that order). An id found in several files must be identical in all of them.

    Checks: each file read holds exactly its official category list; the result holds every
    category of every official list (so ``split=N, subset=S`` selects the official categories),
    and no other. Missing files are an error unless ``allow_missing`` (reported either way):
    the five val and five test files already hold all 100 categories.

    Returns:
        (data, report): the unified COCO dict and a :class:`BuildReport`.
    """
    report = BuildReport()
    found = []  # (split, subset, path) of the files that are there
    for n in sorted(splits):
        for s in SUBSETS:
            path = osp.join(ann_dir, per_split_file_name(n, s))
            if osp.isfile(path):
                found.append((n, s, path))
            else:
                report.missing.append(per_split_file_name(n, s))
    if not found:
        raise FileNotFoundError(f'{ann_dir}: none of the per-split files '
                                f'{per_split_file_name(1, "train")} ... '
                                f'{per_split_file_name(max(splits), "test")} is there')
    if report.missing and not allow_missing:
        raise FileNotFoundError(
            f'{ann_dir}: {len(report.missing)} per-split file(s) not found: '
            f'{", ".join(report.missing)}. Pass allow_missing=True (--allow-missing) to build '
            'from the files that are there (the split check still requires every category)')

    cats: Dict[int, Tuple[dict, str]] = {}
    images: Dict[int, Tuple[dict, str]] = {}
    anns: Dict[int, Tuple[dict, str]] = {}
    info, licenses = None, None
    for n, s, path in found:
        data = load_json(path)
        name = osp.basename(path)
        report.present.append(name)
        check_split_file(data, path, n, s, splits)
        file_cats = _index_by_id(data['categories'], 'category', path)
        file_imgs = _index_by_id(data['images'], 'image', path)
        _index_by_id(data['annotations'], 'annotation', path)  # ids present and unique
        for cat in file_cats.values():
            _merge('category', cat, cats, name)
        for img in file_imgs.values():
            report.shared_images += not _merge('image', img, images, name)
        for ann in data['annotations']:
            if ann.get('image_id') not in file_imgs:
                raise AnnotationError(f'{path}: annotation {ann["id"]} refers to unknown image '
                                      f'id {ann.get("image_id")}')
            if ann.get('category_id') not in file_cats:
                raise AnnotationError(f'{path}: annotation {ann["id"]} refers to unknown '
                                      f'category id {ann.get("category_id")}')
            report.shared_annotations += not _merge('annotation', ann, anns, name)
        info = info if info is not None else data.get('info')
        licenses = licenses if licenses is not None else data.get('licenses')

    out = dict(
        info=dict(info or {}, description='MP-100 unified annotation file (every category '
                  'once) built from the official per-split files',
                  built_from=list(report.present)),
        images=[e for e, _ in images.values()],
        annotations=[e for e, _ in anns.values()],
        categories=[cats[i][0] for i in sorted(cats)])
    if licenses is not None:
        out['licenses'] = licenses
    check_unified_splits(out, 'unified result', splits)
    report.num_categories = len(out['categories'])
    report.num_images = len(out['images'])
    report.num_annotations = len(out['annotations'])
    return out, report


# ------------------------------------------------------------------------- (b) skeleton links
#: per-category actions of :func:`add_skeletons`
ADDED, REPLACED, CONVERTED, UNCHANGED, EMPTY = ('added', 'replaced', 'converted', 'unchanged',
                                               'empty')


@dataclass
class CategoryChange:
    """What :func:`add_skeletons` did to one category (links are 0-indexed [a, b] pairs)."""
    id: int
    name: str
    num_kpts: int
    action: str  # added | replaced | converted (same links, now 0-indexed) | unchanged | empty
    in_source: bool
    base_before: Optional[int]  # 0, 1 or None (empty)
    links_before: List[List[int]]
    links_after: List[List[int]]


@dataclass
class SkeletonReport:
    """Per-category result of :func:`add_skeletons`, in the target file's category order."""
    mode: str
    sources: List[str]
    changes: List[CategoryChange] = field(default_factory=list)

    @property
    def needs_base0(self) -> List[int]:
        """Categories whose written links never use keypoint 0 (undecidable for 'auto')."""
        return [c.id for c in self.changes
                if c.links_after and min(i for p in c.links_after for i in p) != 0]

    def ids(self, action: str) -> List[int]:
        return [c.id for c in self.changes if c.action == action]

    @property
    def not_in_source(self) -> List[int]:
        return [c.id for c in self.changes if not c.in_source]

    def table(self) -> str:
        """One line per category: id, name, K_c, links before (index base), links after, action."""
        rows = ['  id  name                         K  links before  after  action']
        for c in self.changes:
            before = f'{len(c.links_before)} ({c.base_before}-idx)' if c.links_before else '0'
            rows.append(f'{c.id:4d}  {c.name[:26]:26s} {c.num_kpts:3d}  {before:12s} '
                        f'{len(c.links_after):6d}  {c.action}'
                        + ('' if c.in_source else ' (not in the sources)'))
        return '\n'.join(rows)

    def summary(self) -> str:
        parts = [f'{a} {len(self.ids(a))}' for a in (ADDED, REPLACED, CONVERTED, UNCHANGED, EMPTY)]
        lines = [f'mode {self.mode}: ' + ', '.join(parts) + ' (of '
                 f'{len(self.changes)} categories); written 0-indexed']
        for a in (ADDED, REPLACED, CONVERTED, EMPTY):
            if self.ids(a):
                lines.append(f'{a}: {self.ids(a)}')
        if self.not_in_source:
            lines.append(f'not in the source files (links kept): {self.not_in_source}')
        if self.needs_base0:
            lines.append(f'links of categories {self.needs_base0} never use keypoint 0: '
                         "skeleton_index_base='auto' reads them as 0-indexed only through the "
                         "file's info.skeleton_index_base=0 (written here; keep it when editing "
                         'the file, or load it with skeleton_index_base=0)')
        return '\n'.join(lines)

    def to_dict(self) -> dict:
        return dict(mode=self.mode, sources=self.sources,
                    categories=[vars(c) for c in self.changes])


@dataclass
class SourceCategory:
    """One category of the source release: name, K_c, 0-indexed links, the file it came from."""
    name: str
    num_kpts: int
    links: List[List[int]]
    path: str


@dataclass
class SourceSkeletons:
    """The source files read and their categories (id -> :class:`SourceCategory`)."""
    files: List[str]
    categories: Dict[int, SourceCategory]


def read_source_skeletons(paths: Sequence[str], base: SkeletonBase = 'auto') -> SourceSkeletons:
    """Category id -> (name, K_c, 0-indexed links) over the source files.

    ``base``: as the loader's ``skeleton_index_base`` ('auto' honours a file's
    ``info.skeleton_index_base``, else decides per category).
    A category found in several files must have the same name, K_c and links in each (error
    naming both files). Directories are expanded to their ``*.json`` files.
    """
    files = []
    for p in paths:
        files.extend(sorted(glob.glob(osp.join(p, '*.json'))) if osp.isdir(p) else [p])
    if not files:
        raise FileNotFoundError(f'no source annotation file in {list(paths)}')
    out: Dict[int, SourceCategory] = {}
    for path in files:
        data = load_json(path)
        cats = _index_by_id(data['categories'], 'category', path)
        ann_len = annotation_keypoint_lengths(data, list(cats))
        declared = file_skeleton_base(data, path, base)
        for cid, cat in cats.items():
            k = category_num_kpts(cat, ann_len, path)
            links, _ = resolve_file_skeleton(cat.get('skeleton'), k, base, declared, cid, path)
            new = SourceCategory(str(cat.get('name', cid)), k, links, path)
            old = out.get(cid)
            if old is None:
                out[cid] = new
            elif (old.name, old.num_kpts, old.links) != (new.name, new.num_kpts, new.links):
                raise AnnotationError(
                    f'category {cid}: the source files disagree ({old.path}: {old.name!r}, '
                    f'K={old.num_kpts}, {len(old.links)} links; {path}: {new.name!r}, '
                    f'K={new.num_kpts}, {len(new.links)} links)')
    return SourceSkeletons(files=files, categories=out)


def add_skeletons(target: dict, target_path: str, sources: SourceSkeletons,
                  mode: str = 'only-empty', target_base: SkeletonBase = 'auto',
                  check_names: bool = True) -> Tuple[dict, SkeletonReport]:
    """Copy the sources' skeleton links into ``target`` (a COCO dict), by category id.

    Args:
        target: the file to edit (not modified; a copy is returned).
        target_path: its path, for error messages.
        sources: from :func:`read_source_skeletons` (0-indexed links).
        mode: ``'only-empty'`` adds links only to categories whose target skeleton is empty
            (what the official FMMP linked file does) and keeps every other skeleton;
            ``'replace'`` writes the source's links for every category the sources hold.
        target_base: index base of the target's skeletons (0, 1 or 'auto': as the loader, the
            target's ``info.skeleton_index_base`` when it has one, else decided per category).
        check_names: refuse when a category's name differs between target and source.

    Every category in both must have the same keypoint count K_c (else an error naming it). The
    returned file is 0-indexed throughout (``info.skeleton_index_base = 0``); categories the
    sources lack keep their links (converted to 0-indexed).

    Returns:
        (data, report) with one :class:`CategoryChange` per target category.
    """
    if mode not in ('only-empty', 'replace'):
        raise ValueError(f"mode must be 'only-empty' or 'replace', got {mode!r}")
    out = copy.deepcopy(target)
    cats = _index_by_id(out['categories'], 'category', target_path)
    ann_len = annotation_keypoint_lengths(out, list(cats))
    declared = file_skeleton_base(out, target_path, target_base)
    report = SkeletonReport(mode=mode, sources=list(sources.files))
    by_id = sources.categories
    mismatched = []
    for cid, cat in cats.items():  # refuse before changing anything
        src = by_id.get(cid)
        if src is None:
            continue
        k = category_num_kpts(cat, ann_len, target_path)
        name = str(cat.get('name', cid))
        if k != src.num_kpts:
            mismatched.append(f'category {cid} ({name!r}): K={k} in the target, '
                              f'K={src.num_kpts} in {src.path}')
        elif check_names and name != src.name:
            mismatched.append(f'category {cid}: named {name!r} in the target, {src.name!r} in '
                              f'{src.path}')
    if mismatched:
        raise AnnotationError(
            f'{target_path}: refusing to copy skeletons, the source describes other keypoints: '
            + '; '.join(mismatched[:10]) + (f' (and {len(mismatched) - 10} more)'
                                             if len(mismatched) > 10 else ''))

    for cid, cat in cats.items():
        k = category_num_kpts(cat, ann_len, target_path)
        before, base = resolve_file_skeleton(cat.get('skeleton'), k, target_base, declared, cid,
                                             target_path)
        src = by_id.get(cid)
        if src is not None and src.links and (mode == 'replace' or not before):
            after = [list(p) for p in src.links]
        else:
            after = before
        if not after:
            action = EMPTY
        elif not before:
            action = ADDED
        elif after != before:
            action = REPLACED
        else:
            action = CONVERTED if base == 1 else UNCHANGED
        cat['skeleton'] = after
        report.changes.append(CategoryChange(
            id=cid, name=str(cat.get('name', cid)), num_kpts=k, action=action,
            in_source=src is not None, base_before=base, links_before=before,
            links_after=after))
    out['info'] = dict(out.get('info') or {}, skeleton_index_base=0,
                       skeleton_links=dict(mode=mode, sources=[osp.basename(p)
                                                               for p in report.sources]))
    return out, report


def add_skeletons_to_file(target_path: str, out_path: str, source_paths: Sequence[str],
                          mode: str = 'only-empty', source_base: SkeletonBase = 'auto',
                          target_base: SkeletonBase = 'auto', check_names: bool = True,
                          overwrite: bool = False) -> SkeletonReport:
    """File-level :func:`add_skeletons`: read target and sources, write ``out_path``."""
    if osp.abspath(out_path) == osp.abspath(target_path):
        raise ValueError(f'{out_path}: write the result to a new file, not over the target')
    if osp.exists(out_path) and not overwrite:
        raise FileExistsError(f'{out_path} exists; pass overwrite=True (--overwrite) to '
                              'replace it')
    sources = read_source_skeletons(source_paths, source_base)
    data, report = add_skeletons(load_json(target_path), target_path, sources, mode,
                                 target_base, check_names)
    write_json(data, out_path, overwrite=overwrite)
    return report


def build_unified_to_file(ann_dir: str, out_path: str, allow_missing: bool = False,
                          overwrite: bool = False) -> BuildReport:
    """File-level :func:`build_unified_file`: write the unified file to ``out_path``."""
    if osp.exists(out_path) and not overwrite:
        raise FileExistsError(f'{out_path} exists; pass overwrite=True (--overwrite) to '
                              'replace it')
    data, report = build_unified_file(ann_dir, allow_missing)
    write_json(data, out_path, overwrite=overwrite)
    return report

