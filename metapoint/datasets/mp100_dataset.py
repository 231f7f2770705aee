"""MP-100 episodic dataset (COCO keypoint format, loaded with xtcocotools)."""
from __future__ import annotations

import contextlib
import copy
import io
import os.path as osp
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.dataset import Compose
from mmengine.logging import print_log
from torch.utils.data import Dataset
from xtcocotools.coco import COCO

from metapoint.registry import DATASETS, TRANSFORMS
from .annotation_parsing import (AnnotationError, ParseReport, load_json, parse_categories,
                                 parse_instances)
from .episodes import Episode, EpisodeError, draw_train_episodes, make_eval_episodes
from .image_files import image_problem
from .mp100_splits import locate_split_file, resolve_class_ids


class ImageLoadError(RuntimeError):
    """An image that is missing or cannot be decoded; the message names file and annotation."""


def build_pipeline(cfgs: Optional[Sequence]) -> Compose:
    """Compose transforms built from this package's registry (which falls back to mmpose's)."""
    return Compose([TRANSFORMS.build(c) if isinstance(c, dict) else c for c in (cfgs or [])])


@DATASETS.register_module()
class MP100Dataset(Dataset):
    """Category-agnostic pose estimation episodes over an MP-100-style COCO file.

    Loads either a unified annotation file restricted to ``valid_class_ids`` (or a ``split`` /
    ``subset`` of the official lists or of a ``split_file``), or an official per-split file with
    all its categories. Each item is an *episode*: ``num_shots`` supports and one (train) or
    ``num_queries`` (test) queries of one category, each instance run through ``pipeline``, then
    the whole episode through ``episode_pipeline`` (e.g. keypoint padding).

    * ``test_mode=False``: training. Episodes are drawn per epoch by
      :class:`~metapoint.datasets.EpisodeSampler`, which passes :class:`Episode` tuples as
      indices. ``len()`` and integer indexing use the epoch-0 draw.
    * ``test_mode=True``: ``num_episodes`` fixed episodes per category, integer-indexed.

    Args:
        ann_file: COCO json path (joined to ``data_root`` when relative).
        data_root: dataset root.
        data_prefix: ``dict(img=...)``, the image folder (relative to ``data_root``).
        valid_class_ids / split / subset / split_file: which categories (see
            :func:`resolve_class_ids`); None loads every category of the file in file order.
        max_kpt_num: padded slot count K (70 for MetaPoint / FMMP, 100 for CapeFormer).
        skeleton_index_base: 0, 1 or 'auto': the file's ``info.skeleton_index_base`` (0 or 1)
            when it has one, else decided per category; logged either way.
        skip_oversized_categories: skip (logged) instead of raising for a category with more than
            ``max_kpt_num`` keypoints.
        num_shots / num_queries / num_episodes / episode_seed: episode shape and count; the
            evaluation list comes from a local ``random.Random(episode_seed)``.
        insufficient_instances: 'error' or 'reduce' (see :func:`make_eval_episodes`).
        check_images: check at load time that every image file exists and is not empty (0 bytes;
            the rule of :func:`~metapoint.datasets.image_files.image_problem`, stat only). Such
            files are an error in test mode and a logged, counted skip in training.
        skip_incomplete_categories: evaluate / train on the complete categories only: a category
            with any missing or empty (0-byte) image file among its usable instances is dropped
            as a whole (logged with ids and counts; ``metainfo['category_coverage']`` then tells
            the metric how many categories were requested and which were skipped). Stat checks
            only, no decoding. Needs ``check_images``.
        max_refetch: training only: how many times a failing image is replaced by another
            instance of the same category before giving up.
    """

    def __init__(self,
                 ann_file: str,
                 data_root: str = '',
                 data_prefix: Optional[dict] = None,
                 pipeline: Optional[Sequence] = None,
                 episode_pipeline: Optional[Sequence] = None,
                 valid_class_ids: Optional[Sequence[int]] = None,
                 split: Optional[int] = None,
                 subset: Optional[str] = None,
                 split_file: Optional[str] = None,
                 max_kpt_num: int = 70,
                 skeleton_index_base: Union[str, int] = 'auto',
                 skip_oversized_categories: bool = False,
                 num_shots: int = 1,
                 num_queries: int = 15,
                 num_episodes: int = 200,
                 episode_seed: int = 1,
                 insufficient_instances: str = 'error',
                 test_mode: bool = False,
                 check_images: bool = True,
                 skip_incomplete_categories: bool = False,
                 max_refetch: int = 10) -> None:
        super().__init__()
        self.data_root = data_root
        self.ann_file = osp.join(data_root, ann_file) if data_root and not osp.isabs(ann_file) \
            else ann_file
        img_dir = (data_prefix or {}).get('img', '')
        self.img_prefix = osp.join(data_root, img_dir) if data_root else img_dir
        split_file = locate_split_file(split_file, data_root)
        self.max_kpt_num = int(max_kpt_num)
        self.num_shots = int(num_shots)
        self.num_queries = int(num_queries)
        self.num_episodes = int(num_episodes)
        self.episode_seed = int(episode_seed)
        self.test_mode = test_mode
        self.max_refetch = int(max_refetch)
        self.pipeline = build_pipeline(pipeline)
        self.episode_pipeline = build_pipeline(episode_pipeline)
        self.num_load_failures = 0

        if skip_incomplete_categories and not check_images:
            raise ValueError('skip_incomplete_categories needs check_images=True')
        class_ids = resolve_class_ids(valid_class_ids, split, subset, split_file)
        data = load_json(self.ann_file)
        #: categories asked for (split / ids / the whole file), before any category is skipped
        self.num_requested_categories = len(class_ids) if class_ids is not None \
            else len(data['categories'])
        #: category id -> number of its image files missing or empty (skip_incomplete_categories)
        self.incomplete_categories: Dict[int, int] = {}
        self.report = ParseReport()
        self.categories = parse_categories(data, self.ann_file, class_ids, self.max_kpt_num,
                                           skeleton_index_base, skip_oversized_categories,
                                           self.report)
        self.instances = parse_instances(data, self.ann_file, self.categories, self.max_kpt_num,
                                         self.img_prefix, self.report)
        # validated above; the xtcocotools index is kept for tools (visualisation, COCO queries)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # xtcocotools prints progress
            self.coco.createIndex()
        if check_images:
            if skip_incomplete_categories:
                self._skip_incomplete_categories()
            self._check_image_files()
        self.cat_to_indices: Dict[int, List[int]] = {c: [] for c in self.categories}
        for i, inst in enumerate(self.instances):
            self.cat_to_indices[inst['category_id']].append(i)
        empty = [c for c, v in self.cat_to_indices.items() if not v]
        if empty:
            print_log(f'{self.ann_file}: categories without any usable instance (dropped): '
                      f'{empty}', logger='current', level=30)
            self.report.skipped_categories.setdefault('no usable instance', []).extend(empty)
            for c in empty:
                del self.cat_to_indices[c]
        if not self.cat_to_indices:
            raise AnnotationError(f'{self.ann_file}: no usable instance in the selected '
                                  f'categories {list(self.categories)[:10]}')
        print_log(f'{self.ann_file}: {len(self.cat_to_indices)} categories, '
                  f'{len(self.instances)} instances; {self.report.summary()}', logger='current')
        try:
            if test_mode:
                self.episodes = make_eval_episodes(self.cat_to_indices, self.num_shots,
                                                   self.num_queries, self.num_episodes,
                                                   self.episode_seed, insufficient_instances)
            else:
                self.episodes = draw_train_episodes(self.cat_to_indices, self.num_shots,
                                                    self.episode_seed, epoch=0)
        except EpisodeError as e:  # name the file too, like every other bad-input error
            raise EpisodeError(f'{self.ann_file}: {e}') from e

    # ------------------------------------------------------------------ loading helpers
    def _skip_incomplete_categories(self) -> None:
        """Drop every category with a missing or empty image file (stat only), logged."""
        bad: Dict[int, Dict[str, str]] = {}  # category -> {image path: problem}
        images: Dict[int, set] = {}
        status: Dict[str, Optional[str]] = {}
        for inst in self.instances:
            path, cid = inst['img_path'], inst['category_id']
            if path not in status:
                status[path] = image_problem(path)
            images.setdefault(cid, set()).add(path)
            if status[path] is not None:
                bad.setdefault(cid, {})[path] = status[path]
        if not bad:
            return
        bad = {c: bad[c] for c in self.categories if c in bad}  # category order
        self.incomplete_categories = {c: len(v) for c, v in bad.items()}
        self.report.skipped_categories.setdefault('image files missing or empty', []).extend(bad)
        self.instances = [inst for inst in self.instances if inst['category_id'] not in bad]
        for c in bad:
            del self.categories[c]
        detail = '; '.join(f'{c}: {len(v)} of {len(images[c])} image(s), first '
                           f'{next(iter(v))} ({next(iter(v.values()))})' for c, v in bad.items())
        print_log(f'{self.ann_file}: skip_incomplete_categories: skipped {len(bad)} of '
                  f'{self.num_requested_categories} categories with missing or empty image '
                  f'files: {list(bad)} ({detail})', logger='current', level=30)

    def _check_image_files(self) -> None:
        """Missing or empty image files (:func:`image_problem`, stat only): an error in test
        mode, skipped (counted per problem, logged) in training."""
        status: Dict[str, Optional[str]] = {}
        bad = []  # (instance, problem)
        for inst in self.instances:
            path = inst['img_path']
            if path not in status:
                status[path] = image_problem(path)
            if status[path] is not None:
                bad.append((inst, status[path]))
        if not bad:
            return
        first, problem = bad[0]
        if self.test_mode:
            raise ImageLoadError(
                f'{self.ann_file}: {len(bad)} image file(s) missing or empty, first '
                f'{first["img_path"]} ({problem}; annotation {first["ann_id"]})')
        for inst, problem in bad:
            self.report.skip(f'image file {problem}', inst['ann_id'])
        gone = {id(inst) for inst, _ in bad}
        self.instances = [inst for inst in self.instances if id(inst) not in gone]
        print_log(f'{self.ann_file}: skipped {len(bad)} instance(s) whose image is missing or '
                  f'empty (first {first["img_path"]}, {problem}, annotation {first["ann_id"]})',
                  logger='current', level=30)

    @property
    def metainfo(self) -> dict:
        """Passed by mmengine's loops to the evaluator as ``dataset_meta``.

        ``category_coverage``: ``requested`` (number of categories asked for), ``used`` (ids with
        episodes) and ``skipped`` (reason -> ids), so the metric can say how many categories it
        evaluated out of how many.
        """
        return dict(categories={c: vars(r) for c, r in self.categories.items()},
                    max_kpt_num=self.max_kpt_num,
                    category_coverage=dict(
                        requested=self.num_requested_categories,
                        used=list(self.cat_to_indices),
                        skipped={k: list(v) for k, v in self.report.skipped_categories.items()}))

    def __len__(self) -> int:
        return len(self.episodes)

    def load_instance(self, index: int, rng: Optional[np.random.Generator] = None) -> dict:
        """Run one instance through the per-instance pipeline (errors name file and annotation)."""
        results = copy.deepcopy(self.instances[index])
        if rng is not None:
            results['rng'] = rng
        try:
            return self.pipeline(results)
        except Exception as e:  # re-raise with the context a user needs to find the bad input
            raise ImageLoadError(
                f'{self.ann_file}: failed to load annotation {self.instances[index]["ann_id"]} '
                f'(image {self.instances[index]["img_path"]}): {type(e).__name__}: {e}') from e

    def __getitem__(self, item: Union[int, Episode]) -> dict:
        episode = self.episodes[item] if isinstance(item, (int, np.integer)) else item
        if self.test_mode:
            return self._load_episode(episode)
        return self._load_train_episode(episode)

    def _load_episode(self, episode: Episode) -> dict:
        rng = np.random.default_rng(episode.seed) if not self.test_mode else None
        supports = [self.load_instance(i, rng) for i in episode.support_indices]
        queries = [self.load_instance(i, rng) for i in episode.query_indices]
        cat = self.categories[episode.category_id]
        packed = dict(supports=supports, queries=queries, category_id=cat.id,
                      num_kpts=cat.num_kpts, skeleton=[list(p) for p in cat.skeleton])
        if rng is not None:
            packed['rng'] = rng
        packed = self.episode_pipeline(packed)
        packed.pop('rng', None)
        return packed

    def _load_train_episode(self, episode: Episode) -> dict:
        """Training: a failing image is logged, counted and replaced by another instance."""
        for attempt in range(self.max_refetch + 1):
            try:
                return self._load_episode(episode)
            except ImageLoadError as e:
                self.num_load_failures += 1
                print_log(f'skipping unreadable training instance ({self.num_load_failures} so '
                          f'far): {e}', logger='current', level=30)
                episode = self._replace_failed(episode, str(e), attempt)
        raise ImageLoadError(f'{self.ann_file}: {self.max_refetch} replacement attempts failed '
                             f'for an episode of category {episode.category_id}')

    def _replace_failed(self, episode: Episode, message: str, attempt: int) -> Episode:
        members = episode.support_indices + episode.query_indices
        bad = [i for i in members if f'annotation {self.instances[i]["ann_id"]} ' in message]
        rng = np.random.default_rng([episode.seed, attempt + 1])
        pool = [i for i in self.cat_to_indices[episode.category_id] if i not in members]
        if not bad or not pool:
            raise ImageLoadError(f'cannot replace the failing instance: {message}')
        new = int(pool[rng.integers(len(pool))])
        members = tuple(new if i == bad[0] else i for i in members)
        s = len(episode.support_indices)
        return Episode(episode.category_id, members[:s], members[s:], episode.seed)
