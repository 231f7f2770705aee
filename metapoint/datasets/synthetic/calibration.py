"""Difficulty calibration: the trivial "SupportCopy" CAPE baseline.

SupportCopy predicts, for a query instance, the support instance's keypoints in crop coordinates.
For an instance with bbox ``(x, y, w, h)`` (image pixels): centre ``c = (x + w/2, y + h/2)``,
``side = 1.25 * max(w, h)``, crop coordinates ``u = (p - c) / side + 0.5`` (both axes).
Prediction ``p_hat = c_q + (u_s - 0.5) * side_q``. PCK@thr of a pair = fraction of keypoints
labelled (v > 0) in both support and query with ``||p_hat - p_q|| / max(w_q, h_q) < thr``;
the score is the mean over pairs. A good CAPE data set keeps this baseline low.
"""
import json
from collections import OrderedDict
from typing import Union

import numpy as np


def _load(ann):
    if isinstance(ann, dict):
        return ann
    with open(ann) as f:
        return json.load(f)


def pair_pck(support: dict, query: dict, thr: float = 0.2):
    """SupportCopy PCK of one (support, query) annotation pair; ``None`` if no keypoint is
    labelled in both or the query box is empty."""
    ks = np.asarray(support['keypoints'], np.float64).reshape(-1, 3)
    kq = np.asarray(query['keypoints'], np.float64).reshape(-1, 3)
    both = (ks[:, 2] > 0) & (kq[:, 2] > 0)
    xs, ys, ws, hs = map(float, support['bbox'])
    xq, yq, wq, hq = map(float, query['bbox'])
    norm = max(wq, hq)
    side_s = 1.25 * max(ws, hs)
    if not both.any() or norm <= 0 or side_s <= 0:
        return None
    c_s = np.array([xs + ws / 2, ys + hs / 2])
    c_q = np.array([xq + wq / 2, yq + hq / 2])
    u = (ks[both, :2] - c_s) / side_s + 0.5
    pred = c_q + (u - 0.5) * 1.25 * norm
    err = np.linalg.norm(pred - kq[both, :2], axis=1) / norm
    return float((err < thr).mean())


def support_copy_pck(ann: Union[str, dict], num_pairs: int = 2000, seed: int = 0,
                     thr: float = 0.2) -> float:
    """Mean SupportCopy PCK@``thr`` over ``num_pairs`` random (support, query) pairs.

    ``ann``: a COCO annotation file path or its loaded dict. A pair is drawn by picking a
    category uniformly among those with >= 2 annotations, then two distinct annotations of it
    (first = support) with ``np.random.default_rng(seed)``; pairs without a co-labelled keypoint
    are skipped (at most ``10 * num_pairs`` draws). Returns NaN if no valid pair exists.
    """
    data = _load(ann)
    by_cat = OrderedDict()
    for a in data['annotations']:
        by_cat.setdefault(int(a['category_id']), []).append(a)
    cats = [c for c in sorted(by_cat) if len(by_cat[c]) >= 2]
    if not cats or num_pairs <= 0:
        return float('nan')
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(10 * num_pairs):
        anns = by_cat[cats[int(rng.integers(0, len(cats)))]]
        i, j = rng.choice(len(anns), size=2, replace=False)
        v = pair_pck(anns[i], anns[j], thr)
        if v is not None:
            scores.append(v)
            if len(scores) == num_pairs:
                break
    return float(np.mean(scores)) if scores else float('nan')
