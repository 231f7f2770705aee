"""Rendering of one synthetic CAPE instance with OpenCV drawing primitives.

Coordinate conventions: images are ``(S, S, 3)`` uint8 BGR (OpenCV order); pixel ``(x, y)`` has
its centre at integer coordinates (COCO / mmpose convention), x to the right, y down. Input
poses are ``(K, 2)`` float arrays in arbitrary units with a ``(K,)`` visibility in {0, 1, 2};
only labelled keypoints (v > 0) are used and drawn.

Design (see ``docs/synthetic_data.md``):

* :func:`make_category_style` fixes the appearance of a category from ``(seed, category id)``:
  body colours / texture, limb thickness and texture, and one marker style per keypoint drawn
  WITHOUT replacement from the global pool :data:`MARKER_POOL` (8 shapes x 12 colours), plus a
  per-keypoint size factor. The same (shape, colour) pairs are reused by every category, so a
  marker only identifies a keypoint once a support example of the category has been seen.
* :func:`render_instance` draws, in order: background (smooth noise / gradient / stripes) and
  clutter shapes; the body (convex-hull blob or link ellipses, optionally striped); limbs along
  the skeleton links whose both ends are labelled; distractor markers (half of them with styles
  of the category's own set) at least ``3 r`` away from every keypoint; the keypoint markers;
  occluder patches (which may hide keypoints, their ``v`` is kept); photometric jitter, Gaussian
  noise and optional blur. The pose is normalised by the box of its labelled keypoints, then
  randomly flipped, stretched, rotated, scaled and placed (see :class:`RenderConfig`).
"""
import colorsys
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, Sequence, Tuple

import cv2
import numpy as np

MARKER_SHAPES = ('circle', 'square', 'triangle', 'diamond', 'cross', 'ring', 'star', 'bar')
#: BGR colours of the marker pool.
MARKER_COLOURS = (
    (20, 20, 235),    # red
    (20, 200, 20),    # green
    (235, 80, 10),    # blue
    (20, 235, 235),   # yellow
    (235, 20, 235),   # magenta
    (235, 235, 20),   # cyan
    (0, 140, 255),    # orange
    (150, 0, 110),    # purple
    (250, 250, 250),  # white
    (10, 10, 10),     # black
    (190, 150, 255),  # pink
    (30, 75, 130),    # brown
)
#: global marker pool: index i -> (shape index, colour index); shared by all categories.
MARKER_POOL = tuple((s, c) for s in range(len(MARKER_SHAPES)) for c in range(len(MARKER_COLOURS)))

_STYLE_TAG = 0x57E1
_SHIFT = 4                 # sub-pixel bits for cv2 drawing
_ONE = float(1 << _SHIFT)
_AA = cv2.LINE_AA

# unit polygons (radius ~1) of the polygonal marker shapes
_STAR = [(np.cos(a) * rr, np.sin(a) * rr) for a, rr in zip(
    np.linspace(-np.pi / 2, 1.5 * np.pi, 10, endpoint=False), [1.25, 0.5] * 5)]
_POLYS = {
    'square': np.array([(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)]),
    'triangle': np.array([(0.0, -1.15), (1.0, 0.65), (-1.0, 0.65)]),
    'diamond': np.array([(0.0, -1.25), (0.85, 0.0), (0.0, 1.25), (-0.85, 0.0)]),
    'star': np.array(_STAR),
    'bar': np.array([(-1.3, -0.45), (1.3, -0.45), (1.3, 0.45), (-1.3, 0.45)]),
}


@dataclass(frozen=True)
class RenderConfig:
    """Rendering parameters (all randomness is drawn per instance from its own RNG).

    ``scale_range``: side of the instance box as a fraction of the image side ``img_size``.
    ``rotation_deg``: in-plane rotation drawn uniformly in [-rotation_deg, rotation_deg].
    ``aspect_jitter``: x is stretched by exp(u), y by exp(-u), u ~ U(-aspect_jitter, +).
    """
    img_size: int = 256
    rotation_deg: float = 180.0
    flip_prob: float = 0.5
    aspect_jitter: float = 0.15
    scale_range: Tuple[float, float] = (0.35, 0.9)
    occluder_prob: float = 0.5
    max_occluders: int = 2
    distractor_range: Tuple[int, int] = (2, 8)
    clutter_range: Tuple[int, int] = (4, 12)
    photometric: bool = True
    jpeg_quality: int = 90


@dataclass(frozen=True)
class CategoryStyle:
    """Appearance of one category. ``marker_ids`` (K,) index :data:`MARKER_POOL`;
    ``marker_scale`` (K,) multiplies the instance marker radius. Colours are BGR tuples."""
    marker_ids: Tuple[int, ...]
    marker_scale: Tuple[float, ...]
    body_mode: int            # 0: limbs only, 1: convex-hull blob, 2: one ellipse per link
    body_colour: Tuple[int, int, int]
    stripe_colour: Tuple[int, int, int]
    limb_colour: Tuple[int, int, int]
    body_stripes: bool
    stripe_period: float      # in marker radii
    stripe_angle: float       # rad, relative to the instance rotation
    ellipse_ratio: float      # link ellipse half-width / link length
    limb_width: float         # limb thickness in marker radii
    limb_texture: int         # 0 solid, 1 centre stripe, 2 bands, 3 dark outline


class RenderResult(NamedTuple):
    """``image`` (S, S, 3) uint8 BGR; ``keypoints`` (K, 3) float64 image-pixel (x, y, v) with
    x = y = v = 0 for unlabelled keypoints; ``bbox`` (4,) float64 [x, y, w, h] in pixels;
    ``marker_radius`` the base marker radius in pixels."""
    image: np.ndarray
    keypoints: np.ndarray
    bbox: np.ndarray
    marker_radius: float


def _hsv_bgr(h, s, v):
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return (int(b * 255), int(g * 255), int(r * 255))


def _rand_colour(rng, s_lo=0.2, s_hi=1.0, v_lo=0.15, v_hi=1.0):
    return _hsv_bgr(rng.random(), rng.uniform(s_lo, s_hi), rng.uniform(v_lo, v_hi))


def make_category_style(seed: int, cat_id: int, num_keypoints: int) -> CategoryStyle:
    """Deterministic style of category ``cat_id`` (from ``default_rng([tag, seed, cat_id])``)."""
    rng = np.random.default_rng([_STYLE_TAG, seed, cat_id])
    k = int(num_keypoints)
    ids = rng.choice(len(MARKER_POOL), size=k, replace=k > len(MARKER_POOL))
    hue = rng.random()
    body = _hsv_bgr(hue, rng.uniform(0.25, 0.8), rng.uniform(0.3, 0.85))
    stripe = _hsv_bgr((hue + rng.uniform(0.15, 0.85)) % 1.0, rng.uniform(0.2, 0.9),
                      rng.uniform(0.2, 0.95))
    limb = _hsv_bgr((hue + rng.uniform(-0.15, 0.15)) % 1.0, rng.uniform(0.3, 1.0),
                    rng.uniform(0.2, 0.9))
    return CategoryStyle(
        marker_ids=tuple(int(i) for i in ids),
        marker_scale=tuple(float(s) for s in rng.uniform(0.85, 1.25, size=k)),
        body_mode=int(rng.choice(3, p=[0.3, 0.35, 0.35])),
        body_colour=body, stripe_colour=stripe, limb_colour=limb,
        body_stripes=bool(rng.random() < 0.5),
        stripe_period=float(rng.uniform(1.2, 3.0)),
        stripe_angle=float(rng.uniform(0, np.pi)),
        ellipse_ratio=float(rng.uniform(0.12, 0.3)),
        limb_width=float(rng.uniform(0.5, 1.4)),
        limb_texture=int(rng.integers(0, 4)))


@lru_cache(maxsize=8)
def _grid(size):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return xx, yy


def _fx(p):
    """float pixel coordinates -> cv2 shifted int coordinates."""
    return np.round(np.asarray(p, dtype=np.float64) * _ONE).astype(np.int32)


def _outline_for(colour):
    lum = 0.114 * colour[0] + 0.587 * colour[1] + 0.299 * colour[2]
    return (0, 0, 0) if lum > 100 else (255, 255, 255)


def draw_marker(img, x, y, r, pool_id):
    """Draw marker ``MARKER_POOL[pool_id]`` of radius ``r`` px centred at ``(x, y)``, with a
    1 px contrasting outline."""
    shape_i, colour_i = MARKER_POOL[pool_id]
    shape, colour = MARKER_SHAPES[shape_i], MARKER_COLOURS[colour_i]
    outline = _outline_for(colour)
    c = (int(round(x * _ONE)), int(round(y * _ONE)))
    if shape in _POLYS:
        poly = _POLYS[shape]
        cv2.fillPoly(img, [_fx(poly * (r + 1.0) + (x, y))], outline, _AA, _SHIFT)
        cv2.fillPoly(img, [_fx(poly * r + (x, y))], colour, _AA, _SHIFT)
    elif shape == 'circle':
        cv2.circle(img, c, int(round((r + 1.0) * _ONE)), outline, -1, _AA, _SHIFT)
        cv2.circle(img, c, int(round(r * _ONE)), colour, -1, _AA, _SHIFT)
    elif shape == 'ring':
        t = max(1, int(round(0.45 * r)))
        cv2.circle(img, c, int(round(r * _ONE)), outline, t + 2, _AA, _SHIFT)
        cv2.circle(img, c, int(round(r * _ONE)), colour, t, _AA, _SHIFT)
    else:  # cross
        t = max(1, int(round(0.5 * r)))
        d = 0.9 * r
        for p0, p1 in (((x - d, y - d), (x + d, y + d)), ((x - d, y + d), (x + d, y - d))):
            cv2.line(img, tuple(_fx(p0)), tuple(_fx(p1)), outline, t + 2, _AA, _SHIFT)
        for p0, p1 in (((x - d, y - d), (x + d, y + d)), ((x - d, y + d), (x + d, y - d))):
            cv2.line(img, tuple(_fx(p0)), tuple(_fx(p1)), colour, t, _AA, _SHIFT)


# --------------------------------------------------------------------------------------------
# geometry
# --------------------------------------------------------------------------------------------
def _place(points, rng, cfg):
    """Normalise labelled points (N, 2), flip / stretch / rotate, and pick the target box side.

    Returns (points (N, 2) in pixels relative to an arbitrary origin, target side T in px,
    rotation angle in rad)."""
    s = cfg.img_size
    lo, hi = points.min(0), points.max(0)
    ext = float((hi - lo).max())
    q = (points - (lo + hi) / 2) / (ext if ext > 1e-9 else 1.0)
    if rng.random() < cfg.flip_prob:
        q[:, 0] = -q[:, 0]
    a = np.exp(rng.uniform(-cfg.aspect_jitter, cfg.aspect_jitter))
    q = q * np.array([a, 1.0 / a])
    theta = np.deg2rad(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg))
    ct, st = np.cos(theta), np.sin(theta)
    q = q @ np.array([[ct, st], [-st, ct]])  # row vectors: (x, y) -> (x c - y s, x s + y c)
    side = rng.uniform(*cfg.scale_range) * s
    qext = float((q.max(0) - q.min(0)).max())
    q = q * (0.8 * side / qext if qext > 1e-9 else 0.0)
    return q, side, theta


def _marker_radius(pts, size):
    """Base marker radius (px) from the median nearest-neighbour distance of the keypoints."""
    if len(pts) >= 2:
        d = np.sqrt(((pts[:, None, :] - pts[None, :, :]) ** 2).sum(-1))
        d[np.diag_indices_from(d)] = np.inf
        nn = float(np.median(d.min(1)))
    else:
        nn = np.inf
    return float(np.clip(0.45 * nn, 0.016 * size, 0.032 * size))


# --------------------------------------------------------------------------------------------
# layers
# --------------------------------------------------------------------------------------------
def _background(rng, s):
    mode = int(rng.integers(0, 3))
    if mode == 0:  # smooth colour noise
        g = int(rng.integers(3, 9))
        small = rng.integers(0, 256, size=(g, g, 3), dtype=np.uint8)
        img = cv2.resize(small, (s, s), interpolation=cv2.INTER_CUBIC)
        img = cv2.addWeighted(img, 0.6, np.full_like(img, int(rng.integers(60, 200))), 0.4, 0)
    elif mode == 1:  # linear gradient
        xx, yy = _grid(s)
        ang = rng.uniform(0, 2 * np.pi)
        t = (xx * np.cos(ang) + yy * np.sin(ang)) / s
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
        c0 = np.array(_rand_colour(rng), np.float32)
        c1 = np.array(_rand_colour(rng), np.float32)
        img = (c0 + t[..., None] * (c1 - c0)).astype(np.uint8)
    else:  # stripes or checkerboard
        xx, yy = _grid(s)
        period = rng.uniform(0.04, 0.2) * s
        ang = rng.uniform(0, np.pi)
        u = (xx * np.cos(ang) + yy * np.sin(ang)) / period
        if rng.random() < 0.5:
            v = (-xx * np.sin(ang) + yy * np.cos(ang)) / period
            m = (np.floor(u) + np.floor(v)) % 2 == 0
        else:
            m = np.floor(u) % 2 == 0
        c0 = np.array(_rand_colour(rng, 0.0, 0.6, 0.2, 0.9), np.uint8)
        c1 = np.array(_rand_colour(rng, 0.0, 0.6, 0.2, 0.9), np.uint8)
        img = np.where(m[..., None], c0, c1)
    return np.ascontiguousarray(img)


def _clutter(img, rng, s, n):
    for _ in range(n):
        kind = int(rng.integers(0, 5))
        col = _rand_colour(rng)
        c = rng.uniform(0, s, size=2)
        sz = rng.uniform(0.03, 0.22) * s
        thick = -1 if rng.random() < 0.5 else int(rng.integers(1, 3 + s // 128))
        if kind == 0:
            p1 = c + rng.normal(0, sz, size=2)
            cv2.line(img, tuple(_fx(c)), tuple(_fx(p1)), col, max(thick, 1), _AA, _SHIFT)
        elif kind == 1:
            cv2.circle(img, tuple(_fx(c)), int(sz * _ONE / 2), col, thick, _AA, _SHIFT)
        elif kind == 2:
            ax = (int(sz * _ONE / 2), int(sz * _ONE * rng.uniform(0.15, 0.5)))
            cv2.ellipse(img, tuple(_fx(c)), ax, float(rng.uniform(0, 180)), 0, 360, col, thick,
                        _AA, _SHIFT)
        elif kind == 3:
            box = cv2.boxPoints(((float(c[0]), float(c[1])),
                                 (float(sz), float(sz * rng.uniform(0.2, 1.0))),
                                 float(rng.uniform(0, 180))))
            if thick < 0:
                cv2.fillConvexPoly(img, _fx(box), col, _AA, _SHIFT)
            else:
                cv2.polylines(img, [_fx(box)], True, col, thick, _AA, _SHIFT)
        else:
            pts = c + rng.normal(0, sz / 2, size=(int(rng.integers(3, 6)), 2))
            cv2.polylines(img, [_fx(pts)], False, col, max(thick, 1), _AA, _SHIFT)


def _jitter(colour, rng, amp=12):
    return tuple(int(np.clip(c + d, 0, 255)) for c, d in zip(colour, rng.integers(-amp, amp + 1,
                                                                               size=3)))


def _body(img, pts, links, style, rng, r, theta):
    """Blob under the limbs; returns the half-width (px) by which it exceeds the keypoints."""
    s = img.shape[0]
    mode = style.body_mode
    if mode == 0 or len(pts) == 0:
        return 0.0
    mask = np.zeros((s, s), np.uint8)
    pad = 0.0
    if mode == 1:
        hull = cv2.convexHull(_fx(pts).reshape(-1, 1, 2))
        cv2.fillConvexPoly(mask, hull, 255, _AA, _SHIFT)
        pad = r
        cv2.polylines(mask, [hull], True, 255, max(1, int(round(2 * r))), _AA, _SHIFT)
    else:
        for a, b in links:
            pa, pb = pts[a], pts[b]
            length = float(np.hypot(*(pb - pa)))
            hw = min(style.ellipse_ratio * length, 2.5 * r) + 0.5
            pad = max(pad, hw)
            ang = float(np.degrees(np.arctan2(pb[1] - pa[1], pb[0] - pa[0])))
            cv2.ellipse(mask, tuple(_fx((pa + pb) / 2)),
                        (int((length / 2 + 0.5 * hw) * _ONE), int(hw * _ONE)),
                        ang, 0, 360, 255, -1, _AA, _SHIFT)
    sel = mask > 127
    colour = np.array(_jitter(style.body_colour, rng), np.uint8)
    if style.body_stripes:
        xx, yy = _grid(s)
        ang = style.stripe_angle + theta
        u = (xx * np.cos(ang) + yy * np.sin(ang)) / (style.stripe_period * r * 2)
        stripe = np.array(_jitter(style.stripe_colour, rng), np.uint8)
        on = (np.floor(u) % 2 == 0)[sel]
        img[sel] = np.where(on[:, None], colour, stripe)
    else:
        img[sel] = colour
    return pad


def _limbs(img, pts, links, style, rng, r):
    col = _jitter(style.limb_colour, rng)
    alt = _jitter(style.stripe_colour, rng)
    t = max(1, int(round(style.limb_width * r)))
    for a, b in links:
        pa, pb = pts[a], pts[b]
        if style.limb_texture == 3:
            cv2.line(img, tuple(_fx(pa)), tuple(_fx(pb)), (20, 20, 20), t + 2, _AA, _SHIFT)
        if style.limb_texture == 2:  # alternating bands
            for j in range(3):
                q0 = pa + (pb - pa) * (j / 3)
                q1 = pa + (pb - pa) * ((j + 1) / 3)
                cv2.line(img, tuple(_fx(q0)), tuple(_fx(q1)), col if j % 2 == 0 else alt, t, _AA,
                         _SHIFT)
        else:
            cv2.line(img, tuple(_fx(pa)), tuple(_fx(pb)), col, t, _AA, _SHIFT)
        if style.limb_texture == 1 and t >= 3:
            cv2.line(img, tuple(_fx(pa)), tuple(_fx(pb)), alt, max(1, t // 3), _AA, _SHIFT)
    return t / 2.0 + 1.0


def _distractors(img, rng, pts, style, r, n):
    s = img.shape[0]
    cand = rng.uniform(0.02 * s, 0.98 * s, size=(4 * n, 2))
    if len(pts):
        d2 = ((cand[:, None, :] - pts[None, :, :]) ** 2).sum(-1).min(1)
        cand = cand[d2 > (3.0 * r) ** 2]
    cand = cand[:n]
    own = rng.random(len(cand)) < 0.5
    ids = np.where(own, rng.choice(np.asarray(style.marker_ids), size=len(cand)),
                   rng.integers(0, len(MARKER_POOL), size=len(cand)))
    sizes = r * rng.uniform(0.85, 1.25, size=len(cand))
    for (x, y), i, rr in zip(cand, ids, sizes):
        draw_marker(img, x, y, rr, int(i))


def _occluders(img, rng, pts, side, n):
    s = img.shape[0]
    for _ in range(n):
        half = rng.uniform(0.07, 0.18) * side
        if len(pts) and rng.random() < 0.7:
            c = pts[rng.integers(0, len(pts))] + rng.normal(0, half, size=2)
        else:
            c = rng.uniform(0, s, size=2)
        col = _rand_colour(rng)
        ang = float(rng.uniform(0, 180))
        asp = rng.uniform(0.4, 1.0)
        if rng.random() < 0.5:
            box = cv2.boxPoints(((float(c[0]), float(c[1])), (2 * half, 2 * half * asp), ang))
            cv2.fillConvexPoly(img, _fx(box), col, _AA, _SHIFT)
        else:
            cv2.ellipse(img, tuple(_fx(c)), (int(half * _ONE), int(half * asp * _ONE)), ang, 0,
                        360, col, -1, _AA, _SHIFT)
        if rng.random() < 0.5:  # some texture on the patch
            col2 = _rand_colour(rng)
            cv2.ellipse(img, tuple(_fx(c)), (int(0.5 * half * _ONE), int(0.3 * half * asp * _ONE)),
                        ang, 0, 360, col2, -1, _AA, _SHIFT)


def _photometric(img, rng):
    s = img.shape[0]
    gain = rng.uniform(0.88, 1.12, size=3).astype(np.float32) * np.float32(rng.uniform(0.75, 1.2))
    bias = np.float32(rng.uniform(-20, 20))
    sigma = np.float32(rng.uniform(1.0, 5.0))
    f = img.astype(np.float32) * gain + bias
    f += rng.standard_normal((s, s, 3), dtype=np.float32) * sigma
    out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), 0)
    return out


# --------------------------------------------------------------------------------------------
# main entry
# --------------------------------------------------------------------------------------------
def render_instance(keypoints: np.ndarray, visibility: np.ndarray,
                    skeleton: Sequence[Tuple[int, int]], style: CategoryStyle,
                    rng: np.random.Generator, cfg: RenderConfig) -> RenderResult:
    """Render one instance (see module docstring). ``keypoints`` (K, 2), ``visibility`` (K,),
    ``skeleton`` 0-indexed pairs. Consumes ``rng`` in a fixed order (deterministic)."""
    s = cfg.img_size
    vis = np.asarray(visibility).astype(np.int64)
    lab = np.flatnonzero(vis > 0)
    k = len(vis)
    out_kpts = np.zeros((k, 3))
    img = _background(rng, s)
    _clutter(img, rng, s, int(rng.integers(cfg.clutter_range[0], cfg.clutter_range[1] + 1)))
    if len(lab) == 0:  # nothing labelled: background only, empty box
        img = _photometric(img, rng) if cfg.photometric else img
        return RenderResult(img, out_kpts, np.zeros(4), 0.0)

    q, side, theta = _place(np.asarray(keypoints, np.float64)[lab], rng, cfg)
    r = _marker_radius(q, s)
    max_scale = max(style.marker_scale[i] for i in lab)
    # how far the drawing reaches beyond the keypoints (body pad is bounded by 2.5 r + 0.5)
    reach = max(r * max_scale + 1.0, style.limb_width * r / 2 + 2.0,
                (2.5 * r + 0.5) if style.body_mode else 0.0) + 1.0
    pad = reach + 0.05 * side
    qlo, qhi = q.min(0), q.max(0)
    box = (qhi - qlo) + 2 * pad
    off = np.empty(2)
    for d in range(2):
        room = s - box[d]
        off[d] = rng.uniform(0, room) if room > 0 else room / 2
    pts = q - qlo + pad + off                         # (N, 2) labelled keypoints in pixels
    pts = np.clip(pts, 0.0, s - 1.0)

    pos = {int(i): j for j, i in enumerate(lab)}
    links = [(pos[a], pos[b]) for a, b in skeleton if a in pos and b in pos and a != b]
    _body(img, pts, links, style, rng, r, theta)
    _limbs(img, pts, links, style, rng, r)
    _distractors(img, rng, pts, style, r,
                 int(rng.integers(cfg.distractor_range[0], cfg.distractor_range[1] + 1)))
    for j, i in enumerate(lab):
        draw_marker(img, pts[j, 0], pts[j, 1], r * style.marker_scale[i], style.marker_ids[i])
    if cfg.occluder_prob > 0 and rng.random() < cfg.occluder_prob:
        _occluders(img, rng, pts, side, int(rng.integers(1, cfg.max_occluders + 1)))
    if cfg.photometric:
        img = _photometric(img, rng)

    out_kpts[lab, 0:2] = pts
    out_kpts[lab, 2] = vis[lab]
    x0, y0 = np.maximum(pts.min(0) - pad, 0.0)
    x1, y1 = np.minimum(pts.max(0) + pad, float(s))
    bbox = np.array([x0, y0, x1 - x0, y1 - y0])
    return RenderResult(img, out_kpts, bbox, r)
