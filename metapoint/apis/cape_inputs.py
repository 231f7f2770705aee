"""User inputs for CAPE inference on one's own images: support specs, queries, predictions.

The reusable layer under ``demo/cape_demo.py`` (and any other front end): parse and validate a
support description, load query images, run a model on them and turn the predictions into JSON.

A support is described by a JSON file (or the same content as a dict)::

    {"image": "cat.jpg",                  # relative to the JSON file's folder, or absolute
     "keypoints": [[x, y], ...],          # or [x, y, v]; v > 0 annotated, v = 0 ignored
     "names": ["nose", ...],              # optional, one per keypoint
     "skeleton": [[0, 1], ...],           # optional links, 0-indexed keypoint pairs
     "bbox": [x, y, w, h]}                # optional object box; default: the keypoints' box

Coordinate convention everywhere in this module: image pixels of the ORIGINAL image, x to the
right, y down, origin at the top-left corner of the top-left pixel (OpenCV / COCO convention);
boxes are ``[x, y, w, h]`` with (x, y) the top-left corner. Images are BGR uint8 ``[H, W, 3]``
(OpenCV order; convert RGB arrays with ``img[..., ::-1]`` first).

Every problem with the input raises :class:`CapeInputError` (a ``ValueError``) whose message
starts with the file (or ``<dict>`` / ``<array>``) and names the field.
"""
from __future__ import annotations

import json
import os
import os.path as osp
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import cv2
import numpy as np
import torch

__all__ = ['CapeInputError', 'SupportSpec', 'check_supports', 'load_query_bboxes',
           'load_query_image', 'load_support_spec', 'model_max_kpt_num', 'parse_bbox',
           'predict_cape', 'predictions_to_json', 'read_image', 'render_cape_overlay']

PathLike = Union[str, os.PathLike]
ImageInput = Union[PathLike, np.ndarray]


class CapeInputError(ValueError):
    """Bad user input for CAPE inference.

    Attributes:
        source: the file the problem is in (``'<dict>'`` for an in-memory spec).
        field: the field of that file (``'image'``, ``'keypoints'``, ``'keypoints[3]'``,
            ``'bbox'``, ...).
    """

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = str(source)
        self.field = field
        self.problem = problem
        super().__init__(f'{self.source}: field {field!r}: {problem}')


@dataclass
class SupportSpec:
    """One validated support (shot).

    Attributes:
        image: BGR uint8 ``[H, W, 3]``.
        image_path: the image file (absolute), or None when the image was given as an array.
        keypoints: float32 ``[K, 2]`` (x, y) in image pixels (invisible ones as given, or 0).
        visible: float32 ``[K]``, 1 for an annotated keypoint, 0 for one to ignore.
        names: K keypoint names, or None.
        skeleton: 0-indexed links ``[[i, j], ...]`` (each index < K).
        bbox: float32 ``[4]`` object box ``[x, y, w, h]`` in image pixels, or None (the model
            then crops around the annotated keypoints' tight box).
        source: where the spec came from (the JSON file, or ``'<dict>'``), used in errors.
    """
    image: np.ndarray
    image_path: Optional[str]
    keypoints: np.ndarray
    visible: np.ndarray
    names: Optional[List[str]] = None
    skeleton: List[List[int]] = field(default_factory=list)
    bbox: Optional[np.ndarray] = None
    source: str = '<dict>'

    @property
    def num_kpts(self) -> int:
        """K, the number of keypoints."""
        return int(len(self.keypoints))

    def keypoints_xyv(self) -> np.ndarray:
        """float32 ``[K, 3]``: x, y (image pixels) and visibility 0 / 1."""
        return np.concatenate([self.keypoints, self.visible[:, None]], 1).astype(np.float32)

    def crop_bbox(self) -> np.ndarray:
        """The box the model crops: ``bbox``, or the annotated keypoints' tight box
        ``[x_min, y_min, x_max - x_min + 1, y_max - y_min + 1]``; float32 ``[4]``."""
        if self.bbox is not None:
            return self.bbox
        pts = self.keypoints[self.visible > 0]
        lo, hi = pts.min(0), pts.max(0)
        return np.array([lo[0], lo[1], hi[0] - lo[0] + 1, hi[1] - lo[1] + 1], np.float32)


# ---------------------------------------------------------------------------------- images
def read_image(path: PathLike, source: Optional[str] = None, field: str = 'image') -> np.ndarray:
    """Decode the image file ``path`` as BGR uint8 ``[H, W, 3]`` (grey / alpha images are
    converted). Missing, empty or undecodable files raise :class:`CapeInputError` naming
    ``source`` (default: the image path) and ``field``."""
    src = str(source if source is not None else path)
    path = str(path)
    if not osp.isfile(path):
        raise CapeInputError(src, field, f'image file not found: {path}')
    try:
        data = np.fromfile(path, dtype=np.uint8)  # also works for non-ASCII paths
    except OSError as e:
        raise CapeInputError(src, field, f'cannot read image file {path}: {e}') from e
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise CapeInputError(src, field, f'not a readable image (empty or unknown format): '
                                         f'{path}')
    return img


def _check_array_image(img: Any, source: str, field: str) -> np.ndarray:
    if not isinstance(img, np.ndarray) or img.ndim not in (2, 3) or \
            (img.ndim == 3 and img.shape[2] not in (1, 3, 4)) or min(img.shape[:2]) < 1:
        shape = getattr(img, 'shape', type(img).__name__)
        raise CapeInputError(source, field, f'expected an image array [H, W, 3] (BGR), got '
                                            f'{shape}')
    if img.dtype != np.uint8:
        raise CapeInputError(source, field, f'expected a uint8 image array, got {img.dtype}')
    if img.ndim == 2 or img.shape[2] == 1:
        img = cv2.cvtColor(img.reshape(img.shape[:2]), cv2.COLOR_GRAY2BGR)
    elif img.shape[2] == 4:
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(img)


def load_query_image(image: ImageInput) -> np.ndarray:
    """A query image as BGR uint8 ``[H, W, 3]``, from a file path or an array (checked).
    Errors (:class:`CapeInputError`) name the file and the field ``'image'``."""
    if isinstance(image, np.ndarray):
        return _check_array_image(image, '<array>', 'image')
    return read_image(image)


# ---------------------------------------------------------------------------------- values
def _number_list(value: Any, source: str, field: str, length: Optional[int] = None
                 ) -> np.ndarray:
    """A flat list of finite real numbers -> float64 array (bools and strings rejected)."""
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise CapeInputError(source, field, f'expected a list of numbers, got '
                                            f'{type(value).__name__}')
    vals = list(value)
    for i, v in enumerate(vals):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer,
                                                                 np.floating)):
            raise CapeInputError(source, f'{field}[{i}]', f'expected a number, got {v!r}')
        if not np.isfinite(v):
            raise CapeInputError(source, f'{field}[{i}]', f'expected a finite number, got {v}')
    if length is not None and len(vals) != length:
        raise CapeInputError(source, field, f'expected {length} numbers, got {len(vals)}')
    return np.asarray(vals, np.float64)


def parse_bbox(value: Any, source: str = '<dict>', field: str = 'bbox',
               image_shape: Optional[Sequence[int]] = None) -> np.ndarray:
    """Validate an object box ``[x, y, w, h]`` (image pixels) -> float32 ``[4]``.

    ``w`` and ``h`` must be > 1 pixel; with ``image_shape`` (H, W) the box must overlap the
    image by more than one pixel in each direction. Errors name ``source`` and ``field``.
    """
    box = _number_list(value, source, field, 4)
    x, y, w, h = box
    if w <= 1 or h <= 1:
        raise CapeInputError(source, field, f'width and height must be > 1 pixel, got '
                                            f'[x, y, w, h] = {box.tolist()}')
    if image_shape is not None:
        img_h, img_w = image_shape[:2]
        if min(x + w, img_w) - max(x, 0) <= 1 or min(y + h, img_h) - max(y, 0) <= 1:
            raise CapeInputError(source, field, f'box [x, y, w, h] = {box.tolist()} does not '
                                                f'overlap the {img_w}x{img_h} image')
    return box.astype(np.float32)


def _parse_keypoints(value: Any, source: str, image_shape: Sequence[int]):
    if not isinstance(value, (list, tuple)) or len(value) == 0:
        raise CapeInputError(source, 'keypoints', 'expected a non-empty list of [x, y] or '
                                                  '[x, y, v]')
    rows = []
    for i, row in enumerate(value):
        if not isinstance(row, (list, tuple)) or len(row) not in (2, 3):
            raise CapeInputError(source, f'keypoints[{i}]', f'expected [x, y] or [x, y, v], '
                                                            f'got {row!r}')
        rows.append(_number_list(row, source, f'keypoints[{i}]'))
    arr = np.stack([r if len(r) == 3 else np.append(r, 1.0) for r in rows])  # [K, 3]
    if (arr[:, 2] < 0).any():
        i = int(np.flatnonzero(arr[:, 2] < 0)[0])
        raise CapeInputError(source, f'keypoints[{i}]', f'visibility must be >= 0, got '
                                                        f'{arr[i, 2]:g}')
    vis = (arr[:, 2] > 0).astype(np.float32)
    if not vis.any():
        raise CapeInputError(source, 'keypoints', 'no keypoint is annotated (every v is 0)')
    img_h, img_w = image_shape[:2]
    for i in np.flatnonzero(vis):
        x, y = arr[i, :2]
        if not (0 <= x <= img_w and 0 <= y <= img_h):
            raise CapeInputError(source, f'keypoints[{i}]', f'({x:g}, {y:g}) is outside the '
                                                            f'{img_w}x{img_h} image')
    return arr[:, :2].astype(np.float32), vis


def _parse_skeleton(value: Any, source: str, num_kpts: int) -> List[List[int]]:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise CapeInputError(source, 'skeleton', f'expected a list of [i, j] pairs, got '
                                                 f'{type(value).__name__}')
    links = []
    for n, link in enumerate(value):
        if not isinstance(link, (list, tuple)) or len(link) != 2 or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in link):
            raise CapeInputError(source, f'skeleton[{n}]', f'expected a pair of integer '
                                                           f'indices [i, j], got {link!r}')
        for v in link:
            if not 0 <= v < num_kpts:
                raise CapeInputError(source, f'skeleton[{n}]', f'index {v} out of range: '
                                     f'keypoints are 0-indexed, 0..{num_kpts - 1}')
        links.append([int(link[0]), int(link[1])])
    return links


def _parse_names(value: Any, source: str, num_kpts: int) -> Optional[List[str]]:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise CapeInputError(source, 'names', 'expected a list of strings')
    if len(value) != num_kpts:
        raise CapeInputError(source, 'names', f'{len(value)} names for {num_kpts} keypoints')
    return [str(v) for v in value]


def _read_json_file(path: Path, what: str) -> Any:
    """The parsed JSON of ``path``; a missing file, a non-UTF-8 file or bad JSON raise
    :class:`CapeInputError` naming the file."""
    source = str(path)
    if not path.is_file():
        raise CapeInputError(source, '(file)', f'{what} JSON file not found')
    try:
        return json.loads(path.read_text(encoding='utf-8'))
    except UnicodeDecodeError as e:
        raise CapeInputError(source, '(file)', f'not a UTF-8 text file: {e}') from e
    except json.JSONDecodeError as e:
        raise CapeInputError(source, '(file)', f'not valid JSON: {e}') from e


def load_query_bboxes(value: Union[None, PathLike, Sequence[Any], Dict[str, Any]],
                      query_paths: Sequence[str],
                      source: str = '--query-bbox') -> List[Optional[np.ndarray]]:
    """One box (or None = whole image) per query, from one of:

    * None: every query uses its whole image;
    * a flat list of numbers, 4 per query in query order (``x y w h x y w h ...``);
    * a JSON file path (or its already-parsed content) holding a list with one entry per query
      (``[x, y, w, h]`` or null), a single ``[x, y, w, h]`` when there is one query, or an
      object mapping a query path (as given, or its file name) to ``[x, y, w, h]`` / null
      (queries not named use their whole image).

    Boxes are only checked for shape here (:func:`predict_cape` checks them against the image).
    Errors (:class:`CapeInputError`) name the JSON file (or ``source``) and the query.
    """
    n = len(query_paths)
    if value is None:
        return [None] * n
    if isinstance(value, (str, os.PathLike)):
        source = str(value)
        value = _read_json_file(Path(value), 'query bbox')
    if isinstance(value, dict):
        unknown = [k for k in value if k not in query_paths and
                   k not in {osp.basename(q) for q in query_paths}]
        if unknown:
            raise CapeInputError(source, unknown[0], 'not one of the query images')
        entries = [value.get(q, value.get(osp.basename(q))) for q in query_paths]
        fields = [q for q in query_paths]
    elif isinstance(value, (list, tuple)):
        flat = len(value) > 0 and all(not isinstance(v, (list, tuple, dict)) and v is not None
                                      for v in value)
        if flat:
            numbers = _number_list(value, source, 'bbox')
            if len(numbers) != 4 * n:
                raise CapeInputError(source, 'bbox', f'{len(numbers)} numbers for {n} '
                                     f'queries: give 4 numbers (x y w h) per query')
            entries = [numbers[4 * i:4 * i + 4].tolist() for i in range(n)]
        elif len(value) != n:
            raise CapeInputError(source, 'bbox', f'{len(value)} boxes for {n} queries: give '
                                                 'one [x, y, w, h] (or null) per query')
        else:
            entries = list(value)
        fields = [f'bbox[{i}] ({q})' for i, q in enumerate(query_paths)]
    else:
        raise CapeInputError(source, 'bbox', f'expected a list or an object, got '
                                             f'{type(value).__name__}')
    return [None if e is None else parse_bbox(e, source, f) for e, f in zip(entries, fields)]


# ---------------------------------------------------------------------------------- supports
def load_support_spec(spec: Union[PathLike, Dict[str, Any]],
                      base_dir: Optional[PathLike] = None) -> SupportSpec:
    """Read and validate one support description (JSON file path or dict; format in the
    module doc).

    Args:
        spec: path of a JSON file, or a dict with the same fields. In a dict, ``"image"`` may
            also be a BGR uint8 array ``[H, W, 3]``.
        base_dir: folder a relative ``"image"`` path is resolved against; default: the JSON
            file's folder (for a dict: the current directory).
    Returns:
        a :class:`SupportSpec` (image decoded, keypoints inside the image, skeleton in range).
    Raises:
        CapeInputError: naming the file and the field: invalid JSON, not an object, missing
            ``image`` / ``keypoints``, wrong shapes, non-numbers, visible keypoints outside the
            image, skeleton index out of range, names of the wrong length, bad bbox, missing or
            unreadable image.
    """
    if isinstance(spec, dict):
        source, data = '<dict>', spec
        folder = Path(base_dir) if base_dir is not None else Path.cwd()
    else:
        path = Path(spec)
        source = str(path)
        data = _read_json_file(path, 'support')
        folder = Path(base_dir) if base_dir is not None else path.resolve().parent
    if not isinstance(data, dict):
        raise CapeInputError(source, '(top level)', f'expected a JSON object, got '
                                                    f'{type(data).__name__}')
    for key in ('image', 'keypoints'):
        if key not in data:
            raise CapeInputError(source, key, 'missing (required fields: "image", '
                                              '"keypoints")')
    unknown = sorted(set(data) - {'image', 'keypoints', 'names', 'skeleton', 'bbox'})
    if unknown:
        raise CapeInputError(source, unknown[0], 'unknown field (allowed: image, keypoints, '
                                                 'names, skeleton, bbox)')
    image_value = data['image']
    if isinstance(image_value, np.ndarray):
        image, image_path = _check_array_image(image_value, source, 'image'), None
    elif isinstance(image_value, (str, os.PathLike)) and str(image_value):
        image_path = str(image_value)
        if not osp.isabs(image_path):
            image_path = str(folder / image_path)
        image_path = osp.abspath(image_path)
        image = read_image(image_path, source, 'image')
    else:
        raise CapeInputError(source, 'image', f'expected an image path string, got '
                                              f'{image_value!r}')
    keypoints, visible = _parse_keypoints(data['keypoints'], source, image.shape)
    k = len(keypoints)
    names = _parse_names(data.get('names'), source, k)
    skeleton = _parse_skeleton(data.get('skeleton'), source, k)
    bbox = None
    if data.get('bbox') is not None:
        bbox = parse_bbox(data['bbox'], source, 'bbox', image.shape)
    out = SupportSpec(image=image, image_path=image_path, keypoints=keypoints, visible=visible,
                      names=names, skeleton=skeleton, bbox=bbox, source=source)
    if bbox is None:
        tight = out.crop_bbox()
        if tight[2] <= 1 or tight[3] <= 1:
            raise CapeInputError(source, 'bbox', 'missing, and the annotated keypoints span '
                                 f'no area (box {tight.tolist()}): give a "bbox" [x, y, w, h]')
    return out


def model_max_kpt_num(model: torch.nn.Module) -> int:
    """The padded keypoint slot count K of ``model`` (its ``max_kpt_num``, else the config's
    test dataset ``max_kpt_num``, else 70): the most keypoints a support may have."""
    k = getattr(model, 'max_kpt_num', None)
    if k:
        return int(k)
    cfg = getattr(model, 'cfg', None)
    if cfg is not None:
        k = cfg.get('model', {}).get('max_kpt_num') or \
            cfg.test_dataloader.dataset.get('max_kpt_num')
    return int(k or 70)


def check_supports(supports: Sequence[SupportSpec], max_kpt_num: Optional[int] = None) -> None:
    """Check that the shots of one episode agree: at least one, same keypoint count, same
    names and skeleton where given, and K <= ``max_kpt_num``. Raises :class:`CapeInputError`
    naming the offending file and field."""
    if len(supports) == 0:
        raise CapeInputError('<supports>', 'supports', 'at least one support is needed')
    first = supports[0]
    for s in supports[1:]:
        if s.num_kpts != first.num_kpts:
            raise CapeInputError(s.source, 'keypoints', f'{s.num_kpts} keypoints, but '
                                 f'{first.source} has {first.num_kpts}: all supports (shots) '
                                 'must have the same keypoints')
        if s.names is not None and first.names is not None and s.names != first.names:
            raise CapeInputError(s.source, 'names', f'differ from the names of {first.source}')
        if s.skeleton and first.skeleton and \
                sorted(map(tuple, s.skeleton)) != sorted(map(tuple, first.skeleton)):
            raise CapeInputError(s.source, 'skeleton', f'differs from the skeleton of '
                                                       f'{first.source}')
    if max_kpt_num is not None and first.num_kpts > max_kpt_num:
        raise CapeInputError(first.source, 'keypoints', f'{first.num_kpts} keypoints, but the '
                             f'model takes at most max_kpt_num={max_kpt_num}')


def episode_names(supports: Sequence[SupportSpec]) -> Optional[List[str]]:
    """The keypoint names of the first support that has them, or None."""
    return next((s.names for s in supports if s.names is not None), None)


def annotated_in_any(supports: Sequence[SupportSpec]) -> np.ndarray:
    """bool ``[K]``: keypoint annotated (v > 0) in at least one support. A keypoint annotated in
    no support still gets a prediction, but it carries no information."""
    return np.stack([s.visible > 0 for s in supports]).any(0)


def episode_skeleton(supports: Sequence[SupportSpec]) -> List[List[int]]:
    """The skeleton of the first support that has one (shots agree, :func:`check_supports`)."""
    return next((s.skeleton for s in supports if s.skeleton), [])


# ---------------------------------------------------------------------------------- predict
def predict_cape(model: torch.nn.Module, supports: Sequence[SupportSpec],
                 query_images: Sequence[ImageInput],
                 query_bboxes: Optional[Sequence[Optional[Sequence[float]]]] = None,
                 batch_size: int = 8) -> List[np.ndarray]:
    """Predict the supports' keypoints on every query image.

    Args:
        model: from :func:`~metapoint.apis.init_estimator` (carries its config as
            ``model.cfg``).
        supports: the shots (:func:`load_support_spec`), checked with :func:`check_supports`.
        query_images: paths or BGR uint8 ``[H, W, 3]`` arrays.
        query_bboxes: per query ``[x, y, w, h]`` (image pixels) or None for the whole image;
            None: every query uses its whole image.
        batch_size: queries per model call (results do not depend on it).
    Returns:
        one float32 ``[K, 2]`` array (x, y in that query's image pixels) per query.
    """
    from .inference import inference_episode
    check_supports(supports, model_max_kpt_num(model))
    if query_bboxes is None:
        query_bboxes = [None] * len(query_images)
    if len(query_bboxes) != len(query_images):
        raise CapeInputError('<queries>', 'bbox', f'{len(query_bboxes)} boxes for '
                             f'{len(query_images)} query images')
    images, boxes = [], []
    for img, box in zip(query_images, query_bboxes):
        arr = load_query_image(img)
        source = '<array>' if isinstance(img, np.ndarray) else str(img)
        images.append(arr)
        boxes.append(None if box is None else parse_bbox(box, source, 'bbox', arr.shape))
    kwargs = dict(support_imgs=[s.image for s in supports],
                  support_keypoints=[s.keypoints_xyv() for s in supports],
                  support_bboxes=[s.crop_bbox() for s in supports],
                  skeleton=episode_skeleton(supports))
    out: List[np.ndarray] = []
    step = max(1, int(batch_size))
    for start in range(0, len(images), step):
        pred = inference_episode(model, query_imgs=images[start:start + step],
                                 query_bboxes=boxes[start:start + step], **kwargs)
        out.extend(np.asarray(p, np.float32) for p in pred)
    return out


def predictions_to_json(predictions: Sequence[np.ndarray], supports: Sequence[SupportSpec],
                        query_names: Sequence[str], query_shapes: Sequence[Sequence[int]],
                        query_bboxes: Optional[Sequence[Optional[Sequence[float]]]] = None
                        ) -> dict:
    """A JSON-serialisable record of the predictions.

    Args:
        predictions: per query ``[K, 2]`` (x, y) in query image pixels (:func:`predict_cape`).
        supports: the shots used.
        query_names: per query, its path (or any label).
        query_shapes: per query image ``(H, W[, C])``.
        query_bboxes: per query the box used, or None (whole image).
    Returns:
        ``{"num_keypoints": K, "names": [...] | null, "skeleton": [[i, j], ...],
        "annotated": [bool] * K, "supports": [image path | null, ...],
        "queries": [{"image": ..., "image_size": [W, H], "bbox": [x, y, w, h],
        "keypoints": [[x, y], ...], "inside_image": [bool, ...]}, ...]}``.
        Keypoints are in query image pixels (rounded to 0.01); ``bbox`` is the whole image
        when none was given; ``annotated[k]`` is False for a keypoint annotated in no support
        (its prediction carries no information); with names, each query also has
        ``"named_keypoints": {name: [x, y]}``.
    """
    names = episode_names(supports)
    boxes = query_bboxes if query_bboxes is not None else [None] * len(predictions)
    queries = []
    for pred, name, shape, box in zip(predictions, query_names, query_shapes, boxes):
        pred = np.asarray(pred, np.float64).reshape(-1, 2)
        h, w = int(shape[0]), int(shape[1])
        box = [0.0, 0.0, float(w), float(h)] if box is None else [float(v) for v in box]
        inside = (pred[:, 0] >= 0) & (pred[:, 0] <= w) & (pred[:, 1] >= 0) & (pred[:, 1] <= h)
        entry = dict(image=str(name), image_size=[w, h], bbox=box,
                     keypoints=[[round(float(x), 2), round(float(y), 2)] for x, y in pred],
                     inside_image=[bool(v) for v in inside])
        if names is not None:
            entry['named_keypoints'] = {n: p for n, p in zip(names, entry['keypoints'])}
        queries.append(entry)
    return dict(num_keypoints=int(supports[0].num_kpts) if supports else 0, names=names,
                skeleton=episode_skeleton(supports),
                annotated=[bool(v) for v in annotated_in_any(supports)] if supports else [],
                supports=[s.image_path for s in supports], queries=queries)


# ---------------------------------------------------------------------------------- drawing
def render_cape_overlay(supports: Sequence[SupportSpec], query_image: np.ndarray,
                        prediction: np.ndarray, query_bbox: Optional[Sequence[float]] = None,
                        height: int = 384, query_caption: str = 'query') -> np.ndarray:
    """One picture: every support (cropped around its box, grown by 25 %) with its annotated
    keypoints and skeleton, then the query image with the predicted keypoints ``[K, 2]`` (query
    image pixels; those annotated in no support are not drawn) and skeleton, and its box when
    given. Colours follow the keypoint index.

    Returns:
        BGR uint8 ``[height, W_total, 3]``.
    """
    from metapoint.visualization import draw_keypoints, resize_to_height, tile_images
    skeleton = episode_skeleton(supports)
    radius = max(3, height // 90)
    thickness = max(1, height // 200)
    tiles, captions = [], []
    for i, s in enumerate(supports):
        x, y, w, h = (float(v) for v in s.crop_bbox())
        img_h, img_w = s.image.shape[:2]
        x1 = int(max(0, np.floor(x - 0.25 * w)))
        y1 = int(max(0, np.floor(y - 0.25 * h)))
        x2 = int(min(img_w, np.ceil(x + 1.25 * w)))
        y2 = int(min(img_h, np.ceil(y + 1.25 * h)))
        crop, scale = resize_to_height(s.image[y1:y2, x1:x2], height)
        pts = (s.keypoints - np.array([x1, y1], np.float32)) * scale
        tiles.append(draw_keypoints(crop, pts, s.visible, skeleton, radius, thickness))
        captions.append(f'support {i}')
    img, scale = resize_to_height(query_image, height)
    if query_bbox is not None:
        x, y, w, h = (float(v) * scale for v in query_bbox)
        cv2.rectangle(img, (int(round(x)), int(round(y))), (int(round(x + w)), int(round(y + h))),
                      (255, 255, 255), thickness, cv2.LINE_AA)
    pred = np.asarray(prediction, np.float64).reshape(-1, 2) * scale
    shown = annotated_in_any(supports).astype(np.float32)  # no support: nothing to show
    tiles.append(draw_keypoints(img, pred, shown, skeleton, radius, thickness))
    captions.append(query_caption)
    return tile_images(tiles, height=height, captions=captions)
