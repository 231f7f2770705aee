"""Save pictures of evaluation episodes (supports | query ground truth | query prediction)."""
import os.path as osp
import re
from typing import Dict, Optional, Sequence, Tuple

from mmengine.dist import get_rank, get_world_size
from mmengine.hooks import Hook
from mmengine.logging import print_log

from metapoint.registry import HOOKS
from metapoint.visualization import (CAPEVisualizer, episode_view, publish_image,
                                     render_prediction)
from metapoint.visualization.episode_drawing import episode_title

_UNSAFE = re.compile(r'[^A-Za-z0-9_-]+')


@HOOKS.register_module()
class CAPEVisualizationHook(Hook):
    """Draw every ``interval``-th episode of the validation / test loops.

    One picture per drawn episode: for each query (the first ``max_queries``), the support crop(s)
    with their keypoints and skeleton, the query's ground truth and the model's prediction, in
    the model-input crops, one colour per keypoint index (padded slots are not drawn). The
    prediction panel's caption holds the query's PCK@0.2. Works with any CAPE estimator whose
    ``'predict'`` outputs carry ``pred_kpts`` (image pixels, mapped back into the crops with each
    query's ``warp_mat``).

    Pictures go to ``out_dir`` (test: ``episode{index:05d}_cat{id}_{name}.png``; validation
    during training: the same names under ``val_iter{N}/``) and, through the runner's visualizer,
    to its backends (TensorBoard, W&B, ...: name ``test_episode{index}_cat{id}`` or
    ``val_episode{...}``). With an ``out_dir`` the ``LocalVisBackend`` is skipped (the file is
    already on disk). ``index`` is the episode's index in the dataset.

    Off by default (``configs/_base_/default_runtime.py``); ``tools/test.py CONFIG CKPT
    --show-dir DIR [--show-interval N]`` switches it on. In a config::

        default_hooks = dict(visualization=dict(type='CAPEVisualizationHook', enable=True,
                                                interval=10, max_queries=4, out_dir='vis'))

    Args:
        enable: draw anything at all.
        interval: draw episodes whose dataset index is a multiple of it (1: every episode).
        max_queries: queries per picture (the first ones); None: all of the episode's.
        out_dir: folder for the files, relative to the runner's work dir or absolute; None:
            backends only.
        panel_size: panel height in pixels (None: the visualizer's, 256 by default).
        draw_val: also draw during validation (when ``enable``).
    """

    priority = 'NORMAL'

    def __init__(self, enable: bool = False, interval: int = 50,
                 max_queries: Optional[int] = None, out_dir: Optional[str] = None,
                 panel_size: Optional[int] = None, draw_val: bool = True) -> None:
        if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
            raise ValueError(f'CAPEVisualizationHook interval must be an integer >= 1, '
                             f'got {interval!r}')
        if max_queries is not None and (not isinstance(max_queries, int) or max_queries < 1):
            raise ValueError(f'CAPEVisualizationHook max_queries must be an integer >= 1 or '
                             f'None, got {max_queries!r}')
        if panel_size is not None and (not isinstance(panel_size, int) or panel_size < 16):
            raise ValueError(f'CAPEVisualizationHook panel_size must be an integer >= 16 or '
                             f'None, got {panel_size!r}')
        if out_dir is not None and not isinstance(out_dir, (str, bytes)) and \
                not hasattr(out_dir, '__fspath__'):
            raise ValueError(f'CAPEVisualizationHook out_dir must be a path or None, '
                             f'got {out_dir!r}')
        self.enable = bool(enable)
        self.interval = interval
        self.max_queries = max_queries
        self.out_dir = None if out_dir is None else str(out_dir)
        self.panel_size = panel_size
        self.draw_val = bool(draw_val)
        self.num_saved = 0
        self._seen = 0
        self._lookup: Optional[Dict[Tuple, int]] = None
        self._dataset_id: Optional[int] = None

    # ------------------------------------------------------------------ runner events
    def before_val_epoch(self, runner) -> None:
        self._seen = 0

    def before_test_epoch(self, runner) -> None:
        self._seen = 0

    def after_val_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.enable and self.draw_val:
            self._draw(runner, 'val', data_batch, outputs)

    def after_test_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        if self.enable:
            self._draw(runner, 'test', data_batch, outputs)

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._report(runner, 'test')

    def after_val_epoch(self, runner, metrics=None) -> None:
        if self.draw_val:
            self._report(runner, 'val')

    # ------------------------------------------------------------------ helpers
    def folder(self, runner, phase: str) -> Optional[str]:
        """Where the files of ``phase`` go (None: no files)."""
        if self.out_dir is None:
            return None
        root = self.out_dir if osp.isabs(self.out_dir) else osp.join(runner.work_dir,
                                                                      self.out_dir)
        return root if phase == 'test' else osp.join(root, f'val_iter{runner.iter}')

    def _report(self, runner, phase: str) -> None:
        if self.enable and self.num_saved and self.out_dir is not None:
            print_log(f'CAPEVisualizationHook: {self.num_saved} episode picture(s) in '
                      f'{self.folder(runner, phase)}', logger='current')
        self.num_saved = 0

    def _draw(self, runner, phase: str, data_batch, outputs: Sequence[dict]) -> None:
        if not data_batch or not outputs:
            return
        batch = data_batch['inputs']
        loop = getattr(runner, f'{phase}_loop')
        dataset = loop.dataloader.dataset
        visualizer = getattr(runner, 'visualizer', None)
        meta = getattr(visualizer, 'dataset_meta', None) or getattr(dataset, 'metainfo', {})
        for b, prediction in enumerate(outputs):
            index = self._episode_index(dataset, batch, b)
            self._seen += 1
            if index is None or index % self.interval:
                continue
            view = episode_view(batch, b, prediction, (meta or {}).get('categories'))
            title = episode_title(view, f'{phase} episode {index} | ')
            if isinstance(visualizer, CAPEVisualizer):
                canvas = visualizer.draw_prediction(view, self.max_queries, title,
                                                    self.panel_size)
            else:
                canvas = render_prediction(view, self.panel_size or 256, self.max_queries, title)
            name = f'{phase}_episode{index:05d}_cat{view.category_id}'
            folder = self.folder(runner, phase)
            out_file = None
            if folder is not None:
                label = _UNSAFE.sub('_', view.category_name).strip('_')
                stem = f'episode{index:05d}_cat{view.category_id}' + (f'_{label}' if label
                                                                      else '')
                out_file = osp.join(folder, stem + '.png')
            step = runner.iter if phase == 'val' else 0
            publish_image(visualizer, name, canvas, step, out_file)
            self.num_saved += 1

    def _episode_index(self, dataset, batch, b: int) -> Optional[int]:
        """Index of episode ``b`` of ``batch`` in ``dataset``.

        The guess is the position in an unshuffled ``DefaultSampler`` order (this rank's
        count x world size + rank); it is checked against the dataset's episode list (support
        and query annotation ids) when the dataset has one, and looked up there when it does not
        match (another sampler). None for the repeats a sampler adds to even out the ranks.
        """
        guess = self._seen * get_world_size() + get_rank()
        episodes = getattr(dataset, 'episodes', None)
        instances = getattr(dataset, 'instances', None)
        try:
            length = len(dataset)
        except TypeError:
            length = None
        if length is not None and guess >= length:
            return None
        if episodes is None or instances is None:
            return guess
        key = (int(batch.category_id[b]),
               tuple(int(m.get('ann_id', -1)) for m in batch.support_metas[b]),
               tuple(int(m.get('ann_id', -1)) for m in batch.query_metas[b]))
        if guess < len(episodes) and self._key(episodes[guess], instances) == key:
            return guess
        if self._lookup is None or self._dataset_id != id(dataset):
            self._lookup = {}
            for i, episode in enumerate(episodes):
                self._lookup.setdefault(self._key(episode, instances), i)
            self._dataset_id = id(dataset)
        return self._lookup.get(key, guess)

    @staticmethod
    def _key(episode, instances) -> Tuple:
        return (int(episode.category_id),
                tuple(int(instances[i]['ann_id']) for i in episode.support_indices),
                tuple(int(instances[i]['ann_id']) for i in episode.query_indices))
