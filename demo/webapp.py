"""Web demo of category-agnostic pose estimation (Gradio, runs locally in the browser).

    python demo/webapp.py [--config CFG --checkpoint CKPT ...] [--host 127.0.0.1] [--port 7860]
                          [--device cpu|cuda] [--examples IMG_OR_DIR ...]

Give a support image and its keypoints (click them on the image, or load a support JSON), one or
more query images and a model; "Run" predicts the support's keypoints on every query, draws the
support (keypoints + skeleton) beside each query (predictions) and offers the predictions JSON
and the picture for download. Each ``--config``/``--checkpoint`` pair becomes an entry of the
model list; a config + checkpoint path can also be typed in the page. docs/webapp.md has more.
"""
from __future__ import annotations

import argparse
import ipaddress
import json
import os
import os.path as osp
import re
import sys
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

os.environ.setdefault('GRADIO_ANALYTICS_ENABLED', 'False')  # no calls home from a local demo
sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))

import cv2  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from metapoint.apis import (CapeInputError, init_estimator, load_query_image,  # noqa: E402
                            load_support_spec, predict_cape, predictions_to_json)
from metapoint.visualization import draw_keypoints, tile_images  # noqa: E402

#: the model-list entry that uses the config / checkpoint path fields
CUSTOM_MODEL = 'Custom (config + checkpoint paths below)'
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.webp', '.tif', '.tiff')
#: height in pixels of each picture in the result (support and query tiles)
RESULT_HEIGHT = 320


@dataclass(frozen=True)
class ModelEntry:
    """One model of the list: a config file and its checkpoint (None: the config's weights)."""
    config: str
    checkpoint: Optional[str]

    @property
    def label(self) -> str:
        cfg = osp.splitext(osp.basename(self.config))[0]
        ckpt = osp.basename(self.checkpoint) if self.checkpoint else 'no checkpoint'
        return f'{cfg} [{ckpt}]'


# ------------------------------------------------------------------------------ input parsing
def parse_skeleton(text: Optional[str], num_kpts: int) -> List[List[int]]:
    """``"0-1, 1-2"`` (also ``0 1; 1 2`` or ``[[0, 1], [1, 2]]``) -> [[0, 1], [1, 2]], checked
    against ``num_kpts``; raises ``gr.Error`` naming the Skeleton field on bad text."""
    text = (text or '').strip()
    if not text:
        return []
    if text.startswith('['):
        try:
            pairs = json.loads(text)
        except json.JSONDecodeError as exc:
            raise gr.Error(f'Skeleton: not valid JSON ({exc.msg}); write pairs like "0-1, 1-2"')
        if not isinstance(pairs, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) for v in p)
                for p in pairs):
            raise gr.Error('Skeleton: JSON must be a list of [i, j] integer pairs')
    else:
        pairs = []
        for part in re.split(r'[,;\n]+', text):
            part = part.strip()
            if not part:
                continue
            m = re.fullmatch(r'(\d+)\s*(?:-|\s|:)\s*(\d+)', part)
            if m is None:
                raise gr.Error(f'Skeleton: cannot read "{part}"; write pairs of 0-based keypoint '
                               'indices like "0-1, 1-2"')
            pairs.append([int(m.group(1)), int(m.group(2))])
    for a, b in pairs:
        for v in (a, b):
            if not 0 <= v < num_kpts:
                raise gr.Error(f'Skeleton: keypoint index {v} in "{a}-{b}" is out of range; the '
                               f'support has {num_kpts} keypoints (indices 0..{num_kpts - 1})')
        if a == b:
            raise gr.Error(f'Skeleton: "{a}-{b}" links a keypoint to itself')
    return pairs


def skeleton_text(pairs: Sequence[Sequence[int]]) -> str:
    return ', '.join(f'{int(a)}-{int(b)}' for a, b in pairs)


def _paths(files) -> List[str]:
    """Uploaded files (one path, a list of paths or of file objects, or None) -> paths."""
    if not files:
        return []
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    return [str(getattr(f, 'path', None) or getattr(f, 'name', None) or f) for f in files]


def _read_image_rgb(path: str, field: str) -> np.ndarray:
    try:
        return cv2.cvtColor(load_query_image(path), cv2.COLOR_BGR2RGB)
    except CapeInputError as exc:
        raise gr.Error(f'{field}: "{osp.basename(str(path))}": {exc.problem}')


def _as_rgb(img: np.ndarray, field: str) -> np.ndarray:
    """An uploaded image (H x W, H x W x 3 or 4, any numeric type) -> RGB uint8."""
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or min(arr.shape[:2]) < 1:
        raise gr.Error(f'{field}: expected a colour or grey image, got an array of shape '
                       f'{tuple(arr.shape)}')
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def _marker_radius(shape: Tuple[int, ...]) -> int:
    return max(4, int(round(max(shape[:2]) / 100)))


# ------------------------------------------------------------------------------ drawing
def lenient_skeleton(text: Optional[str]) -> List[List[int]]:
    """The links of the skeleton field for drawing while editing: links to keypoints not clicked
    yet are kept (drawn once they exist); unreadable text gives no links (Run reports it)."""
    try:
        return parse_skeleton(text, 10 ** 6)
    except gr.Error:
        return []


def draw_support(state: dict, skeleton: Sequence[Sequence[int]] = ()) -> Optional[np.ndarray]:
    """The support image (RGB) with its keypoints numbered and its skeleton, for clicking on."""
    img = state.get('image')
    if img is None:
        return None
    kpts = np.asarray(state['keypoints'], np.float64).reshape(-1, 2)
    visible = state.get('visible')
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if len(kpts):
        radius = _marker_radius(img.shape)
        # links to keypoints not clicked yet are skipped by draw_keypoints
        bgr = draw_keypoints(bgr, kpts, visible, skeleton=skeleton, radius=radius,
                             thickness=max(1, radius // 2))
        scale = max(0.35, radius / 8)
        for k, (x, y) in enumerate(kpts):
            if visible is not None and visible[k] <= 0:
                continue
            org = (int(round(x)) + radius + 1, int(round(y)) - radius - 1)
            cv2.putText(bgr, str(k), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0),
                        max(2, radius // 2 + 1), cv2.LINE_AA)
            cv2.putText(bgr, str(k), org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255),
                        max(1, radius // 4), cv2.LINE_AA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _scaled_tile(img_bgr: np.ndarray, kpts: np.ndarray, visible: Optional[np.ndarray],
                 skeleton: Sequence[Sequence[int]], height: int) -> np.ndarray:
    """``img`` resized to ``height`` with the keypoints drawn after resizing (exact colours)."""
    scale = height / img_bgr.shape[0]
    width = max(1, int(round(img_bgr.shape[1] * scale)))
    tile = cv2.resize(img_bgr, (width, height), interpolation=cv2.INTER_AREA)
    return draw_keypoints(tile, np.asarray(kpts, np.float64) * scale, visible, skeleton,
                          radius=5, thickness=2)


def draw_result(support_bgr: np.ndarray, support_kpts: np.ndarray, support_vis: np.ndarray,
                skeleton: Sequence[Sequence[int]], queries: Sequence[Tuple[str, np.ndarray]],
                predictions: Sequence[np.ndarray], height: int = RESULT_HEIGHT) -> np.ndarray:
    """One row per query: the support with its keypoints, then the query with the predictions,
    rows stacked (padded to the widest with black). BGR uint8."""
    support_tile = _scaled_tile(support_bgr, support_kpts, support_vis, skeleton, height)
    rows = []
    for i, ((name, img), pred) in enumerate(zip(queries, predictions)):
        query_tile = _scaled_tile(img, pred, None, skeleton, height)
        rows.append(tile_images([support_tile, query_tile], height=height,
                                captions=['support', f'query {i}: {name}'[:40]]))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    return np.concatenate(rows, axis=0)


# ------------------------------------------------------------------------------ models
class ModelCache:
    """Builds models on first use and keeps the ``size`` most recently used ones."""

    def __init__(self, device: str = 'cpu', size: int = 2):
        self.device, self.size = device, size
        self._models: 'OrderedDict[Tuple[str, Optional[str]], object]' = OrderedDict()
        self._lock = threading.Lock()

    def get(self, entry: ModelEntry):
        key = (osp.abspath(entry.config),
               osp.abspath(entry.checkpoint) if entry.checkpoint else None)
        with self._lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            try:
                model = init_estimator(key[0], key[1], device=self.device)
            except Exception as exc:  # a bad config / checkpoint: show it in the page
                raise gr.Error(f'Model: cannot build "{entry.label}": {type(exc).__name__}: '
                               f'{exc}') from exc
            self._models[key] = model
            while len(self._models) > self.size:
                self._models.popitem(last=False)
            return model


def check_model_paths(config: Optional[str], checkpoint: Optional[str]) -> ModelEntry:
    """Validate a typed config + checkpoint pair; errors name the field."""
    config = (config or '').strip()
    checkpoint = (checkpoint or '').strip() or None
    if not config:
        raise gr.Error('Config path: empty; type the path of a model config (.py) or pick a '
                       'model from the list')
    if not osp.isfile(config):
        raise gr.Error(f'Config path: no such file "{config}"')
    if not config.endswith('.py'):
        raise gr.Error(f'Config path: "{config}" is not a .py config file')
    if checkpoint is None:
        raise gr.Error('Checkpoint path: empty; type the path of the trained weights (.pth) '
                       'that go with the config')
    if not osp.isfile(checkpoint):
        raise gr.Error(f'Checkpoint path: no such file "{checkpoint}"')
    return ModelEntry(config, checkpoint)


# ------------------------------------------------------------------------------ the app
def empty_support() -> dict:
    """The support being edited: RGB image, file name, clicked keypoints [[x, y], ...],
    visibility per keypoint (None: all visible), names and box (from a support JSON)."""
    return dict(image=None, name='', keypoints=[], visible=None, names=None, bbox=None)


def keypoint_listing(state: dict) -> str:
    kpts = state.get('keypoints') or []
    if state.get('image') is None:
        return 'no support image yet'
    if not kpts:
        return 'no keypoints yet: click on the support image'
    names = state.get('names') or []
    visible = state.get('visible')
    lines = [f'{len(kpts)} keypoint(s)']
    for k, (x, y) in enumerate(kpts):
        name = f' {names[k]}' if k < len(names) and names[k] != str(k) else ''
        hidden = ' (not annotated)' if visible is not None and visible[k] <= 0 else ''
        lines.append(f'{k}{name}: {x:g}, {y:g}{hidden}')
    return '\n'.join(lines)


class WebDemo:
    """The callbacks (plain Python, testable without a browser) and the page built from them."""

    def __init__(self, models: Sequence[ModelEntry] = (), device: str = 'cpu',
                 allow_custom_model: bool = True, examples: Sequence[str] = (),
                 out_dir: Optional[str] = None):
        self.models: 'OrderedDict[str, ModelEntry]' = OrderedDict()
        for entry in models:  # unique labels for the model list
            label, n = entry.label, 1
            while label in self.models:
                n += 1
                label = f'{entry.label} ({n})'
            self.models[label] = entry
        self.allow_custom_model = allow_custom_model
        self.examples = list(examples)
        self.cache = ModelCache(device)
        self.out_dir = out_dir or tempfile.mkdtemp(prefix='cape_webapp_')
        os.makedirs(self.out_dir, exist_ok=True)
        self._run_counter = 0
        self._counter_lock = threading.Lock()

    # ---------------------------------------------------------------- model list
    def model_choices(self) -> List[str]:
        return list(self.models) + ([CUSTOM_MODEL] if self.allow_custom_model else [])

    def resolve_model(self, choice: Optional[str], config: Optional[str],
                      checkpoint: Optional[str]) -> ModelEntry:
        if choice == CUSTOM_MODEL and self.allow_custom_model:
            return check_model_paths(config, checkpoint)
        if choice in self.models:
            return self.models[choice]
        if not choice:
            raise gr.Error('Model: no model chosen; pick one from the list'
                           + (' or type a config and checkpoint path' if
                              self.allow_custom_model else ''))
        raise gr.Error(f'Model: unknown choice "{choice}"')

    # ---------------------------------------------------------------- support callbacks
    def on_support_image(self, image) -> Tuple[dict, Optional[np.ndarray], str]:
        """A new support image (a file path or an array): keypoints cleared."""
        state = empty_support()
        if image is None:
            return state, None, keypoint_listing(state)
        if isinstance(image, str):
            state['name'] = osp.basename(image)
            state['image'] = _read_image_rgb(image, 'Support image')
        else:
            state['image'] = _as_rgb(image, 'Support image')
            state['name'] = 'support'
        return state, draw_support(state), keypoint_listing(state)

    def on_support_click(self, state: dict, skeleton_field: str, evt: gr.SelectData):
        """A click on the support image adds a keypoint at the clicked pixel."""
        return self.add_keypoint(state, evt.index, skeleton_field)

    def add_keypoint(self, state: dict, index, skeleton_field: str = ''
                     ) -> Tuple[dict, Optional[np.ndarray], str]:
        """Append the keypoint ``index`` = (x, y) in image pixels."""
        state = dict(state or empty_support())
        if state.get('image') is None:
            raise gr.Error('Support image: upload a support image before clicking keypoints')
        if not isinstance(index, (list, tuple)) or len(index) != 2:
            raise gr.Error(f'Support image: a click gave no pixel position ({index!r}); click '
                           'inside the picture')
        h, w = state['image'].shape[:2]
        x, y = (float(v) for v in index)
        if not (0 <= x < w and 0 <= y < h):
            raise gr.Error(f'Support image: click ({x:g}, {y:g}) is outside the {w}x{h} image')
        state['keypoints'] = list(state['keypoints']) + [[x, y]]
        if state.get('visible') is not None:
            state['visible'] = list(state['visible']) + [1.0]
        return state, draw_support(state, lenient_skeleton(skeleton_field)), \
            keypoint_listing(state)

    def on_undo(self, state: dict, skeleton_field: str = ''):
        """Remove the last keypoint."""
        state = dict(state or empty_support())
        state['keypoints'] = list(state['keypoints'])[:-1]
        if state.get('visible') is not None:
            state['visible'] = list(state['visible'])[:len(state['keypoints'])]
        return state, draw_support(state, lenient_skeleton(skeleton_field)), \
            keypoint_listing(state)

    def on_clear(self, state: dict):
        """Remove every keypoint (and the names / box a support JSON brought)."""
        state = dict(state or empty_support())
        state.update(keypoints=[], visible=None, names=None, bbox=None)
        return state, draw_support(state), keypoint_listing(state)

    def on_skeleton(self, state: dict, text: str):
        """Redraw the support with the typed skeleton."""
        return draw_support(state or empty_support(), lenient_skeleton(text))

    def on_support_json(self, files, state: dict):
        """Load keypoints (+ names, skeleton, bbox and usually the image) from a support JSON.

        ``files``: the uploaded paths: one ``.json`` and optionally the image it names. The
        image is, in this order: the uploaded image of the same file name (or the only uploaded
        image), the JSON's ``image`` path if that file exists here, the current support image.
        """
        files = _paths(files)
        jsons = [f for f in files if f.lower().endswith('.json')]
        if len(jsons) != 1:
            raise gr.Error(f'Support JSON: give exactly one .json file (got {len(jsons)}), '
                           'optionally together with the image it names')
        label = osp.basename(jsons[0])
        try:
            with open(jsons[0], encoding='utf-8') as f:
                spec = json.load(f)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise gr.Error(f'Support JSON: cannot read "{label}": {exc}')
        if not isinstance(spec, dict):
            raise gr.Error(f'Support JSON: "{label}" must hold an object with "image" and '
                           '"keypoints"')
        spec = dict(spec)
        image_field = spec.get('image')
        uploads = {osp.basename(f): f for f in files if f not in jsons}
        current = (state or {}).get('image')
        name = osp.basename(str(image_field)) if isinstance(image_field, str) else 'support'
        if isinstance(image_field, str) and osp.basename(image_field) in uploads:
            spec['image'] = uploads[osp.basename(image_field)]
        elif len(uploads) == 1:
            spec['image'] = next(iter(uploads.values()))
            name = osp.basename(spec['image'])
        elif isinstance(image_field, str) and osp.isfile(image_field):
            pass
        elif current is not None:
            spec['image'] = cv2.cvtColor(current, cv2.COLOR_RGB2BGR)
            name = (state or {}).get('name') or 'support'
        else:
            raise gr.Error(f'Support JSON: its image "{image_field}" is not on the server; '
                           'upload the image together with the JSON, or upload the support '
                           'image first')
        try:
            support = load_support_spec(spec)
        except CapeInputError as exc:
            raise gr.Error(f'Support JSON: "{label}", field {exc.field!r}: {exc.problem}')
        new = empty_support()
        new['image'] = cv2.cvtColor(support.image, cv2.COLOR_BGR2RGB)
        new['name'] = name
        new['keypoints'] = [[float(x), float(y)] for x, y in support.keypoints]
        new['visible'] = [float(v) for v in support.visible]
        new['names'] = list(support.names) if support.names else None
        new['bbox'] = None if support.bbox is None else [float(v) for v in support.bbox]
        return new, draw_support(new, support.skeleton), keypoint_listing(new), \
            skeleton_text(support.skeleton)

    # ---------------------------------------------------------------- run
    @staticmethod
    def _query_images(files) -> List[Tuple[str, np.ndarray]]:
        files = _paths(files)
        if not files:
            raise gr.Error('Query images: upload at least one query image')
        out = []
        for path in files:
            try:
                out.append((osp.basename(path), load_query_image(path)))
            except CapeInputError as exc:
                raise gr.Error(f'Query images: "{osp.basename(path)}": {exc.problem}')
        return out

    @staticmethod
    def _support_spec(state: dict, skeleton: List[List[int]]):
        """The clicked (or loaded) support as a validated ``SupportSpec``."""
        kpts = np.asarray(state['keypoints'], np.float64).reshape(-1, 2)
        visible = state.get('visible')
        if visible is None or len(visible) != len(kpts):
            visible = [1.0] * len(kpts)
        names = state.get('names')
        spec = dict(image=cv2.cvtColor(state['image'], cv2.COLOR_RGB2BGR),
                    keypoints=[[float(x), float(y), float(v)]
                               for (x, y), v in zip(kpts, visible)],
                    skeleton=skeleton)
        if names and len(names) == len(kpts):
            spec['names'] = list(names)
        if state.get('bbox') is not None:
            spec['bbox'] = list(state['bbox'])
        try:
            return load_support_spec(spec)
        except CapeInputError as exc:
            field = 'Skeleton' if exc.field.startswith('skeleton') else 'Support keypoints'
            raise gr.Error(f'{field}: {exc.problem}')

    def run(self, state: dict, query_files, choice: Optional[str], config: Optional[str],
            checkpoint: Optional[str], skeleton_field: Optional[str]):
        """Predict: returns (result picture RGB, [predictions JSON, picture, support JSON],
        status line)."""
        state = state or empty_support()
        if state.get('image') is None:
            raise gr.Error('Support image: upload a support image (or load a support JSON) first')
        num = len(state.get('keypoints') or [])
        if num < 2:
            raise gr.Error(f'Support keypoints: click at least 2 keypoints on the support image '
                           f'(now {num})')
        skeleton = parse_skeleton(skeleton_field, num)
        support = self._support_spec(state, skeleton)
        queries = self._query_images(query_files)
        entry = self.resolve_model(choice, config, checkpoint)
        model = self.cache.get(entry)
        t0 = time.perf_counter()
        try:
            preds = predict_cape(model, [support], [img for _, img in queries])
        except CapeInputError as exc:
            field = 'Query images' if exc.source in ('<queries>', '<array>') else \
                'Support keypoints'
            raise gr.Error(f'{field}: {exc.problem}')
        seconds = time.perf_counter() - t0
        preds = [np.asarray(p, np.float64).reshape(-1, 2) for p in preds]
        canvas = draw_result(support.image, support.keypoints, support.visible, skeleton,
                             queries, preds)
        record = predictions_to_json(preds, [support], [n for n, _ in queries],
                                     [img.shape for _, img in queries])
        name = state.get('name') or 'support'
        record['supports'] = [name]
        record['support'] = dict(
            image=name, image_size=[int(support.image.shape[1]), int(support.image.shape[0])],
            keypoints=[[round(float(x), 2), round(float(y), 2)] for x, y in support.keypoints],
            visible=[int(v) for v in support.visible],
            bbox=[round(float(v), 2) for v in support.crop_bbox()])
        record['model'] = dict(config=entry.config, checkpoint=entry.checkpoint)
        # [x, y, v]: a keypoint the loaded JSON marked v = 0 stays ignored when reloaded
        support_json = dict(image=name, keypoints=[
            [x, y, v] for (x, y), v in zip(record['support']['keypoints'],
                                           record['support']['visible'])])
        if support.names:
            support_json['names'] = list(support.names)
        if skeleton:
            support_json['skeleton'] = skeleton
        if state.get('bbox') is not None:
            support_json['bbox'] = [float(v) for v in state['bbox']]

        with self._counter_lock:
            self._run_counter += 1
            run_dir = osp.join(self.out_dir, f'run{self._run_counter:04d}')
        os.makedirs(run_dir, exist_ok=True)
        paths = [osp.join(run_dir, f) for f in ('predictions.json', 'result.png',
                                                 'support.json')]
        with open(paths[0], 'w', encoding='utf-8') as f:
            json.dump(record, f, indent=1)
        cv2.imwrite(paths[1], canvas)
        with open(paths[2], 'w', encoding='utf-8') as f:
            json.dump(support_json, f, indent=1)
        status = (f'{len(queries)} query image(s), {num} keypoints, model {entry.label}: '
                  f'{seconds:.2f} s')
        return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB), paths, status

    # ---------------------------------------------------------------- page
    def build(self) -> gr.Blocks:
        choices = self.model_choices()
        example_images = [p for p in self.examples if p.lower().endswith(IMAGE_SUFFIXES)]
        with gr.Blocks(title='CAPE web demo', analytics_enabled=False) as page:
            gr.Markdown('## Category-agnostic pose estimation\n'
                        'Upload a support image and click its keypoints (or load a support '
                        'JSON), upload query images, choose a model and press **Run**.')
            state = gr.State(empty_support())
            listing = gr.Textbox(label='Support keypoints (x, y in image pixels)',
                                 value=keypoint_listing(empty_support()), lines=8, max_lines=16,
                                 interactive=False, elem_id='keypoint-list', render=False)
            with gr.Row():
                with gr.Column(scale=3):
                    support_img = gr.Image(
                        label='Support image: click to add keypoints', type='filepath',
                        image_mode='RGB', sources=['upload', 'clipboard'], format='png',
                        elem_id='support-image', height=420)
                    with gr.Row():
                        undo = gr.Button('Undo last keypoint', elem_id='undo-btn')
                        clear = gr.Button('Clear keypoints', elem_id='clear-btn')
                    support_outputs = [state, support_img, listing]
                    if example_images:
                        gr.Examples([[p] for p in example_images], inputs=[support_img],
                                    outputs=support_outputs, fn=self.on_support_image,
                                    run_on_click=True, cache_examples=False,
                                    label='Pick a support image')
                with gr.Column(scale=2):
                    listing.render()
                    support_json = gr.File(
                        label='Or load a support JSON (with its image)', file_count='multiple',
                        file_types=['.json'] + list(IMAGE_SUFFIXES), elem_id='support-json')
                    skeleton = gr.Textbox(label='Skeleton (optional, 0-based pairs)',
                                          placeholder='0-1, 1-2', elem_id='skeleton')
            with gr.Row():
                with gr.Column(scale=3):
                    queries = gr.File(label='Query images', file_count='multiple',
                                      file_types=['image'], elem_id='query-images')
                    if example_images:
                        gr.Examples([[[p]] for p in example_images], inputs=[queries],
                                    label='Pick a query image')
                with gr.Column(scale=2):
                    model = gr.Dropdown(choices=choices, value=choices[0] if choices else None,
                                        label='Model', elem_id='model-choice')
                    config = gr.Textbox(label='Config path', placeholder='configs/....py',
                                        visible=self.allow_custom_model, elem_id='config-path')
                    checkpoint = gr.Textbox(label='Checkpoint path', placeholder='....pth',
                                            visible=self.allow_custom_model,
                                            elem_id='checkpoint-path')
                    run = gr.Button('Run', variant='primary', elem_id='run-btn')
            status = gr.Markdown(elem_id='run-status')
            # no label over the picture: it would hide the support's caption
            result = gr.Image(label='Support (left) and predictions on each query', type='numpy',
                              format='png', interactive=False, show_label=False,
                              elem_id='result-image')
            downloads = gr.File(label='Downloads: predictions JSON and picture',
                                file_count='multiple', interactive=False, elem_id='downloads')

            support_img.upload(self.on_support_image, [support_img], support_outputs)
            support_img.clear(self.on_support_image, [support_img], support_outputs)
            support_img.select(self.on_support_click, [state, skeleton], support_outputs)
            undo.click(self.on_undo, [state, skeleton], support_outputs)
            clear.click(self.on_clear, [state], support_outputs)
            support_json.upload(self.on_support_json, [support_json, state],
                                support_outputs + [skeleton])
            skeleton.input(self.on_skeleton, [state, skeleton], [support_img])
            run.click(self.run, [state, queries, model, config, checkpoint, skeleton],
                      [result, downloads, status])
        return page


# ------------------------------------------------------------------------------ command line
def _is_loopback(host: str) -> bool:
    if host == 'localhost':
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _collect_examples(paths: Sequence[str]) -> List[str]:
    """The image files among ``paths`` and in the folders among them (checked by parse_args)."""
    out = []
    for p in paths:
        if osp.isdir(p):
            out += sorted(osp.join(p, f) for f in os.listdir(p)
                          if f.lower().endswith(IMAGE_SUFFIXES))
        else:
            out.append(p)
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--config', action='append', default=[],
                        help='model config; repeat with --checkpoint for several models')
    parser.add_argument('--checkpoint', action='append', default=[],
                        help='checkpoint of the config given at the same position')
    parser.add_argument('--host', default='127.0.0.1',
                        help='address to serve on (default 127.0.0.1: this machine only)')
    parser.add_argument('--port', type=int, default=7860)
    parser.add_argument('--device', default='cpu', help='cpu or cuda (or cuda:N)')
    parser.add_argument('--examples', nargs='+', default=[],
                        help='images (or folders of images) offered as support / query picks')
    parser.add_argument('--allow-custom-model', action='store_true',
                        help='offer the config / checkpoint path fields also when serving on a '
                        'non-loopback --host (they let the page load any file of this machine)')
    args = parser.parse_args(argv)
    if len(args.config) != len(args.checkpoint):
        parser.error(f'--config and --checkpoint must come in pairs (got {len(args.config)} '
                     f'config(s) and {len(args.checkpoint)} checkpoint(s))')
    for flag, paths in (('--config', args.config), ('--checkpoint', args.checkpoint)):
        for p in paths:
            if not osp.isfile(p):
                parser.error(f'{flag}: no such file "{p}"')
    for p in args.examples:
        if not (osp.isdir(p) or osp.isfile(p)):
            parser.error(f'--examples: no such file or folder "{p}"')
        if osp.isfile(p) and not p.lower().endswith(IMAGE_SUFFIXES):
            parser.error(f'--examples: "{p}" is not an image file ({", ".join(IMAGE_SUFFIXES)})')
    if not 0 < args.port < 65536:
        parser.error(f'--port: {args.port} is not a TCP port (1..65535)')
    if not re.fullmatch(r'cpu|cuda(:\d+)?', args.device):
        parser.error(f'--device: expected cpu, cuda or cuda:N, got "{args.device}"')
    if args.device.startswith('cuda'):
        import torch
        if not torch.cuda.is_available():
            parser.error('--device: CUDA is not available here; use --device cpu')
    if not args.config and not (_is_loopback(args.host) or args.allow_custom_model):
        parser.error('no --config/--checkpoint given, and the path fields are off when serving '
                     f'on {args.host}; give models or --allow-custom-model')
    return args


def create_demo(args: argparse.Namespace) -> WebDemo:
    models = [ModelEntry(c, k) for c, k in zip(args.config, args.checkpoint)]
    return WebDemo(models, device=args.device,
                   allow_custom_model=_is_loopback(args.host) or args.allow_custom_model,
                   examples=_collect_examples(args.examples))


def launch(demo: WebDemo, host: str, port: int, block: bool = True) -> gr.Blocks:
    """Build the page of ``demo`` and serve it on ``host``:``port``: no share link, no
    server-side rendering, nothing fetched from outside (the theme's fonts are bundled with
    Gradio). ``block=False`` returns at once (call ``.close()`` on the returned page)."""
    page = demo.build()
    page.launch(server_name=host, server_port=port, share=False, ssr_mode=False,
                prevent_thread_lock=not block, show_error=True, quiet=not block,
                footer_links=[], allowed_paths=[demo.out_dir])
    return page


def main(argv: Optional[Sequence[str]] = None):
    args = parse_args(argv)
    demo = create_demo(args)
    print(f'CAPE web demo: http://{args.host}:{args.port} (Ctrl+C stops it)', flush=True)
    launch(demo, args.host, args.port)


if __name__ == '__main__':
    main()
