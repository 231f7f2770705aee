"""mmengine metric for category-agnostic pose estimation on MP-100 (PCK / mPCK / NME / AUC / EPE).

The protocol (see :mod:`metapoint.evaluation.functional.keypoint_eval`) follows the official
CapeFormer / MetaPoint / FMMP evaluation: one score per (support set, query) pair, distances
normalised by ``max(w, h)`` of the query bbox, keypoints restricted to those visible in the query
and in every support shot, strict ``<`` threshold, plain mean over pairs.
"""
import json
import logging
import os
import os.path as osp
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
from mmengine.dist import is_main_process
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log

from metapoint.registry import METRICS
from ..functional.keypoint_eval import (CATEGORY_THRESHOLD, DEFAULT_THRESHOLDS,
                                        check_empty_mask, check_thresholds, pair_masks, pck_key,
                                        summarize_cape)

#: how many query annotation ids of empty-mask pairs are named in the warning
_NUM_IDS_IN_WARNING = 10

_REQUIRED_KEYS = ('category_id', 'query_ann_ids', 'pred_kpts', 'gt_kpts', 'query_vis',
                  'support_vis', 'bbox_size', 'num_kpts')


def _to_numpy(x: Any) -> np.ndarray:
    """torch tensor (any device) / array-like -> numpy array."""
    if hasattr(x, 'detach') and hasattr(x, 'cpu'):
        x = x.detach().cpu()
        if hasattr(x, 'is_floating_point') and x.is_floating_point() and str(
                x.dtype) in ('torch.bfloat16', 'torch.float16'):
            x = x.float()
        return x.numpy()
    return np.asarray(x)


def _to_int(x: Any) -> int:
    arr = _to_numpy(x)
    if arr.size != 1:
        raise ValueError(f'expected a single integer, got an array of shape {arr.shape}')
    return int(arr.reshape(-1)[0])


def _as_float_coords(x: Any) -> np.ndarray:
    arr = _to_numpy(x)
    if not np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float64)
    return arr


def _render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table with ``+---+`` borders and right-aligned cells."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    sep = '+' + '+'.join('-' * (w + 2) for w in widths) + '+'

    def line(cells: Sequence[str]) -> str:
        return '| ' + ' | '.join(c.rjust(w) for c, w in zip(cells, widths)) + ' |'

    out = [sep, line(headers), sep]
    out += [line(r) for r in rows]
    out.append(sep)
    return '\n'.join(out)


def format_coverage(coverage: Dict[str, Any]) -> str:
    """One line: ``Evaluated N of M categories`` and, when some were not, which and why."""
    text = f'Evaluated {coverage["evaluated"]} of {coverage["total"]} categories'
    missing = coverage.get('not_evaluated') or {}
    if missing:
        text += ' (not evaluated: ' + '; '.join(f'{reason}: {ids}'
                                                for reason, ids in missing.items()) + ')'
    return text


def format_pck_table(metrics: Dict[str, Any],
                     per_category: Optional[Dict[Any, dict]] = None,
                     coverage: Optional[Dict[str, Any]] = None) -> str:
    """Readable text table of CAPE results.

    Args:
        metrics: the dict returned by :class:`CAPEMetric` (keys may carry an evaluator prefix
            such as ``'val/PCK@0.2'``; the part after the last ``/`` is used).
        per_category: optional ``{cat_id: {'PCK@0.2': x, 'num_pairs': n}}``; adds a second table.
        coverage: optional :attr:`CAPEMetric.last_coverage`; adds the line
            ``Evaluated N of M categories`` (with the ones not evaluated and why).

    Returns:
        str: PCK@t, mPCK, mPCK_5thr, AUC and NME as percentages with 2 decimals, EPE in pixels,
        pair counts as integers; then (optionally) one row per category.
    """
    m = {str(k).split('/')[-1]: v for k, v in metrics.items()}
    pck_keys = [k for k in m if k.startswith('PCK@')]

    def thr_of(key: str) -> float:
        try:
            return float(key[4:])
        except ValueError:
            return float('inf')

    pck_keys.sort(key=thr_of)
    headers: List[str] = []
    cells: List[str] = []
    for key in pck_keys + ['mPCK', 'mPCK_5thr', 'AUC', 'NME']:
        if key in m:
            headers.append(key)
            cells.append(f'{100.0 * float(m[key]):.2f}')
    if 'EPE' in m:
        headers.append('EPE(px)')
        cells.append(f'{float(m["EPE"]):.2f}')
    for key, name in (('num_pairs', 'pairs'), ('num_empty_pairs', 'empty pairs')):
        if key in m:
            headers.append(name)
            cells.append(str(int(m[key])))
    parts = []
    if coverage:
        parts.append(format_coverage(coverage))
    if headers:
        parts.append('CAPE results (PCK/mPCK/AUC/NME in %, EPE in pixels)')
        parts.append(_render_table(headers, [cells]))
    if per_category:
        cat_key = pck_key(CATEGORY_THRESHOLD)
        rows = []

        def sort_key(c: Any):
            try:
                return (0, int(c), '')
            except (TypeError, ValueError):
                return (1, 0, str(c))

        for cid in sorted(per_category, key=sort_key):
            entry = per_category[cid]
            rows.append([
                str(cid),
                str(int(entry.get('num_pairs', 0))),
                f'{100.0 * float(entry[cat_key]):.2f}' if cat_key in entry else '-',
            ])
        parts.append(f'Per-category {cat_key} (%)')
        parts.append(_render_table(['cat id', 'pairs', f'{cat_key}(%)'], rows))
    return '\n'.join(parts)


@METRICS.register_module()
class CAPEMetric(BaseMetric):
    """PCK@t / mPCK / NME / AUC / EPE over (support set, query) pairs, MP-100 protocol.

    ``process`` takes one dict per *episode* (a support set and ``Q`` queries of one category)
    with keys ``category_id``, ``query_ann_ids`` ``[Q]``, ``pred_kpts`` / ``gt_kpts``
    ``[Q, K, 2]`` (original image pixels), ``query_vis`` ``[Q, K]``, ``support_vis`` ``[S, K]``,
    ``bbox_size`` ``[Q]`` (``max(w, h)`` of the query bbox) and ``num_kpts``; numpy arrays or
    torch tensors. One result is stored per episode.

    Returned keys: ``PCK@{t:g}`` for every ``t`` in ``thresholds``, ``mPCK`` (mean of
    PCK@0.05..0.20), ``mPCK_5thr`` (mean of PCK@0.05..0.25), ``NME``, ``AUC``, ``EPE`` (pixels),
    ``num_pairs``, ``num_empty_pairs``. PCK-like values are fractions in [0, 1].

    Args:
        thresholds: PCK thresholds reported individually, each in (0, 1].
        empty_mask: ``'zero'`` (official: pairs without any evaluable keypoint score 0 and are
            kept) or ``'skip'`` (they are dropped from every average). They are always counted
            (``num_empty_pairs``) and reported in a warning.
        out_dir: if set, ``cape_metrics.json`` (and ``cape_predictions.json``) are written there.
            When the dataset reports ``category_coverage`` in its metainfo (``MP100Dataset``),
            the JSON's ``categories`` entry and the printed table state how many categories
            were evaluated out of how many were requested (see :attr:`last_coverage`).
        save_predictions: write ``cape_predictions.json`` when ``out_dir`` is set.
        collect_device: ``'cpu'`` or ``'gpu'``, see :class:`mmengine.evaluator.BaseMetric`.
        prefix: prefix of the metric names, see :class:`mmengine.evaluator.BaseMetric`.
        collect_dir: temporary directory for cpu collection, see ``BaseMetric``.
    """

    default_prefix: Optional[str] = None

    def __init__(self,
                 thresholds: Union[float, Sequence[float]] = DEFAULT_THRESHOLDS,
                 empty_mask: str = 'zero',
                 out_dir: Optional[str] = None,
                 save_predictions: bool = True,
                 collect_device: str = 'cpu',
                 prefix: Optional[str] = None,
                 collect_dir: Optional[str] = None) -> None:
        self.thresholds = check_thresholds(thresholds)
        self.empty_mask = check_empty_mask(empty_mask)
        if out_dir is not None and not isinstance(out_dir, (str, os.PathLike)):
            raise ValueError(f'out_dir must be a path or None, got {out_dir!r}')
        if collect_device not in ('cpu', 'gpu'):
            raise ValueError(f"collect_device must be 'cpu' or 'gpu', got {collect_device!r}")
        super().__init__(collect_device=collect_device, prefix=prefix, collect_dir=collect_dir)
        self.out_dir = None if out_dir is None else str(out_dir)
        self.save_predictions = bool(save_predictions)
        self.last_metrics: Optional[Dict[str, Any]] = None
        self.last_per_category: Optional[Dict[int, dict]] = None
        #: ``{evaluated, total, evaluated_ids, not_evaluated: {reason: ids}}`` of the last
        #: evaluation, or None when the dataset gave no ``category_coverage``
        self.last_coverage: Optional[Dict[str, Any]] = None

    # ------------------------------------------------------------------ process
    @staticmethod
    def _episode_to_result(sample: Any) -> dict:
        if not isinstance(sample, Mapping):
            if hasattr(sample, 'to_dict'):
                sample = sample.to_dict()
            else:
                raise TypeError(
                    f'CAPEMetric expects one dict per episode, got {type(sample).__name__}')
        missing = [k for k in _REQUIRED_KEYS if k not in sample]
        if missing:
            raise KeyError(f'CAPEMetric: episode output lacks keys {missing}')

        pred = _as_float_coords(sample['pred_kpts'])
        gt = _as_float_coords(sample['gt_kpts'])
        if pred.ndim == 2:  # a single query given without the Q axis
            pred, gt = pred[None], gt[None]
        if pred.ndim != 3 or pred.shape[-1] != 2 or pred.shape != gt.shape:
            raise ValueError(
                f'pred_kpts and gt_kpts must have shape [Q, K, 2], got {pred.shape} / {gt.shape}')
        q, k = pred.shape[:2]
        qvis = _to_numpy(sample['query_vis']) > 0
        if qvis.ndim == 1 and q == 1:
            qvis = qvis[None]
        if qvis.shape != (q, k):
            raise ValueError(f'query_vis must have shape [Q, K]=[{q}, {k}], got {qvis.shape}')
        svis = _to_numpy(sample['support_vis']) > 0
        if svis.ndim == 1:
            svis = svis[None]
        if svis.ndim != 2 or svis.shape[1] != k or svis.shape[0] == 0:
            raise ValueError(f'support_vis must have shape [S, K] with K={k}, got {svis.shape}')
        bbox = _to_numpy(sample['bbox_size']).astype(np.float64).reshape(-1)
        if bbox.shape != (q, ):
            raise ValueError(f'bbox_size must have shape [Q]={q}, got {bbox.shape}')
        ann_ids = _to_numpy(sample['query_ann_ids']).reshape(-1).astype(np.int64)
        if ann_ids.shape != (q, ):
            raise ValueError(f'query_ann_ids must have length Q={q}, got {ann_ids.shape[0]}')
        num_kpts = _to_int(sample['num_kpts'])
        if not 0 <= num_kpts <= k:
            raise ValueError(f'num_kpts={num_kpts} outside [0, K={k}]')
        return dict(
            category_id=_to_int(sample['category_id']),
            query_ann_ids=ann_ids,
            pred_kpts=pred,
            gt_kpts=gt,
            query_vis=qvis,
            # product over shots: a keypoint counts only if every support shot shows it
            support_vis=svis.all(axis=0),
            num_shots=int(svis.shape[0]),
            bbox_size=bbox,
            num_kpts=num_kpts)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Store one result per episode (numpy, cpu)."""
        for sample in data_samples:
            self.results.append(self._episode_to_result(sample))

    # ------------------------------------------------------------------ compute
    @staticmethod
    def _flatten(results: List[dict]) -> Dict[str, np.ndarray]:
        """Episode results -> pair arrays, padding keypoint slots to the largest K."""
        k_max = max(r['pred_kpts'].shape[1] for r in results)

        def pad(a: np.ndarray, axis: int) -> np.ndarray:
            extra = k_max - a.shape[axis]
            if extra == 0:
                return a
            width = [(0, 0)] * a.ndim
            width[axis] = (0, extra)
            return np.pad(a, width)

        q_sizes = np.array([r['pred_kpts'].shape[0] for r in results], dtype=np.int64)
        return dict(
            pred=np.concatenate([pad(r['pred_kpts'].astype(np.float64), 1) for r in results]),
            gt=np.concatenate([pad(r['gt_kpts'].astype(np.float64), 1) for r in results]),
            query_vis=np.concatenate([pad(r['query_vis'], 1) for r in results]),
            support_vis=np.repeat(
                np.stack([pad(r['support_vis'], 0) for r in results]), q_sizes, axis=0),
            bbox_size=np.concatenate([r['bbox_size'] for r in results]),
            category_ids=np.repeat(
                np.array([r['category_id'] for r in results], dtype=np.int64), q_sizes),
            num_kpts=np.repeat(
                np.array([r['num_kpts'] for r in results], dtype=np.int64), q_sizes),
            query_ann_ids=np.concatenate([r['query_ann_ids'] for r in results]),
            episode_index=np.repeat(np.arange(len(results)), q_sizes))

    def _warn_data_issues(self, pairs: Dict[str, np.ndarray]) -> None:
        mask = pair_masks(pairs['query_vis'], pairs['support_vis'], num_kpts=pairs['num_kpts'],
                          bbox_size=pairs['bbox_size'])
        n = mask.shape[0]
        bad_bbox = ~(np.isfinite(pairs['bbox_size']) & (pairs['bbox_size'] > 0))
        if bad_bbox.any():
            ids = pairs['query_ann_ids'][bad_bbox][:_NUM_IDS_IN_WARNING].tolist()
            print_log(
                f'CAPEMetric: {int(bad_bbox.sum())} of {n} pairs have a non-positive or '
                f'non-finite bbox size; their keypoints are not evaluable (empty mask). '
                f'First query ann ids: {ids}',
                logger='current', level=logging.WARNING)
        empty = ~mask.any(axis=1)
        if empty.any():
            ids = pairs['query_ann_ids'][empty][:_NUM_IDS_IN_WARNING].tolist()
            action = ('scored as PCK 0 and kept in every average (official protocol)'
                      if self.empty_mask == 'zero' else 'dropped from every average')
            print_log(
                f'CAPEMetric: {int(empty.sum())} of {n} pairs have an empty evaluation mask '
                f'(no keypoint visible in the query and in every support shot); '
                f"empty_mask='{self.empty_mask}': {action}. First query ann ids: {ids}",
                logger='current', level=logging.WARNING)
        nonfinite = mask & ~np.isfinite(pairs['pred']).all(axis=-1)
        if nonfinite.any():
            print_log(
                f'CAPEMetric: {int(nonfinite.sum())} evaluated predictions are not finite '
                f'(they never count as correct; NME/EPE become nan)',
                logger='current', level=logging.WARNING)

    def _coverage(self, results: List[dict],
                  per_category: Dict[int, dict]) -> Optional[Dict[str, Any]]:
        """Categories evaluated (those in the averages, i.e. in ``per_category``) out of those
        the dataset was asked for."""
        meta = (self.dataset_meta or {}).get('category_coverage')
        if not meta:
            return None
        evaluated = sorted(int(c) for c in per_category)
        not_evaluated = {str(reason): sorted(int(i) for i in ids)
                         for reason, ids in (meta.get('skipped') or {}).items() if ids}
        with_results = {int(r['category_id']) for r in results}
        all_pairs_empty = sorted(with_results - set(evaluated))
        if all_pairs_empty:  # empty_mask='skip' dropped every pair of these categories
            not_evaluated['every pair has an empty mask'] = all_pairs_empty
        planned_missing = sorted(set(int(i) for i in meta.get('used', [])) - with_results)
        if planned_missing:
            not_evaluated['no result'] = planned_missing
        return dict(evaluated=len(evaluated), total=int(meta['requested']),
                    evaluated_ids=evaluated, not_evaluated=not_evaluated)

    def compute_metrics(self, results: list) -> Dict[str, float]:
        """Flatten the episode results to pairs and compute all metrics (rank 0 only)."""
        if len(results) == 0:
            print_log('CAPEMetric: no results to evaluate; every metric is reported as 0',
                      logger='current', level=logging.WARNING)
            metrics, per_category = summarize_cape(
                np.zeros((0, 1, 2)), np.zeros((0, 1, 2)), np.zeros((0, 1)), None,
                np.zeros(0), thresholds=self.thresholds, empty_mask=self.empty_mask)
            pairs = None
        else:
            pairs = self._flatten(results)
            self._warn_data_issues(pairs)
            metrics, per_category = summarize_cape(
                pairs['pred'], pairs['gt'], pairs['query_vis'], pairs['support_vis'],
                pairs['bbox_size'], category_ids=pairs['category_ids'],
                num_kpts=pairs['num_kpts'], thresholds=self.thresholds,
                empty_mask=self.empty_mask)
            if self.empty_mask == 'skip':
                dropped = sorted(set(pairs['category_ids'].tolist()) - set(per_category))
                if dropped:
                    print_log(
                        f'CAPEMetric: categories {dropped} have no pair with a non-empty mask '
                        f"and are absent from the per-category table (empty_mask='skip')",
                        logger='current', level=logging.WARNING)
            if metrics['num_pairs'] == 0:
                print_log('CAPEMetric: no pair entered the averages; metrics are reported as 0',
                          logger='current', level=logging.WARNING)

        self.last_metrics = dict(metrics)
        self.last_per_category = per_category
        self.last_coverage = coverage = self._coverage(results, per_category)
        if coverage and coverage['evaluated'] < coverage['total']:
            print_log(f'CAPEMetric: {format_coverage(coverage)}; the averages cover only the '
                      'evaluated categories', logger='current', level=logging.WARNING)
        print_log('\n' + format_pck_table({}, per_category, coverage), logger='current')

        if self.out_dir is not None and is_main_process():
            self._dump(metrics, per_category, pairs, coverage)
        return metrics

    def _dump(self, metrics: Dict[str, Any], per_category: Dict[int, dict],
              pairs: Optional[Dict[str, np.ndarray]],
              coverage: Optional[Dict[str, Any]] = None) -> None:
        os.makedirs(self.out_dir, exist_ok=True)
        payload = dict(
            metrics=metrics,
            per_category={str(cid): v for cid, v in per_category.items()},
            protocol=dict(
                thresholds=list(self.thresholds),
                empty_mask=self.empty_mask,
                normalisation='max(w,h) of query bbox'))
        if coverage is not None:
            payload['categories'] = coverage
        path = osp.join(self.out_dir, 'cape_metrics.json')
        with open(path, 'w') as f:
            json.dump(payload, f, indent=2)
        print_log(f'CAPEMetric: metrics written to {path}', logger='current')
        if not self.save_predictions:
            return
        preds = []
        if pairs is not None:
            pred_list = pairs['pred'].tolist()
            for j, (ann_id, cid, nk) in enumerate(
                    zip(pairs['query_ann_ids'].tolist(), pairs['category_ids'].tolist(),
                        pairs['num_kpts'].tolist())):
                preds.append(
                    dict(query_ann_id=ann_id, category_id=cid, keypoints=pred_list[j][:nk],
                         pair_index=j))
        path = osp.join(self.out_dir, 'cape_predictions.json')
        text = json.dumps(preds)  # one write: much faster than streaming json.dump
        with open(path, 'w') as f:
            f.write(text)
        print_log(f'CAPEMetric: {len(preds)} predictions written to {path}', logger='current')
