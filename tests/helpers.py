"""Shared test helpers: repository / shared-data paths and a tiny MP-100-style COCO writer.

Importable from any test (``from tests.helpers import REPO, SHARED``); ``tests/conftest.py`` puts
the repository root on ``sys.path`` so this works under every pytest import mode.

Optional test data (real photos of mp100_mini, the full MP-100 val/test annotation files, the
uncompressed official fixtures) is not part of the repository. It is looked up in the folder named
by ``METAPOINT_SHARED_DATA``, by default ``shared`` beside the clone; tests that need it call
:func:`require` (or use :func:`skip_without`) and skip with a reason naming the missing path.
``bash scripts.sh test`` runs the suite once without it and checks the number of such skips
against docs/testing.md, then runs those tests with it.
"""
from __future__ import annotations

import copy
import functools
import io
import json
import lzma
import math
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import cv2
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get('METAPOINT_SHARED_DATA') or REPO.parent / 'shared')
MP100_ANN_DIR = SHARED / 'data' / 'mp100_annotations'
MP100_MINI = SHARED / 'data' / 'mp100_mini'
#: every skip for missing optional data starts with this (counted by tests/conftest.py)
MISSING_DATA = 'optional test data not found'


def missing_reason(path: Path) -> str:
    return (f'{MISSING_DATA}: {path} (set METAPOINT_SHARED_DATA to the folder holding data/ and '
            'fixtures/, or place it beside the clone as shared/)')


def require(path: Path) -> Path:
    """Skip the calling test when the optional data ``path`` is absent."""
    if not Path(path).exists():
        pytest.skip(missing_reason(path))
    return Path(path)


def free_port() -> int:
    """A free TCP port on the loopback interface (for torchrun rendezvous in tests)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def skip_without(path: Path):
    """A ``pytest.mark.skipif`` for a whole module or test that needs optional data ``path``."""
    return pytest.mark.skipif(not Path(path).exists(), reason=missing_reason(path))


def mp100_ann_file(split: int, subset: str) -> Path:
    """Path of a real MP-100 per-split annotation file (skips when shared data is absent)."""
    return require(MP100_ANN_DIR / f'mp100_split{split}_{subset}.json')


def tiny_synthetic_set(root: Path, **overrides) -> Path:
    """The tools' tests' synthetic MP-100-style set in ``root``: 6 random categories x 3
    instances at 64 px (split 1 trains on categories 1-4 and tests category 5)."""
    from metapoint.datasets.synthetic import generate_dataset
    args = dict(source='random', img_size=64, num_categories=6, instances_per_category=3,
                calib_pairs=10)
    args.update(overrides)
    generate_dataset(root, **args)
    return root


# ---------------------------------------------------------------------------- tiny COCO files
#: the tiny set: category id -> (keypoint names, 0-indexed skeleton, annotation ids)
TINY_CATEGORIES = {
    1: (['a', 'b', 'c', 'd'], [[0, 1], [1, 2], [2, 3]], [101, 102, 103, 104]),
    2: (['p', 'q', 'r', 's', 't'], [[0, 1], [1, 2], [2, 3], [3, 4], [4, 0]], [201, 202, 203]),
}
TINY_IMG_W, TINY_IMG_H = 64, 48
#: every tiny box is [x, y, w, h] = TINY_BOX (inside the 64x48 image); keypoints lie inside it
TINY_BOX = [8.0, 6.0, 40.0, 30.0]


@dataclass
class TinyCoco:
    """A tiny MP-100-style set written under ``root``: one image per annotation.

    Attributes:
        root: the folder (``data_root``); ``ann_file`` = root/annotations/tiny.json;
            images under root/images/<file_name>.
        data: the COCO dict that was written (mutate a deep copy and call :meth:`write`).
        img_of_ann: annotation id -> absolute image path.
    """
    root: Path
    ann_file: Path
    img_dir: Path
    data: dict
    img_of_ann: Dict[int, Path] = field(default_factory=dict)

    def write(self, data: Optional[dict] = None, name: str = 'tiny.json') -> Path:
        """Write ``data`` (default ``self.data``) as a json beside ``ann_file``; return the path."""
        path = self.ann_file.parent / name
        path.write_text(json.dumps(self.data if data is None else data), encoding='utf-8')
        return path

    def ann(self, ann_id: int, data: Optional[dict] = None) -> dict:
        """The annotation dict with id ``ann_id`` (in ``data``, default ``self.data``)."""
        return next(a for a in (data or self.data)['annotations'] if a['id'] == ann_id)

    def category(self, cat_id: int, data: Optional[dict] = None) -> dict:
        return next(c for c in (data or self.data)['categories'] if c['id'] == cat_id)

    def dataset_kwargs(self, **overrides) -> dict:
        """MP100Dataset keyword arguments for this set (test mode, 1 shot, small episodes)."""
        kw = dict(ann_file=str(self.ann_file), data_root='',
                  data_prefix=dict(img=str(self.img_dir)), pipeline=TINY_PIPELINE,
                  max_kpt_num=8, num_shots=1, num_queries=2, num_episodes=2, test_mode=True)
        kw.update(overrides)
        return kw


#: a small test pipeline for the tiny set (32x32 crops, 8x8 heatmap grid)
TINY_PIPELINE = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='TopdownAffine', input_size=(32, 32)),
    dict(type='GenerateCAPETarget', heatmap_size=(8, 8), sigma=1),
    dict(type='PackCAPEInstance'),
]


def write_tiny_coco(root: Path, mutate: Optional[Callable[[dict], None]] = None,
                    seed: int = 0) -> TinyCoco:
    """Write the tiny set (2 categories, 4 + 3 instances, 64x48 PNGs) under ``root``.

    ``mutate(data)`` may edit the COCO dict in place before it is written (images are written
    for every image entry of the *unmutated* set, so a test can delete or corrupt one itself).
    Deterministic in ``seed``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    img_dir = root / 'images'
    ann_dir = root / 'annotations'
    ann_dir.mkdir(parents=True, exist_ok=True)
    images: List[dict] = []
    annotations: List[dict] = []
    categories: List[dict] = []
    img_of_ann: Dict[int, Path] = {}
    x, y, w, h = TINY_BOX
    for cid, (names, skeleton, ann_ids) in TINY_CATEGORIES.items():
        categories.append(dict(id=cid, name=f'tiny_{cid}', supercategory='tiny',
                               keypoints=list(names), skeleton=copy.deepcopy(skeleton)))
        for ann_id in ann_ids:
            img_id = len(images) + 1
            file_name = f'cat{cid}/img_{ann_id}.png'
            path = img_dir / file_name
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), rng.integers(0, 256, (TINY_IMG_H, TINY_IMG_W, 3),
                                                dtype=np.uint8))
            images.append(dict(id=img_id, file_name=file_name, width=TINY_IMG_W,
                               height=TINY_IMG_H))
            kx = rng.uniform(x + 2, x + w - 2, len(names)).round(2)
            ky = rng.uniform(y + 2, y + h - 2, len(names)).round(2)
            kpts = [float(v) for p in zip(kx, ky, [2.0] * len(names)) for v in p]
            annotations.append(dict(id=ann_id, image_id=img_id, category_id=cid,
                                    bbox=list(TINY_BOX), area=w * h, iscrowd=0,
                                    keypoints=kpts, num_keypoints=len(names)))
            img_of_ann[ann_id] = path
    data = dict(info=dict(description='tiny MP-100-style test set'), images=images,
                annotations=annotations, categories=categories)
    if mutate is not None:
        mutate(data)
    ann_file = ann_dir / 'tiny.json'
    ann_file.write_text(json.dumps(data), encoding='utf-8')
    return TinyCoco(root=root, ann_file=ann_file, img_dir=img_dir, data=data,
                    img_of_ann=img_of_ann)


# ---------------------------------------------------------------------------- official fixtures
#: numbers from the official MetaPoint / FMMP / CapeFormer code, packed by
#: tests/data/build_official_pack.py
OFFICIAL_PACK = REPO / 'tests' / 'data' / 'official'
#: the uncompressed source folder (optional, beside the clone): tests/test_official_pack.py
#: checks the pack against it when present
OFFICIAL_SOURCE = SHARED / 'fixtures' / 'official'


@functools.lru_cache(maxsize=None)
def _read_pack(name: str):
    with lzma.open(OFFICIAL_PACK / name) as f:
        return torch.load(io.BytesIO(f.read()), map_location='cpu', weights_only=True)


def official_pack(name: str):
    """A fresh copy of the packed file ``name`` (e.g. ``'functions.pt.xz'``); tests may mutate
    it."""
    return copy.deepcopy(_read_pack(name))


def load_official_functions() -> dict:
    """The pure-function fixtures (deformable attention, PE, losses, padding, heatmaps)."""
    return official_pack('functions.pt.xz')


def official_manifest(prefix: str) -> list:
    """``[key, shape, dtype]`` of every official state-dict entry of ``prefix`` (e.g.
    ``'metapoint_s1'``), in state-dict order."""
    return official_pack(f'{prefix}.pt.xz')['manifest']


def load_official_fixture(prefix: str):
    """``(inputs, outputs)`` of the official run ``prefix``, the shared images put back in the
    layout each model's inputs had (MetaPoint and CapeFormer ``img_s`` / ``img_q``, FMMP
    ``imgs`` [B, G, ...]). A pack whose inputs are another run's, zero-padded to more keypoint
    slots (CapeFormer: MetaPoint's, K 70 -> 100), records ``inputs = {'padded_from': prefix,
    'num_slots': K}`` and gets them rebuilt here (:func:`pad_keypoint_slots`)."""
    pack = official_pack(f'{prefix}.pt.xz')
    images = _read_pack('images.pt.xz')
    inputs = pack['inputs']
    if 'padded_from' in inputs:
        inputs = pad_keypoint_slots(load_official_fixture(inputs['padded_from'])[0],
                                    inputs['num_slots'])
    elif prefix.startswith('metapoint'):
        inputs['img_s'], inputs['img_q'] = [images['support'].clone()], images['query'].clone()
    else:
        inputs['imgs'] = torch.stack([images['support'], images['query']], 1)
    return inputs, pack['outputs']


def first_difference(packed, source, path: str = '') -> Optional[str]:
    """Where nested ``packed`` (dicts / lists / tensors / plain values) is not bitwise equal to
    the same entries of ``source`` (dtype included; ``source`` may hold more dict keys), or
    None when everything in ``packed`` matches."""
    if isinstance(packed, dict):
        for key, value in packed.items():
            if key not in source:
                return f'{path}/{key} (absent)'
            found = first_difference(value, source[key], f'{path}/{key}')
            if found:
                return found
        return None
    if isinstance(packed, (list, tuple)):
        if len(packed) != len(source):
            return f'{path} (length)'
        return next((d for d in (first_difference(a, b, f'{path}[{i}]')
                                 for i, (a, b) in enumerate(zip(packed, source))) if d), None)
    if isinstance(packed, torch.Tensor):
        same = isinstance(source, torch.Tensor) and packed.dtype == source.dtype and \
            torch.equal(packed, source)
        return None if same else path
    return None if packed == source else path


def pad_keypoint_slots(inputs: dict, num_slots: int) -> dict:
    """Official collated inputs with the keypoint axis zero-padded to ``num_slots`` (zero,
    invisible rows): ``target_*`` / ``target_weight_*`` (dim 1) and the ``img_metas`` joint arrays
    (dim 0); every other entry is kept as is."""
    def pad(t, dim):
        shape = list(t.shape)
        shape[dim] = num_slots - shape[dim]
        return torch.cat([t, t.new_zeros(shape)], dim)

    out = dict(inputs)
    for key in ('target_s', 'target_weight_s'):
        if key in inputs:
            out[key] = [pad(t, 1) for t in inputs[key]]
    for key in ('target_q', 'target_weight_q'):
        if key in inputs:
            out[key] = pad(inputs[key], 1)
    if 'img_metas' in inputs:
        out['img_metas'] = [
            {k: ([pad(t, 0) for t in v] if k.startswith('sample_joints_3d') else
                 pad(v, 0) if k.startswith('query_joints_3d') else v) for k, v in m.items()}
            for m in inputs['img_metas']]
    return out


def load_official_grads(prefix: str) -> dict:
    """Official gradients of ``prefix``: ``info``, ``stats[key]`` (float64 sum / abs_sum / l2 /
    ramp_sum / max_abs of every parameter) and ``grads[key]`` float32 full gradients of a subset,
    restored from their packed form (float16 for prediction heads, int8 for the rest, both scaled
    by max |g|: relative errors ~5e-4 and ~4e-3 of max |g|). ``precision[key]`` says which."""
    pack = official_pack(f'{prefix}.grads.pt.xz')
    grads, precision = {}, {}
    for key, entry in pack['grads'].items():
        if 'half' in entry:
            grads[key], precision[key] = entry['half'].float() * entry['scale'], 'float16'
        else:
            grads[key] = entry['int8'].float() / 127 * entry['scale']
            precision[key] = 'int8'
    return dict(info=pack['info'], stats=pack['stats'], grads=grads, precision=precision)


def rule_state_dict(manifest, seed=20241122):
    """The official fixtures' deterministic weight rule, expression for expression: one
    ``randn`` per tensor in state-dict order. ``manifest``: a prefix such as ``'metapoint_s1'``
    or the ``[key, shape, dtype]`` list itself."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    if isinstance(manifest, str):
        manifest = official_manifest(manifest)
    for key, shape, _ in manifest:
        leaf = key.split('.')[-1]
        if leaf == 'num_batches_tracked':
            t = torch.zeros(shape, dtype=torch.int64)
        elif leaf == 'running_mean':
            t = torch.zeros(shape, dtype=torch.float32)
        elif leaf == 'running_var':
            t = torch.ones(shape, dtype=torch.float32)
        elif len(shape) == 1 and leaf == 'weight':
            t = 1.0 + 0.1 * torch.randn(shape, generator=g, dtype=torch.float32)
        elif len(shape) == 1:
            t = 0.02 * torch.randn(shape, generator=g, dtype=torch.float32)
        else:
            t = torch.randn(shape, generator=g, dtype=torch.float32) * (
                1.0 / math.sqrt(math.prod(shape[1:])))
        sd[key] = t
    return sd


def disable_dropout(model):
    """Set every nn.Dropout and MultiheadAttention dropout to 0 (as the official fixtures did)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, torch.nn.MultiheadAttention):
            m.dropout = 0.0


def close_to_fixture(actual, expected, atol, name):
    """``actual`` within ``atol`` (absolute, no relative term) of a fixture tensor."""
    torch.testing.assert_close(actual, expected.to(actual.dtype), atol=atol, rtol=0, msg=name)


def metapoint_official_batch(inputs):
    """MetaPoint fixture tensors (official collated batch) -> an (already normalised)
    :class:`EpisodeBatch`: supports ``[B, S, ...]``, query ``[B, 1, ...]``, keypoints / 256."""
    from metapoint.structures import make_episode_batch
    metas = inputs['img_metas']
    s_kpts = torch.stack([torch.stack([torch.as_tensor(m['sample_joints_3d'][s])[:, :2]
                                       for m in metas]) for s in range(len(inputs['img_s']))], 1)
    q_kpts = torch.stack([torch.as_tensor(m['query_joints_3d'])[:, :2] for m in metas])
    return make_episode_batch(
        torch.stack(inputs['img_s'], 1), inputs['img_q'][:, None], (s_kpts / 256).float(),
        (q_kpts / 256).float()[:, None],
        support_weights=torch.stack(inputs['target_weight_s'], 1)[..., 0],
        query_weights=inputs['target_weight_q'][:, None, :, 0],
        support_heatmaps=torch.stack(inputs['target_s'], 1),
        query_heatmaps=inputs['target_q'][:, None])


def capeformer_official_batch(inputs):
    """CapeFormer fixture tensors (official collated batch, K = 100) -> an (already normalised)
    :class:`EpisodeBatch` with heatmaps and the real keypoint counts K_c."""
    return metapoint_official_batch(inputs).replace(
        num_kpts=torch.as_tensor(inputs['category_keypoint_num'], dtype=torch.long))


def fmmp_official_batch(inputs):
    """FMMP fixture tensors ([B, G] with the query last) -> an :class:`EpisodeBatch`."""
    from metapoint.structures import make_episode_batch
    imgs, pts, vis = inputs['imgs'], inputs['points'], inputs['visibles'].float()
    return make_episode_batch(
        imgs[:, :-1], imgs[:, -1:], pts[:, :-1], pts[:, -1:], support_weights=vis[:, :-1],
        query_weights=vis[:, -1:],
        support_neighbour_idx=inputs['headwise_refpoint_idxs'][:, :-1, 0],
        num_kpts=inputs['category_keypoint_num'])


def official_weights_model(config_path, converter: Callable, prefix: str):
    """Our model from ``config_path`` carrying the converted rule-built official weights of
    ``prefix`` (every key checked against the model), dropout disabled. The backbone's ImageNet
    ``pretrained`` is not loaded (the converted weights replace it)."""
    from mmengine.config import Config

    from metapoint.models.backbones import disable_backbone_pretrained
    from metapoint.models.converters import check_against_model
    from metapoint.registry import MODELS
    from metapoint.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(str(config_path))
    disable_backbone_pretrained(cfg.model)
    net = MODELS.build(cfg.model)
    state = converter(rule_state_dict(prefix))
    check_against_model(state, net.state_dict())
    net.load_state_dict(state, strict=True)
    disable_dropout(net)
    return net
