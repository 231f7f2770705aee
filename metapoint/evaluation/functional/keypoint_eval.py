"""Pure numpy implementation of the MP-100 CAPE evaluation protocol.

Everything here works on *pairs*: one pair is (support set, query image). With ``N`` pairs, ``K``
keypoint slots (categories with fewer keypoints are zero-padded to ``K``) and ``S`` support shots:

* ``mask[j, k] = query_vis[j, k] AND prod_s support_vis[j, s, k]`` (annotation visibility),
  further restricted to the first ``num_kpts[j]`` slots and to pairs with a valid bbox size;
* ``dist[j, k] = ||pred[j, k] - gt[j, k]||_2 / bbox_size[j]`` where ``bbox_size`` is
  ``max(w, h)`` of the query's bbox, everything in original image pixels;
* ``PCK_j@t = |{k in M_j : dist[j, k] < t}| / |M_j|`` (strict ``<``), ``NME_j`` = mean of
  ``dist`` over ``M_j``, ``EPE_j`` = mean pixel distance over ``M_j``,
  ``AUC_j = 1/20 * sum_{i=0..19} PCK_j@(i/20)``.

A pair with an empty mask scores 0 for every per-pair value (as in the official CapeFormer /
MetaPoint code, which keeps such pairs in the averages); :func:`summarize_cape` can instead drop
them (``empty_mask='skip'``). Dataset-level values are plain means over pairs (every pair has the
same weight, no per-category averaging). All functions are vectorised over pairs and keypoints.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

ArrayLike = Union[np.ndarray, Sequence]

#: thresholds of ``mPCK`` (MetaPoint / FMMP papers)
MPCK_THRESHOLDS: Tuple[float, ...] = (0.05, 0.10, 0.15, 0.20)
#: thresholds of ``mPCK_5thr`` (CapeFormer test config)
MPCK_5THR_THRESHOLDS: Tuple[float, ...] = (0.05, 0.10, 0.15, 0.20, 0.25)
#: default thresholds reported as ``PCK@t``
DEFAULT_THRESHOLDS: Tuple[float, ...] = (0.05, 0.10, 0.15, 0.20, 0.25)
#: number of steps of the AUC (thresholds 0, 1/20, ..., 19/20)
AUC_NUM_STEPS = 20
#: threshold reported per category
CATEGORY_THRESHOLD = 0.2
EMPTY_MASK_MODES = ('zero', 'skip')


def pck_key(thr: float) -> str:
    """Metric name of PCK at ``thr``, e.g. ``0.1 -> 'PCK@0.1'``."""
    return f'PCK@{float(thr):g}'


def check_thresholds(thresholds: Union[float, Sequence[float]]) -> Tuple[float, ...]:
    """Validate PCK thresholds: a float or a non-empty sequence of distinct values in (0, 1].

    Returns:
        tuple[float]: the thresholds as floats, in the given order.

    Raises:
        ValueError: if the thresholds are empty, not numbers, outside (0, 1] or duplicated.
    """
    if isinstance(thresholds, (int, float, np.floating, np.integer)) and not isinstance(
            thresholds, bool):
        thresholds = (thresholds, )
    try:
        thrs = tuple(float(t) for t in thresholds)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f'thresholds must be a number or a sequence of numbers, got {thresholds!r}') from err
    if len(thrs) == 0:
        raise ValueError('thresholds must not be empty')
    bad = [t for t in thrs if not (np.isfinite(t) and 0.0 < t <= 1.0)]
    if bad:
        raise ValueError(f'every PCK threshold must lie in (0, 1], got {bad} in {thrs}')
    keys = [pck_key(t) for t in thrs]
    if len(set(keys)) != len(keys):
        raise ValueError(f'thresholds contain duplicates: {thrs}')
    return thrs


def check_empty_mask(empty_mask: str) -> str:
    """Validate the empty-mask policy (``'zero'`` or ``'skip'``)."""
    if empty_mask not in EMPTY_MASK_MODES:
        raise ValueError(
            f"empty_mask must be one of {EMPTY_MASK_MODES}, got {empty_mask!r}")
    return empty_mask


def pair_masks(query_vis: ArrayLike,
               support_vis: Optional[ArrayLike] = None,
               num_kpts: Optional[ArrayLike] = None,
               bbox_size: Optional[ArrayLike] = None) -> np.ndarray:
    """Evaluation mask of every pair.

    Args:
        query_vis: ``[N, K]`` annotation visibility of the queries (``> 0`` means visible).
        support_vis: ``[N, S, K]`` visibility of each pair's support shots, or ``[N, K]`` if it is
            already reduced over shots (``prod_s``). ``None``: no support constraint.
        num_kpts: ``[N]`` (or scalar) number of real keypoints; slots ``>= num_kpts`` are padding
            and always masked out. ``None``: all ``K`` slots are real.
        bbox_size: ``[N]`` normalisation size; pairs whose size is not a positive finite number
            get an empty mask (like mmpose's ``_calc_distances``). ``None``: no check.

    Returns:
        np.ndarray: ``[N, K]`` bool mask.
    """
    mask = np.asarray(query_vis) > 0
    if mask.ndim != 2:
        raise ValueError(f'query_vis must have shape [N, K], got {mask.shape}')
    n, k = mask.shape
    if support_vis is not None:
        svis = np.asarray(support_vis) > 0
        if svis.ndim == 3:
            svis = svis.all(axis=1)
        if svis.shape != (n, k):
            raise ValueError(
                f'support_vis must have shape [N, S, K] or [N, K] with N={n}, K={k}, '
                f'got {np.asarray(support_vis).shape}')
        mask = mask & svis
    if num_kpts is not None:
        nk = np.broadcast_to(np.asarray(num_kpts, dtype=np.int64), (n, ))
        mask = mask & (np.arange(k)[None, :] < nk[:, None])
    if bbox_size is not None:
        size = np.asarray(bbox_size, dtype=np.float64).reshape(-1)
        if size.shape != (n, ):
            raise ValueError(f'bbox_size must have shape [N]={n}, got {size.shape}')
        mask = mask & (np.isfinite(size) & (size > 0))[:, None]
    return mask


def pixel_distances(pred: ArrayLike, gt: ArrayLike) -> np.ndarray:
    """Euclidean distance in pixels: ``[N, K, 2]`` x2 -> ``[N, K]`` float64."""
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(
            f'pred and gt must both have shape [N, K, 2], got {pred.shape} and {gt.shape}')
    diff = pred - gt
    return np.sqrt(diff[..., 0]**2 + diff[..., 1]**2)


def normalised_distances(pred: ArrayLike, gt: ArrayLike, bbox_size: ArrayLike) -> np.ndarray:
    """Distances normalised by the query bbox size.

    Args:
        pred: ``[N, K, 2]`` predictions in original image pixels.
        gt: ``[N, K, 2]`` ground truth in original image pixels.
        bbox_size: ``[N]`` ``max(w, h)`` of each query bbox in pixels.

    Returns:
        np.ndarray: ``[N, K]`` float64 ``||pred - gt|| / bbox_size``. Pairs whose size is not
        positive get ``inf`` (mask them out with :func:`pair_masks`).
    """
    dist = pixel_distances(pred, gt)
    size = np.asarray(bbox_size, dtype=np.float64).reshape(-1)
    if size.shape != (dist.shape[0], ):
        raise ValueError(f'bbox_size must have shape [N]={dist.shape[0]}, got {size.shape}')
    valid = np.isfinite(size) & (size > 0)
    safe = np.where(valid, size, 1.0)
    return np.where(valid[:, None], dist / safe[:, None], np.inf)


def _check_dist_mask(dist: ArrayLike, mask: ArrayLike) -> Tuple[np.ndarray, np.ndarray]:
    dist = np.asarray(dist, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if dist.ndim != 2 or dist.shape != mask.shape:
        raise ValueError(
            f'dist and mask must both have shape [N, K], got {dist.shape} and {mask.shape}')
    return dist, mask


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean over the masked keypoints of each pair, 0 for an empty mask: ``[N, K] -> [N]``."""
    cnt = mask.sum(axis=1)
    total = np.where(mask, values, 0.0).sum(axis=1)
    return np.where(cnt > 0, total / np.maximum(cnt, 1), 0.0)


def pck_per_pair(dist: ArrayLike, mask: ArrayLike,
                 thr: Union[float, Sequence[float]]) -> np.ndarray:
    """PCK of every pair (strict ``dist < thr``; 0 for an empty mask).

    Args:
        dist: ``[N, K]`` normalised distances.
        mask: ``[N, K]`` bool evaluation mask.
        thr: a threshold, or a sequence of ``T`` thresholds.

    Returns:
        np.ndarray: ``[N]`` for a scalar ``thr``, else ``[N, T]`` (float64 fractions).
    """
    dist, mask = _check_dist_mask(dist, mask)
    scalar = np.ndim(thr) == 0
    thrs = np.atleast_1d(np.asarray(thr, dtype=np.float64))
    cnt = mask.sum(axis=1)
    denom = np.maximum(cnt, 1).astype(np.float64)
    # loop over thresholds only (keeps memory at N*K instead of N*K*T)
    out = np.empty((dist.shape[0], thrs.size), dtype=np.float64)
    for i, t in enumerate(thrs):
        hits = ((dist < t) & mask).sum(axis=1)
        out[:, i] = np.where(cnt > 0, hits / denom, 0.0)
    return out[:, 0] if scalar else out


def auc_per_pair(dist: ArrayLike, mask: ArrayLike, num_steps: int = AUC_NUM_STEPS) -> np.ndarray:
    """AUC of every pair: ``1/num_steps * sum_{i=0..num_steps-1} PCK@(i/num_steps)`` -> ``[N]``."""
    thrs = np.arange(num_steps, dtype=np.float64) / num_steps
    return pck_per_pair(dist, mask, thrs).mean(axis=1)


def nme_per_pair(dist: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Mean normalised distance over each pair's mask (0 if empty): ``[N, K] -> [N]``."""
    dist, mask = _check_dist_mask(dist, mask)
    return _masked_mean(dist, mask)


def epe_per_pair(pix_dist: ArrayLike, mask: ArrayLike) -> np.ndarray:
    """Mean pixel distance (end-point error) over each pair's mask (0 if empty) -> ``[N]``."""
    pix_dist, mask = _check_dist_mask(pix_dist, mask)
    return _masked_mean(pix_dist, mask)


def summarize_cape(pred: ArrayLike,
                   gt: ArrayLike,
                   query_vis: ArrayLike,
                   support_vis: Optional[ArrayLike],
                   bbox_size: ArrayLike,
                   category_ids: Optional[ArrayLike] = None,
                   num_kpts: Optional[ArrayLike] = None,
                   thresholds: Union[float, Sequence[float]] = DEFAULT_THRESHOLDS,
                   empty_mask: str = 'zero') -> Tuple[Dict[str, float], Dict[int, dict]]:
    """All CAPE metrics of a set of pairs.

    Args:
        pred: ``[N, K, 2]`` predictions, original image pixels.
        gt: ``[N, K, 2]`` ground truth, original image pixels.
        query_vis: ``[N, K]`` query annotation visibility.
        support_vis: ``[N, S, K]`` or ``[N, K]`` (already reduced) support visibility, or None.
        bbox_size: ``[N]`` ``max(w, h)`` of each query bbox, pixels.
        category_ids: ``[N]`` category id of every pair (for the per-category table).
        num_kpts: ``[N]`` (or scalar) number of real keypoints per pair, or None.
        thresholds: thresholds reported as ``PCK@t``.
        empty_mask: ``'zero'`` (official: empty-mask pairs score 0 and are kept) or ``'skip'``
            (they are dropped from every average, including the per-category one).

    Returns:
        tuple(dict, dict):

        - metrics: ``PCK@t`` for each ``t`` in ``thresholds``, ``mPCK`` (mean PCK over
          0.05/0.10/0.15/0.20), ``mPCK_5thr`` (over 0.05..0.25), ``NME``, ``AUC``, ``EPE``
          (pixels), ``num_pairs`` (pairs entering the averages) and ``num_empty_pairs`` (pairs
          with an empty mask, counted under both policies). Fractions in [0, 1].
        - per_category: ``{category_id: {'PCK@0.2': float, 'num_pairs': int}}`` (categories
          without any scored pair are absent under ``'skip'``).
    """
    thrs = check_thresholds(thresholds)
    check_empty_mask(empty_mask)

    pix = pixel_distances(pred, gt)
    dist = normalised_distances(pred, gt, bbox_size)
    mask = pair_masks(query_vis, support_vis, num_kpts=num_kpts, bbox_size=bbox_size)
    if mask.shape != dist.shape:
        raise ValueError(f'query_vis has shape {mask.shape}, predictions {dist.shape[:2]}')
    n = dist.shape[0]
    if category_ids is None:
        cats = np.zeros(n, dtype=np.int64)
    else:
        cats = np.asarray(category_ids).reshape(-1).astype(np.int64)
        if cats.shape != (n, ):
            raise ValueError(f'category_ids must have shape [N]={n}, got {cats.shape}')

    empty = ~mask.any(axis=1)
    num_empty = int(empty.sum())
    keep = ~empty if empty_mask == 'skip' else np.ones(n, dtype=bool)
    dist, pix, mask, cats = dist[keep], pix[keep], mask[keep], cats[keep]
    num_used = int(keep.sum())

    # every threshold needed anywhere, computed once
    all_thrs = sorted(set(thrs) | set(MPCK_THRESHOLDS) | set(MPCK_5THR_THRESHOLDS)
                      | {CATEGORY_THRESHOLD})
    pck = pck_per_pair(dist, mask, all_thrs)  # [N, T]
    col = {pck_key(t): i for i, t in enumerate(all_thrs)}

    def mean(x: np.ndarray) -> float:
        return float(x.mean()) if x.size > 0 else 0.0

    pck_mean = {key: mean(pck[:, i]) for key, i in col.items()}
    metrics: Dict[str, float] = {pck_key(t): pck_mean[pck_key(t)] for t in thrs}
    metrics['mPCK'] = float(np.mean([pck_mean[pck_key(t)] for t in MPCK_THRESHOLDS]))
    metrics['mPCK_5thr'] = float(np.mean([pck_mean[pck_key(t)] for t in MPCK_5THR_THRESHOLDS]))
    metrics['NME'] = mean(nme_per_pair(dist, mask))
    metrics['AUC'] = mean(auc_per_pair(dist, mask))
    metrics['EPE'] = mean(epe_per_pair(pix, mask))
    metrics['num_pairs'] = num_used
    metrics['num_empty_pairs'] = num_empty

    per_category: Dict[int, dict] = {}
    if num_used > 0:
        uniq, inv = np.unique(cats, return_inverse=True)
        counts = np.bincount(inv, minlength=uniq.size)
        sums = np.bincount(inv, weights=pck[:, col[pck_key(CATEGORY_THRESHOLD)]],
                           minlength=uniq.size)
        for cid, c, s in zip(uniq.tolist(), counts.tolist(), sums.tolist()):
            per_category[int(cid)] = {pck_key(CATEGORY_THRESHOLD): s / c, 'num_pairs': int(c)}
    return metrics, per_category
