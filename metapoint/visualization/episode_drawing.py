"""Pictures of whole episodes (OpenCV, BGR uint8), in the model-input crops.

:func:`episode_view` takes one episode out of an :class:`~metapoint.structures.EpisodeBatch`
(as :func:`~metapoint.datasets.episode_collate` makes it, images still uint8) and, optionally,
the model's prediction for it (one ``'predict'`` output dict: ``pred_kpts`` in image pixels) and
turns it into an :class:`EpisodeView`: numpy arrays in crop pixels. Two layouts draw a view:

* :func:`render_prediction`: one row per query, ``support(s) | query ground truth | query
  prediction`` (what :class:`~metapoint.engine.CAPEVisualizationHook` saves);
* :func:`render_episode_inputs`: every support and query as the pipeline made it, the padded
  keypoint slots drawn as hollow grey rings, optionally the target heatmaps as a colour overlay
  (``tools/misc/browse_dataset.py``).

Only the category's real keypoints (slots ``< num_kpts``) are drawn as keypoints.
"""
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

from metapoint.utils.geometry import image_to_crop
from .keypoint_drawing import draw_keypoints, keypoint_colors, resize_to_height

#: PCK threshold of the per-query score printed on prediction panels (MP-100 protocol)
PANEL_PCK_THRESHOLD = 0.2
_CAPTION_H = 18
_TITLE_H = 22
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_PAD_COLOR = (160, 160, 160)


@dataclass
class EpisodeView:
    """One episode in crop pixels (S shots, Q queries, K slots, K_c = ``num_kpts`` real ones).

    ``support_imgs`` / ``query_imgs``: lists of HxWx3 uint8 (BGR); ``*_kpts`` ``[N, K, 2]`` crop
    pixels; ``*_vis`` ``[N, K]`` annotation visibility; ``*_weights`` ``[N, K]`` target weights
    (padded slots may be weighted); ``*_heatmaps`` ``[N, K, h, w]`` or None; ``pred`` ``[Q, K,
    2]`` crop pixels or None; ``pck`` ``[Q]`` PCK@0.2 per query (NaN: nothing to score) or None;
    ``skeleton`` ``[E, 2]`` 0-indexed links between real keypoints.
    """
    category_id: int
    num_kpts: int
    skeleton: np.ndarray
    support_imgs: List[np.ndarray]
    support_kpts: np.ndarray
    support_vis: np.ndarray
    support_weights: np.ndarray
    query_imgs: List[np.ndarray]
    query_kpts: np.ndarray
    query_vis: np.ndarray
    query_weights: np.ndarray
    category_name: str = ''
    support_heatmaps: Optional[np.ndarray] = None
    query_heatmaps: Optional[np.ndarray] = None
    pred: Optional[np.ndarray] = None
    pck: Optional[np.ndarray] = None

    @property
    def num_slots(self) -> int:
        """K (padded slot count)."""
        return int(self.support_kpts.shape[1])

    @property
    def num_queries(self) -> int:
        return len(self.query_imgs)


def _numpy(x) -> np.ndarray:
    if hasattr(x, 'detach'):
        x = x.detach().cpu()
        if x.is_floating_point():
            x = x.float()
        x = x.numpy()
    return np.asarray(x)


def _images(imgs) -> List[np.ndarray]:
    """``[N, 3, H, W]`` (uint8, or float already in 0..255) -> N HxWx3 uint8 images."""
    arr = _numpy(imgs)
    if arr.dtype != np.uint8:
        arr = np.clip(np.round(arr), 0, 255).astype(np.uint8)
    return [np.ascontiguousarray(a.transpose(1, 2, 0)) for a in arr]


def _crop_size(metas: Sequence[dict], img: np.ndarray) -> np.ndarray:
    """(W, H) of the crops: ``meta['input_size']`` when present, else the image shape."""
    if metas and 'input_size' in metas[0]:
        return np.asarray(metas[0]['input_size'], np.float64)
    return np.array([img.shape[1], img.shape[0]], np.float64)


def _pck_per_query(prediction: dict, num_kpts: int,
                   thr: float = PANEL_PCK_THRESHOLD) -> np.ndarray:
    """PCK@thr of every query as the metric scores it (image pixels, ``max(w, h)`` of the box,
    keypoints visible in the query and in every shot); NaN where no keypoint is scored."""
    pred = _numpy(prediction['pred_kpts'])[:, :num_kpts].astype(np.float64)
    gt = _numpy(prediction['gt_kpts'])[:, :num_kpts].astype(np.float64)
    mask = _numpy(prediction['query_vis'])[:, :num_kpts] > 0
    mask &= (_numpy(prediction['support_vis'])[:, :num_kpts] > 0).all(0)[None]
    norm = np.maximum(_numpy(prediction['bbox_size']).astype(np.float64), 1e-6)[:, None]
    hit = (np.linalg.norm(pred - gt, axis=-1) / norm < thr) & mask
    count = mask.sum(1)
    with np.errstate(invalid='ignore', divide='ignore'):
        return np.where(count > 0, hit.sum(1) / count, np.nan)


def episode_view(batch, index: int = 0, prediction: Optional[dict] = None,
                 categories: Optional[dict] = None) -> EpisodeView:
    """Episode ``index`` of ``batch`` (an EpisodeBatch, images uint8) as an :class:`EpisodeView`.

    Args:
        prediction: the model's ``'predict'`` output for this episode (``pred_kpts`` ``[Q, K, 2]``
            image pixels; mapped into the crops with each query's ``warp_mat``). Its ``gt_kpts``,
            ``query_vis``, ``support_vis`` and ``bbox_size``, when present, give the per-query
            PCK@0.2.
        categories: ``{category id: {'name': ..., 'skeleton': ...}}`` (the dataset's
            ``metainfo['categories']``): the category's name and its own skeleton (the batch's
            skeleton may hold padding links, FMMP); without it the batch's links between real
            keypoints are drawn.
    """
    b = int(index)
    n = int(batch.num_kpts[b])
    cid = int(batch.category_id[b])
    support_imgs = _images(batch.support_imgs[b])
    query_imgs = _images(batch.query_imgs[b])
    s_size = _crop_size(batch.support_metas[b] if batch.support_metas else [], support_imgs[0])
    q_metas = batch.query_metas[b] if batch.query_metas else []
    q_size = _crop_size(q_metas, query_imgs[0])
    record = (categories or {}).get(cid) or (categories or {}).get(str(cid)) or {}
    if record.get('skeleton') is not None:
        skeleton = np.asarray(record['skeleton'], np.int64).reshape(-1, 2)
    elif batch.skeleton:
        skeleton = _numpy(batch.skeleton[b]).astype(np.int64).reshape(-1, 2)
    else:
        skeleton = np.zeros((0, 2), np.int64)
    skeleton = skeleton[(skeleton < n).all(1) & (skeleton >= 0).all(1)]

    def heatmaps(value):
        return None if value is None else _numpy(value[b]).astype(np.float32)

    pred = pck = None
    if prediction is not None:
        if 'pred_kpts' not in prediction:
            raise KeyError(f"episode_view: the prediction has no 'pred_kpts' (image-pixel "
                           f"predictions [Q, K, 2]); its keys: {sorted(prediction)}")
        points = _numpy(prediction['pred_kpts']).astype(np.float64)
        warps = np.stack([np.asarray(m['warp_mat'], np.float64) for m in q_metas])
        pred = image_to_crop(points, warps, q_size) * q_size
        if all(k in prediction for k in ('gt_kpts', 'query_vis', 'support_vis', 'bbox_size')):
            pck = _pck_per_query(prediction, n)
    return EpisodeView(
        category_id=cid, num_kpts=n, skeleton=skeleton, category_name=str(record.get('name', '')),
        support_imgs=support_imgs,
        support_kpts=_numpy(batch.support_keypoints[b]).astype(np.float64) * s_size,
        support_vis=_numpy(batch.support_keypoints_visible[b]).astype(np.float32),
        support_weights=_numpy(batch.support_keypoint_weights[b]).astype(np.float32),
        query_imgs=query_imgs,
        query_kpts=_numpy(batch.query_keypoints[b]).astype(np.float64) * q_size,
        query_vis=_numpy(batch.query_keypoints_visible[b]).astype(np.float32),
        query_weights=_numpy(batch.query_keypoint_weights[b]).astype(np.float32),
        support_heatmaps=heatmaps(batch.support_heatmaps),
        query_heatmaps=heatmaps(batch.query_heatmaps), pred=pred, pck=pck)


# ------------------------------------------------------------------------------ panels
def _caption(panel: np.ndarray, text: str, height: int = _CAPTION_H) -> np.ndarray:
    """``panel`` with a black strip above it holding ``text`` (white)."""
    strip = np.zeros((height, panel.shape[1], 3), np.uint8)
    cv2.putText(strip, text, (3, height - 5), _FONT, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([strip, panel], 0)


def _keypoint_panel(img, kpts, show, skeleton, height, radius, thickness) -> np.ndarray:
    panel, scale = resize_to_height(img, height)
    return draw_keypoints(panel, kpts * scale, show, skeleton.tolist(), radius=radius,
                          thickness=thickness)


def _grid(rows: List[List[np.ndarray]], title: str) -> np.ndarray:
    """Rows of captioned panels (same height) -> one canvas with a title strip."""
    lines = []
    width = max(sum(p.shape[1] for p in row) for row in rows)
    for row in rows:
        line = np.concatenate(row, 1)
        if line.shape[1] < width:
            line = np.pad(line, ((0, 0), (0, width - line.shape[1]), (0, 0)))
        lines.append(line)
    titles = _wrap(title, width - 8, 0.5)
    head = np.full((_TITLE_H * len(titles), width, 3), 32, np.uint8)
    for i, text in enumerate(titles):
        cv2.putText(head, text, (4, _TITLE_H * (i + 1) - 7), _FONT, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return np.concatenate([head] + lines, 0)


def _wrap(text: str, width: int, scale: float) -> List[str]:
    """Split ``text`` at its `` | `` separators into lines at most ``width`` pixels wide
    (a single part wider than that stays on its own line)."""
    lines: List[str] = []
    for part in text.split(' | '):
        joined = f'{lines[-1]} | {part}' if lines else part
        if lines and cv2.getTextSize(joined, _FONT, scale, 1)[0][0] <= width:
            lines[-1] = joined
        else:
            lines.append(part)
    return lines or ['']


def default_radius(height: int) -> int:
    """Keypoint radius for panels ``height`` pixels high (3 px at 256)."""
    return max(2, int(round(height / 85)))


def episode_title(view: EpisodeView, prefix: str = '') -> str:
    name = f' {view.category_name}' if view.category_name else ''
    return f'{prefix}category {view.category_id}{name} | {view.num_kpts} keypoints'


def render_prediction(view: EpisodeView, panel_size: int = 256,
                      max_queries: Optional[int] = None, title: Optional[str] = None,
                      radius: Optional[int] = None, thickness: int = 1) -> np.ndarray:
    """``support(s) | query ground truth | query prediction``, one row per query (the first
    ``max_queries``; None: all), skeletons drawn; BGR uint8.

    The prediction panel shows the keypoints annotated in at least one shot (those the model
    was given); its caption holds the query's PCK@0.2 when the view has it.
    """
    if view.pred is None:
        raise ValueError('render_prediction needs a view with predictions (episode_view(..., '
                         'prediction=...))')
    n = view.num_kpts
    radius = radius or default_radius(panel_size)
    supports = [
        _caption(_keypoint_panel(img, view.support_kpts[s, :n], view.support_vis[s, :n],
                                 view.skeleton, panel_size, radius, thickness),
                 f'support {s}') for s, img in enumerate(view.support_imgs)]
    asked = (view.support_vis[:, :n] > 0).any(0).astype(np.float32)
    num_q = view.num_queries if max_queries is None else min(int(max_queries), view.num_queries)
    rows = []
    for q in range(num_q):
        img = view.query_imgs[q]
        gt = _keypoint_panel(img, view.query_kpts[q, :n], view.query_vis[q, :n], view.skeleton,
                             panel_size, radius, thickness)
        pred = _keypoint_panel(img, view.pred[q, :n], asked, view.skeleton, panel_size,
                               radius, thickness)
        score = ''
        if view.pck is not None and np.isfinite(view.pck[q]):
            score = f' PCK@{PANEL_PCK_THRESHOLD:g} {100 * view.pck[q]:.0f}%'
        rows.append(supports + [_caption(gt, f'query {q} ground truth'),
                                _caption(pred, f'query {q} prediction{score}')])
    shown = '' if num_q == view.num_queries else f' (first {num_q} of {view.num_queries} queries)'
    return _grid(rows, (title or episode_title(view)) + shown)


def heatmap_overlay(img: np.ndarray, heatmaps: np.ndarray, alpha: float = 0.65) -> np.ndarray:
    """``img`` with ``heatmaps`` ``[K, h, w]`` blended on it: at each pixel the colour of the
    strongest keypoint (same colours as :func:`keypoint_colors`), opacity ``alpha * max``."""
    out = img.astype(np.float32)
    if len(heatmaps) == 0:
        return img.copy()
    h, w = img.shape[:2]
    maps = np.stack([cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
                     for m in heatmaps])
    strength = np.clip(maps.max(0), 0, 1)[..., None] * alpha
    colours = keypoint_colors(len(heatmaps)).astype(np.float32)[maps.argmax(0)]
    return np.clip(out * (1 - strength) + colours * strength, 0, 255).astype(np.uint8)


def _padded_rings(panel: np.ndarray, kpts: np.ndarray, used: np.ndarray, scale: float,
                  radius: int) -> np.ndarray:
    """Hollow grey rings at the padded slots in use."""
    for x, y in kpts[used]:
        if np.isfinite([x, y]).all():
            cv2.circle(panel, (int(round(x * scale)), int(round(y * scale))), radius,
                       _PAD_COLOR, 1, cv2.LINE_8)  # crisp: unlike the anti-aliased dots
    return panel


def padded_slots_in_use(view: EpisodeView) -> Tuple[np.ndarray, np.ndarray]:
    """Per support / query image: which padded slots (``>= num_kpts``) carry a keypoint (weight
    or visibility > 0): two bool arrays ``[S, K - K_c]`` and ``[Q, K - K_c]``."""
    n = view.num_kpts
    return ((view.support_weights[:, n:] > 0) | (view.support_vis[:, n:] > 0),
            (view.query_weights[:, n:] > 0) | (view.query_vis[:, n:] > 0))


def render_episode_inputs(view: EpisodeView, panel_size: int = 256, show_heatmaps: bool = False,
                          title: Optional[str] = None, radius: Optional[int] = None,
                          thickness: int = 1) -> np.ndarray:
    """Every support and query crop as the pipeline made it; BGR uint8.

    Real keypoints: filled dots in the keypoint's colour (annotated ones only) and the skeleton;
    padded slots in use (``KeypointPadding`` 'eqdiv' / 'mixup'): hollow grey rings. With
    ``show_heatmaps`` a second row shows the target heatmaps of the real keypoints as a colour
    overlay (when the pipeline made heatmaps).
    """
    n = view.num_kpts
    radius = radius or default_radius(panel_size)
    pad_s, pad_q = padded_slots_in_use(view)
    entries = [('support', s, view.support_imgs[s], view.support_kpts[s], view.support_vis[s],
                pad_s[s], view.support_heatmaps) for s in range(len(view.support_imgs))]
    entries += [('query', q, view.query_imgs[q], view.query_kpts[q], view.query_vis[q],
                 pad_q[q], view.query_heatmaps) for q in range(view.num_queries)]
    top, bottom = [], []
    for role, i, img, kpts, vis, pad, maps in entries:
        panel, scale = resize_to_height(img, panel_size)
        panel = _padded_rings(panel, kpts[n:], pad, scale, radius)
        panel = draw_keypoints(panel, kpts[:n] * scale, vis[:n], view.skeleton.tolist(),
                               radius=radius, thickness=thickness)
        text = f'{role} {i}: {int((vis[:n] > 0).sum())}/{n} visible'
        if pad.any():
            text += f', {int(pad.sum())} pad'
        top.append(_caption(panel, text))
        if show_heatmaps and maps is not None:
            overlay = heatmap_overlay(resize_to_height(img, panel_size)[0], maps[i][:n])
            bottom.append(_caption(overlay, f'{role} {i} target heatmaps'))
    rows = [top] + ([bottom] if bottom else [])
    head = title or episode_title(view)
    used = int((pad_s.any(0) | pad_q.any(0)).sum()) if n < view.num_slots else 0
    head += f' | {view.num_slots} slots, padded slots in use: {used}'
    if show_heatmaps and not bottom:
        head += ' | no target heatmaps in this pipeline'
    return _grid(rows, head)
