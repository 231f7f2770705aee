"""Draw keypoints and skeletons on images (OpenCV, BGR uint8), and tile episodes."""
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np


def keypoint_colors(num: int) -> np.ndarray:
    """[num, 3] BGR uint8 colours spread over the hue circle, stable per keypoint index."""
    hues = (np.arange(num) * 179.0 / max(num, 1)).astype(np.uint8)
    hsv = np.stack([hues, np.full(num, 220, np.uint8), np.full(num, 255, np.uint8)], 1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0]


def draw_keypoints(img: np.ndarray, keypoints: np.ndarray, visible: Optional[np.ndarray] = None,
                   skeleton: Sequence[Sequence[int]] = (), radius: int = 3, thickness: int = 1,
                   marker: str = 'circle') -> np.ndarray:
    """Return a copy of ``img`` with keypoints [K, 2] (pixels) and 0-indexed skeleton links.

    Keypoints with ``visible[k] <= 0`` are not drawn; colours follow the keypoint index, so the
    same keypoint has the same colour in the support and the query. ``marker`` 'circle' (filled)
    or 'cross' (e.g. for ground truth next to predictions).
    """
    out = np.ascontiguousarray(img.copy())
    kpts = np.asarray(keypoints, dtype=np.float64)
    vis = np.ones(len(kpts)) if visible is None else np.asarray(visible)
    colors = keypoint_colors(len(kpts))
    for a, b in skeleton:
        if a < len(kpts) and b < len(kpts) and vis[a] > 0 and vis[b] > 0:
            pa = tuple(int(round(v)) for v in kpts[a])
            pb = tuple(int(round(v)) for v in kpts[b])
            cv2.line(out, pa, pb, (200, 200, 200), thickness, cv2.LINE_AA)
    for k, (x, y) in enumerate(kpts):
        if vis[k] <= 0 or not np.isfinite([x, y]).all():
            continue
        c = tuple(int(v) for v in colors[k])
        p = (int(round(x)), int(round(y)))
        if marker == 'cross':
            cv2.drawMarker(out, p, c, cv2.MARKER_CROSS, 2 * radius + 2, thickness, cv2.LINE_AA)
        else:
            cv2.circle(out, p, radius, c, -1, cv2.LINE_AA)
    return out


def tile_images(images: List[np.ndarray], height: int = 256,
                captions: Optional[List[str]] = None) -> np.ndarray:
    """Resize every image to ``height`` (keeping aspect) and concatenate them horizontally."""
    tiles = []
    for i, img in enumerate(images):
        scale = height / img.shape[0]
        tile = cv2.resize(img, (max(1, int(round(img.shape[1] * scale))), height))
        if captions:
            cv2.putText(tile, captions[i], (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                        (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    return np.concatenate(tiles, axis=1)


def crop_box(keypoints: np.ndarray, visible: np.ndarray, shape: Tuple[int, int],
             margin: float = 0.25) -> Tuple[int, int, int, int]:
    """Integer (x1, y1, x2, y2) around the visible keypoints, grown by ``margin``, in the image."""
    pts = keypoints[np.asarray(visible) > 0]
    if len(pts) == 0:
        return 0, 0, shape[1], shape[0]
    lo, hi = pts.min(0), pts.max(0)
    pad = (hi - lo).max() * margin + 8
    x1, y1 = np.maximum(0, np.floor(lo - pad)).astype(int)
    x2 = int(min(shape[1], np.ceil(hi[0] + pad)))
    y2 = int(min(shape[0], np.ceil(hi[1] + pad)))
    return int(x1), int(y1), x2, y2


def resize_to_height(img: np.ndarray, height: int) -> Tuple[np.ndarray, float]:
    """``img`` resized to ``height`` pixels (aspect kept; area interpolation when shrinking) and
    the scale factor applied to pixel coordinates."""
    scale = height / img.shape[0]
    size = (max(1, int(round(img.shape[1] * scale))), int(height))
    interp = cv2.INTER_LINEAR if scale >= 1 else cv2.INTER_AREA
    return cv2.resize(img, size, interpolation=interp), scale
