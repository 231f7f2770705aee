"""Speed and FLOP measurements of the CAPE estimators (core of ``tools/analysis/benchmark.py``
and ``tools/analysis/get_flops.py``; docs/benchmarks.md).

Everything runs on random weights (the backbone's ``pretrained`` is disabled) and on random
synthetic episodes of the config's input size and K, so no dataset and no download is needed
for the model figures:

* :func:`synthetic_episodes`: B episodes of S shots and Q queries, each instance a random
  uint8 crop with random keypoints (a chain skeleton of ``num_kpts`` real keypoints), the config's
  target transform (heatmaps where the config makes them) and the config's episode pipeline
  (keypoint padding, FMMP's neighbour table), collated and normalised by the model's data
  preprocessor, exactly the batch the model gets from the loader.
* :func:`time_round_robin`: the variants compared in one run take turns, iteration by
  iteration (warm-up rounds untimed), and each variant's median is reported, so slow phases of
  a shared machine hit every variant alike.
* :class:`FlopCounter`: FLOPs of matmuls, convolutions and attention kernels with the formulas
  of ``torch.utils.flop_counter`` (the table ``FlopCounterMode`` uses), in a dispatch mode that
  attributes every forward op to the top-level child module of the estimator that runs it (the
  parts sum to the total) and counts the backward pass op by op, as one part (counted fwd+bwd,
  not 3x forward).
  Element-wise ops, normalisation, softmax and ``grid_sample`` are not counted
  (:attr:`FlopCounter.uncounted` lists them by call count).

Figures are dicts ``{'value': v, 'unit': u}``; every ratio sits under a key ``ratio_*``.
"""
import contextlib
import copy
import os
import os.path as osp
import platform
import statistics
import time
import traceback
from collections import Counter, defaultdict
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from metapoint.structures import EpisodeBatch

MODES = ('eval', 'train', 'data')

#: the config's backbone swapped for a small one (tests): depth, keeping out_indices
BACKBONE_DEPTHS = (18, 34, 50, 101, 152)


# ============================================================================================
# figures
# ============================================================================================


def fig(value, unit: str, **extra) -> dict:
    """A figure with its unit (``value`` None when it could not be measured)."""
    out = dict(value=None if value is None else float(value), unit=unit)
    out.update(extra)
    return out


def ratio(num: Optional[float], den: Optional[float], definition: str) -> dict:
    """``num / den`` as a ratio figure (unit 'x'); None when either side is missing."""
    value = num / den if num is not None and den not in (None, 0) else None
    return fig(value, 'x', definition=definition)


def machine_info(device: str = 'cpu') -> dict:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    info = dict(cpu=cpu, logical_cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                torch=torch.__version__, python=platform.python_version(), device=device)
    if device.startswith('cuda') and torch.cuda.is_available():
        info['gpu'] = torch.cuda.get_device_name(torch.device(device))
    return info


# ============================================================================================
# config, model, synthetic episodes
# ============================================================================================


def load_config(config, cfg_options: Optional[dict] = None):
    """An mmengine ``Config`` from a path (or a Config), with ``cfg_options`` merged."""
    from mmengine.config import Config

    from metapoint.utils import register_all_modules
    register_all_modules()
    cfg = Config.fromfile(config) if isinstance(config, (str, os.PathLike)) else \
        copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def build_model(cfg, backbone_depth: Optional[int] = None, device: str = 'cpu',
                seed: int = 0) -> torch.nn.Module:
    """The config's model on random weights: the backbone's ``pretrained`` disabled (nothing
    read or downloaded); ``backbone_depth`` swaps the ResNet depth, keeping ``out_indices``."""
    from metapoint.models.backbones import disable_backbone_pretrained
    from metapoint.registry import MODELS
    model_cfg = copy.deepcopy(cfg.model)
    disable_backbone_pretrained(model_cfg)
    if backbone_depth is not None:
        if backbone_depth not in BACKBONE_DEPTHS:
            raise ValueError(f'backbone depth must be one of {BACKBONE_DEPTHS}')
        backbone = model_cfg['backbone']
        if str(backbone.get('type')).split('.')[-1] != 'TorchvisionResNet':
            raise ValueError(f"backbone depth swaps a ResNet backbone's depth; this config's "
                             f"backbone is {backbone.get('type')} (leave --backbone-depth out)")
        model_cfg['backbone'] = dict(type='TorchvisionResNet', depth=backbone_depth,
                                     out_indices=tuple(backbone['out_indices']))
    torch.manual_seed(seed)
    with _quiet_random_init():
        model = MODELS.build(model_cfg)
    return model.to(device)


def perturb_head_weights(model: torch.nn.Module, std: float = 0.02, seed: int = 0) -> None:
    """Add N(0, std) noise to every parameter outside the backbone, in place.

    Some heads are zero-initialised (FMMP's points start as a constant), so a fresh model
    predicts the same points for every query; with this, predictions depend on the inputs and
    equality checks between protocols are not vacuous. Speed does not depend on it.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith('backbone.') and p.is_floating_point():
                p.add_((torch.randn(p.shape, generator=g) * std).to(p))


@contextlib.contextmanager
def _quiet_random_init():
    """The random-init warning of the backbone is expected here: keep it off the console."""
    import logging

    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _pipeline_step(pipeline: Sequence[dict], name: str) -> Optional[dict]:
    for step in pipeline or []:
        if step.get('type') == name:
            return dict(step)
    return None


def episode_settings(cfg, train: bool, input_size: Optional[Sequence[int]] = None) -> dict:
    """Input size (W, H), K, heatmap target transform and episode pipeline of the config's
    train (``train=True``) or test dataset. ``input_size`` (W, H) overrides the crop size; the
    heatmap size is scaled with it."""
    ds = cfg[('train' if train else 'test') + '_dataloader']['dataset']
    pipeline = ds.get('pipeline') or []
    affine = _pipeline_step(pipeline, 'TopdownAffine')
    cfg_size = tuple(affine['input_size']) if affine else tuple(cfg.get('input_size', (256, 256)))
    size = tuple(int(s) for s in (input_size or cfg_size))
    target = _pipeline_step(pipeline, 'GenerateCAPETarget') or dict(
        type='GenerateCAPETarget', heatmap_size=(64, 64), with_heatmap=False)
    hm = tuple(target.get('heatmap_size', (64, 64)))
    target['heatmap_size'] = (max(1, round(hm[0] * size[0] / cfg_size[0])),
                              max(1, round(hm[1] * size[1] / cfg_size[1])))
    k = cfg.model.get('max_kpt_num') or ds.get('max_kpt_num', 70)
    return dict(input_size=size, max_kpt_num=int(k), target=target,
                episode_pipeline=list(ds.get('episode_pipeline') or []))


def synthetic_episodes(cfg, model: torch.nn.Module, shots: int, queries: int, batch: int,
                       train: bool, seed: int = 0, num_kpts: int = 17,
                       input_size: Optional[Sequence[int]] = None,
                       device: str = 'cpu') -> EpisodeBatch:
    """B random episodes as the loader + data preprocessor hand them to ``model``.

    Each instance: a random uint8 crop of the config's input size, ``num_kpts`` random keypoints
    (each visible with probability 0.9, a chain skeleton) in K padded slots, the config's
    ``GenerateCAPETarget`` (weights, heatmaps when the config makes them), packed; each episode
    through the config's episode pipeline (train or test: padding, FMMP's neighbour table);
    collated, then normalised by the model's data preprocessor.
    """
    from metapoint.datasets import episode_collate
    from metapoint.registry import TRANSFORMS
    st = episode_settings(cfg, train, input_size)
    (w, h), k = st['input_size'], st['max_kpt_num']
    num_kpts = min(num_kpts, k)
    target = TRANSFORMS.build(st['target'])
    episode_steps = [TRANSFORMS.build(t) for t in st['episode_pipeline']]
    rng = np.random.default_rng(seed)
    skeleton = [[i, i + 1] for i in range(num_kpts - 1)]
    ann = [0]

    def instance():
        ann[0] += 1
        kp = np.zeros((1, k, 2), np.float32)
        kp[0, :num_kpts] = rng.uniform(0.05, 0.95, (num_kpts, 2)) * np.array([w, h])
        vis = np.zeros((1, k), np.float32)
        vis[0, :num_kpts] = rng.random(num_kpts) < 0.9
        vis[0, 0] = 1
        res = target(dict(transformed_keypoints=kp.copy(), keypoints=kp.copy(),
                          keypoints_visible=vis, input_size=(w, h)))
        inst = dict(img=torch.from_numpy(rng.integers(0, 256, (3, h, w), dtype=np.uint8)),
                    keypoints=torch.from_numpy(kp[0] / np.array([w, h], np.float32)),
                    keypoints_visible=torch.from_numpy(vis[0]),
                    keypoint_weights=torch.from_numpy(res['keypoint_weights'][0].astype(
                        np.float32)),
                    meta=dict(ann_id=ann[0], warp_mat=np.array([[1, 0, 0], [0, 1, 0]],
                                                               np.float32),
                              input_size=(w, h), gt_keypoints=kp[0].copy(),
                              bbox_size=float(max(w, h))))
        if 'heatmaps' in res:
            inst['heatmaps'] = torch.from_numpy(np.ascontiguousarray(res['heatmaps']))
        return inst

    episodes = []
    for b in range(batch):
        ep = dict(supports=[instance() for _ in range(shots)],
                  queries=[instance() for _ in range(queries)], skeleton=skeleton,
                  num_kpts=num_kpts, category_id=b + 1)
        if train:
            ep['rng'] = np.random.default_rng([seed, b])
        for step in episode_steps:
            ep = step(ep)
        ep.pop('rng', None)
        episodes.append(ep)
    data = episode_collate(episodes)
    model.to(device)
    return model.data_preprocessor(data, training=train)['inputs']


# ============================================================================================
# what is timed
# ============================================================================================


def episode_points(model: torch.nn.Module, batch: EpisodeBatch) -> torch.Tensor:
    """Episode-batched evaluation: all B x Q queries in one forward, supports encoded once per
    episode. -> ``[B, Q, K, 2]``."""
    return model(batch, mode='tensor')


def per_pair_points(model: torch.nn.Module, batch: EpisodeBatch) -> torch.Tensor:
    """The per-pair protocol: one forward per (episode b, query q) with that episode's supports
    (``batch.select_episodes(b).select_queries(q)``), so the supports are re-encoded for every
    query. -> ``[B, Q, K, 2]``."""
    rows = []
    for b in range(batch.num_episodes):
        episode = batch.select_episodes(b)
        rows.append(torch.cat([model(episode.select_queries(q), mode='tensor')
                               for q in range(batch.num_queries)], 1))
    return torch.cat(rows, 0)


def backbone_inputs(model: torch.nn.Module, batch: EpisodeBatch) -> List[torch.Tensor]:
    """The image batches the model's backbone gets in a TRAINING step, one tensor per call:
    with ``image_call_per_slot`` one call of B images per shot and per query slot (when that role
    has more than one slot), else one call on all B*(S+Q) images."""
    if getattr(model, 'image_call_per_slot', False):
        calls = []
        for imgs in (batch.support_imgs, batch.query_imgs):
            n = imgs.shape[1]
            calls.extend([imgs[:, i] for i in range(n)] if n > 1 else [imgs.flatten(0, 1)])
        return calls
    return [torch.cat([batch.support_imgs.flatten(0, 1), batch.query_imgs.flatten(0, 1)])]


def _autocast(device: str, amp_dtype: Optional[torch.dtype]):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=amp_dtype)


def make_train_step(model: torch.nn.Module, batch: EpisodeBatch, device: str = 'cpu',
                    amp_dtype: Optional[torch.dtype] = None,
                    forward_model: Optional[torch.nn.Module] = None,
                    lr: float = 1e-5) -> Callable[[], float]:
    """One optimiser step: forward loss (under autocast when ``amp_dtype``), backward, Adam
    step. fp16 uses a GradScaler. ``forward_model`` (e.g. a compiled wrapper) runs the
    forward; ``model`` owns the parameters."""
    fwd = forward_model or model
    optim = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    scaler = torch.amp.GradScaler(torch.device(device).type) \
        if amp_dtype == torch.float16 else None

    def step():
        model.train()
        optim.zero_grad(set_to_none=True)
        with _autocast(device, amp_dtype):
            losses = fwd(batch, mode='loss')
        total = sum(v.float() for v in losses.values())
        if scaler is not None:
            scaler.scale(total).backward()
            scaler.step(optim)
            scaler.update()
        else:
            total.backward()
            optim.step()
        return float(total.detach())
    return step


def make_backbone_step(model: torch.nn.Module, batch: EpisodeBatch, device: str = 'cpu',
                       amp_dtype: Optional[torch.dtype] = None,
                       forward_backbone: Optional[torch.nn.Module] = None) -> Callable:
    """Backbone-only forward + backward on the images of one training step, called the way the
    model calls it (:func:`backbone_inputs`); the backward of the sum of every returned level."""
    backbone = model.backbone
    fwd = forward_backbone or backbone
    calls = backbone_inputs(model, batch)

    def step():
        backbone.train()
        for p in backbone.parameters():
            p.grad = None
        total = 0.
        with _autocast(device, amp_dtype):
            for imgs in calls:
                total = total + sum(lv.float().sum() for lv in fwd(imgs))
        total.backward()
    return step


def make_matmul(n: int = 2048, device: str = 'cpu') -> Tuple[Callable, float]:
    """A square fp32 matmul ``[n, n] @ [n, n]`` and its FLOPs (2 n^3)."""
    g = torch.Generator(device='cpu').manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device)
    b = torch.randn(n, n, generator=g).to(device)
    out = torch.empty(n, n, device=device)

    def mm():
        torch.mm(a, b, out=out)
    return mm, 2.0 * n ** 3


# ============================================================================================
# timing
# ============================================================================================


def _sync(device: str) -> None:
    if str(device).startswith('cuda') and torch.cuda.is_available():
        torch.cuda.synchronize()


def _short_error(e: BaseException) -> str:
    text = f'{type(e).__name__}: {e}'.strip().splitlines()
    return text[0][:300] if text else type(e).__name__


def _timed_call(fn: Callable, device: str) -> float:
    """Seconds of one ``fn()`` call, between device synchronisations."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def time_round_robin(variants: Dict[str, Callable], iters: int, warmup: int,
                     device: str = 'cpu', setup: Optional[Dict[str, Callable]] = None,
                     log: Optional[Callable[[str], None]] = None) -> Dict[str, dict]:
    """Median seconds per call of every variant; the variants take turns (round robin).

    ``warmup`` untimed rounds first. A variant whose ``setup`` (e.g. compilation, once, timed
    separately as ``setup_s``) or any call raises is reported with ``error`` and dropped from
    the following rounds; the others go on. Timers are read after a device synchronisation.
    Returns ``{name: dict(median_s, times_s, setup_s, error)}``.
    """
    results = {name: dict(median_s=None, times_s=[], setup_s=None, error=None)
               for name in variants}
    for name, fn in (setup or {}).items():
        if name not in variants:
            continue
        try:
            results[name]['setup_s'] = _timed_call(fn, device)
        except Exception as e:  # noqa: BLE001 (reported in the table)
            results[name]['error'] = _short_error(e)
            if log:
                log(f'{name}: setup failed: {traceback.format_exc(limit=3)}')
    for i in range(warmup + iters):
        for name, fn in variants.items():
            res = results[name]
            if res['error'] is not None:
                continue
            try:
                sec = _timed_call(fn, device)
            except Exception as e:  # noqa: BLE001
                res['error'] = _short_error(e)
                if log:
                    log(f'{name}: failed: {traceback.format_exc(limit=3)}')
                continue
            if i >= warmup:
                res['times_s'].append(sec)
            if log:
                log(f"  round {i + 1}/{warmup + iters} {'(warm-up) ' if i < warmup else ''}"
                    f'{name}: {sec:.3f} s')
    for res in results.values():
        if res['error'] is None and res['times_s']:
            res['median_s'] = statistics.median(res['times_s'])
    return results


# ============================================================================================
# FLOPs
# ============================================================================================

aten = torch.ops.aten


def _extra_flop_formulas() -> dict:
    """Formulas for kernels that ``torch.utils.flop_counter`` has no entry for: the CPU
    flash-attention kernels (same counts as its flash-attention entries), the fused
    ``nn.MultiheadAttention`` inference fast path (projections + attention) and mat-vec."""
    from torch.utils import flop_counter as fc
    extra = {}

    def add(name, formula):
        op = getattr(aten, name, None)
        if op is not None and op not in fc.flop_registry:
            extra[op] = formula

    def cpu_flash(query, key, value, *args, out_val=None, **kwargs):
        return fc.sdpa_flop_count(query.shape, key.shape, value.shape)

    def cpu_flash_bwd(grad_out, query, key, value, *args, out_val=None, **kwargs):
        return fc.sdpa_backward_flop_count(grad_out.shape, query.shape, key.shape, value.shape)

    def native_mha(query, key, value, embed_dim, *args, out_val=None, **kwargs):
        # batch-first [B, L, E]: q / k / v / out projections + QK^T + AV, 2 FLOPs per MAC
        b, lq, e = query.shape
        lk = key.shape[1]
        return 2 * b * (2 * lq * e * e + 2 * lk * e * e + 2 * lq * lk * e)

    def addmv(self, mat, vec, *args, out_val=None, **kwargs):
        return 2 * mat.shape[0] * mat.shape[1]

    def mv(mat, vec, *args, out_val=None, **kwargs):
        return 2 * mat.shape[0] * mat.shape[1]

    add('_scaled_dot_product_flash_attention_for_cpu', cpu_flash)
    add('_scaled_dot_product_flash_attention_for_cpu_backward', cpu_flash_bwd)
    add('_native_multi_head_attention', native_mha)
    add('addmv', addmv)
    add('mv', mv)
    return extra


class FlopCounter(TorchDispatchMode):
    """Counts FLOPs (one multiply-add = 2 FLOPs) of the ops run inside, per part and phase.

    Formulas: ``torch.utils.flop_counter.flop_registry`` (what ``FlopCounterMode`` uses: mm,
    addmm, bmm, baddbmm, convolution and its backward, scaled-dot-product attention) plus the
    kernels of :func:`_extra_flop_formulas`. ``parts``: an ``nn.Module`` whose top-level
    children are the parts; a forward op is attributed to the OUTERMOST child whose forward is
    running (so a child called from inside another counts once, in its caller), else to
    ``'(estimator)'``; ops run after :meth:`backward_phase` are counted under phase
    ``'backward'`` and part ``'(backward, all parts)'`` (module hooks do not see the backward
    pass). ``uncounted`` counts calls of the (non-view) ops without a formula.
    """

    OUTSIDE = '(estimator)'
    BACKWARD = '(backward, all parts)'

    def __init__(self, parts: Optional[torch.nn.Module] = None) -> None:
        super().__init__()
        from torch.utils import flop_counter as fc
        self.registry = dict(fc.flop_registry)
        self.registry.update(_extra_flop_formulas())
        self.counts: Dict[Tuple[str, str], int] = defaultdict(int)
        self.uncounted: Counter = Counter()
        self.phase = 'forward'
        self._stack: List[str] = []
        self._handles = []
        if parts is not None:
            for name, child in parts.named_children():
                self._handles.append(child.register_forward_pre_hook(self._enter(name)))
                self._handles.append(child.register_forward_hook(self._leave(name),
                                                                 always_call=True))

    def _enter(self, name):
        def hook(module, args):
            self._stack.append(name)
        return hook

    def _leave(self, name):
        def hook(module, args, output):
            if self._stack and self._stack[-1] == name:
                self._stack.pop()
        return hook

    def backward_phase(self) -> None:
        self.phase = 'backward'
        self._stack.clear()

    def remove_hooks(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        formula = self.registry.get(packet)
        if formula is not None:
            flops = formula(*args, **kwargs, out_val=out)
            part = self.BACKWARD if self.phase == 'backward' else \
                (self._stack[0] if self._stack else self.OUTSIDE)
            self.counts[(self.phase, part)] += int(flops)
        elif not getattr(func, 'is_view', False):
            self.uncounted[str(packet)] += 1
        return out

    # ----------------------------------------------------------------- results
    def total(self, phase: Optional[str] = None) -> int:
        return sum(v for (ph, _), v in self.counts.items() if phase in (None, ph))

    def by_part(self, phase: Optional[str] = None) -> Dict[str, int]:
        out: Dict[str, int] = defaultdict(int)
        for (ph, part), v in self.counts.items():
            if phase in (None, ph):
                out[part] += v
        return dict(out)


def count_flops(fn: Callable, parts: Optional[torch.nn.Module] = None,
                backward: Optional[Callable] = None) -> FlopCounter:
    """Run ``fn()`` (then ``backward(result)`` when given) under a :class:`FlopCounter`."""
    counter = FlopCounter(parts)
    try:
        with counter:
            out = fn()
            if backward is not None:
                counter.backward_phase()
                backward(out)
    finally:
        counter.remove_hooks()
    return counter


def params_by_part(model: torch.nn.Module) -> Dict[str, int]:
    """Parameter count per top-level child (parameters held by the estimator itself under
    ``'(estimator)'``); parameters shared between children are counted once, in the first."""
    seen = set()
    out = {}
    for name, child in model.named_children():
        n = 0
        for p in child.parameters():
            if id(p) not in seen:
                seen.add(id(p))
                n += p.numel()
        out[name] = n
    out[FlopCounter.OUTSIDE] = sum(p.numel() for p in model.parameters(recurse=False)
                                   if id(p) not in seen)
    return out


def flops_table(model: torch.nn.Module, batch: EpisodeBatch, train: bool = False) -> dict:
    """Parameters and FLOPs per top-level child of the estimator for ``batch``.

    ``train=False``: one ``'tensor'`` forward under ``no_grad`` in eval mode; ``train=True``:
    loss forward + backward in train mode (the backward FLOPs, which module hooks cannot
    attribute, in one row ``'(backward, all parts)'``).
    Returns ``dict(rows=[dict(part, type, params, flops_forward, flops_backward)], total=...,
    uncounted=[(op, calls)])``; the rows sum to the total.
    """
    if train:
        model.train()

        def fn():
            return sum(model(batch, mode='loss').values())
        counter = count_flops(fn, model, backward=lambda loss: loss.backward())
        model.zero_grad(set_to_none=True)
    else:
        model.eval()
        with torch.no_grad():
            counter = count_flops(lambda: model(batch, mode='tensor'), model)
    params = params_by_part(model)
    fwd, bwd = counter.by_part('forward'), counter.by_part('backward')
    types = {name: type(child).__name__ for name, child in model.named_children()}
    types[FlopCounter.OUTSIDE] = f'{type(model).__name__} (own ops / parameters)'
    rows = []
    for name in list(types):
        if params.get(name, 0) == 0 and name not in fwd:
            continue
        rows.append(dict(part=name, type=types[name], params=params.get(name, 0),
                         flops_forward=fwd.get(name, 0), flops_backward=0))
    if train:
        rows.append(dict(part=FlopCounter.BACKWARD, type='autograd backward', params=0,
                         flops_forward=0, flops_backward=sum(bwd.values())))
    total = dict(part='total', type='', params=sum(params.values()),
                 flops_forward=counter.total('forward'),
                 flops_backward=counter.total('backward'))
    return dict(rows=rows, total=total, uncounted=counter.uncounted.most_common())


def format_flops_table(table: dict, train: bool = False) -> str:
    """The per-part table as text (params in M, FLOPs in GFLOPs, share of the total)."""
    total_flops = table['total']['flops_forward'] + table['total']['flops_backward']
    head = f"{'part':<22}{'type':<40}{'params (M)':>12}{'GFLOPs':>12}"
    if train:
        head += f"{'fwd GFLOPs':>12}{'bwd GFLOPs':>12}"
    head += f"{'share':>8}"
    lines = [head, '-' * len(head)]
    for row in table['rows'] + [None, table['total']]:
        if row is None:
            lines.append('-' * len(head))
            continue
        flops = row['flops_forward'] + row['flops_backward']
        line = (f"{row['part']:<22}{row['type'][:39]:<40}{row['params'] / 1e6:>12.3f}"
                f'{flops / 1e9:>12.3f}')
        if train:
            line += f"{row['flops_forward'] / 1e9:>12.3f}{row['flops_backward'] / 1e9:>12.3f}"
        line += f"{(100 * flops / total_flops if total_flops else 0):>7.1f}%"
        lines.append(line)
    return '\n'.join(lines)


# ============================================================================================
# the benchmark modes
# ============================================================================================


class BenchmarkSettings:
    """Arguments of a benchmark run (the CLI's options)."""

    def __init__(self, shots: Optional[int] = None, queries: int = 15, train_queries: int = 1,
                 batch: int = 1, train_batch: Optional[int] = None,
                 threads: Optional[int] = None, device: str = 'cpu', amp: bool = False,
                 amp_dtype: Optional[str] = None, compile: bool = False,
                 compile_parts: Optional[Sequence[str]] = None,
                 compile_backend: Optional[str] = None, channels_last: bool = False,
                 iters: int = 3,
                 warmup: int = 1, input_size: Optional[Sequence[int]] = None,
                 backbone_depth: Optional[int] = None, num_kpts: int = 17,
                 matmul_size: int = 2048, data_root: Optional[str] = None,
                 img_prefix: Optional[str] = None, ann_file: Optional[str] = None,
                 data_episodes: int = 8, seed: int = 0, flops: bool = True,
                 verbose: bool = False) -> None:
        self.__dict__.update({k: v for k, v in locals().items() if k != 'self'})

    def as_dict(self) -> dict:
        return dict(self.__dict__)

    def amp_torch_dtype(self) -> Optional[torch.dtype]:
        if not self.amp:
            return None
        name = self.amp_dtype or 'bf16'
        if name not in ('bf16', 'fp16'):
            raise ValueError(f"--amp-dtype must be 'bf16' or 'fp16', got {name!r}")
        return torch.bfloat16 if name == 'bf16' else torch.float16


def _variant_names(settings: BenchmarkSettings) -> List[Tuple[str, bool, bool, bool]]:
    """(suffix, amp, compile, channels_last) of every variant of a run."""
    out = [('', False, False, False)]
    if settings.amp:
        out.append(('+amp', True, False, False))
    if settings.channels_last:
        out.append(('+cl', False, False, True))
        if settings.amp:
            out.append(('+amp+cl', True, False, True))
    if settings.compile:
        out.append(('+compile', False, True, False))
        if settings.amp:
            out.append(('+amp+compile', True, True, False))
    return out


def _compile_failure(error: BaseException) -> Callable:
    """A variant that raises ``error`` (shortened) when timed: a failed compile shows as ERROR
    in the table while the other variants go on."""
    message = f'torch.compile: {_short_error(error)}'

    def fail():
        raise RuntimeError(message)
    return fail


def variant_model(model: torch.nn.Module, compile_cfg: Optional[dict] = None,
                  channels_last: bool = False) -> torch.nn.Module:
    """A copy of ``model`` (same weights) with the estimator's own ``compile`` /
    ``channels_last`` options applied (``BaseCAPEEstimator.apply_runtime_options``): what a
    config with ``model.compile`` / ``model.channels_last`` runs. ``model`` itself is returned
    when neither is asked for."""
    if compile_cfg is None and not channels_last:
        return model
    out = copy.deepcopy(model)
    out.channels_last = bool(channels_last)
    out.compile_cfg = None if compile_cfg is None else dict(compile_cfg)
    out._runtime_options_applied = False
    out.apply_runtime_options()
    return out


def _timing_figures(res: dict) -> dict:
    out = dict(median_s=fig(res['median_s'], 's'),
               times_s=[round(t, 6) for t in res['times_s']])
    if res['setup_s'] is not None:
        out['setup_s'] = fig(res['setup_s'], 's', note='first call (compilation), not timed')
    if res['error'] is not None:
        out['error'] = res['error']
    return out


class Benchmark:
    """One model (config) and its settings; :meth:`run_eval`, :meth:`run_train`,
    :meth:`run_data` return the JSON sections of ``tools/analysis/benchmark.py``."""

    def __init__(self, config, settings: BenchmarkSettings,
                 cfg_options: Optional[dict] = None,
                 log: Optional[Callable[[str], None]] = None) -> None:
        self.cfg = load_config(config, cfg_options)
        self.config = str(config)
        self.s = settings
        if settings.threads:
            torch.set_num_threads(int(settings.threads))
        if settings.device.startswith('cuda') and not torch.cuda.is_available():
            raise RuntimeError(f'--device {settings.device}: CUDA is not available here')
        self.log = log or (lambda msg: None)
        ds = self.cfg.test_dataloader.dataset
        self.shots = int(settings.shots or ds.get('num_shots', 1))
        self.model = build_model(self.cfg, settings.backbone_depth, settings.device,
                                 settings.seed)
        self.amp_dtype = settings.amp_torch_dtype()
        self._rates: Dict[str, Optional[float]] = {}

    # ------------------------------------------------------------------ common
    def header(self) -> dict:
        s = self.s
        st = episode_settings(self.cfg, False, s.input_size)
        settings = s.as_dict()
        settings.update(shots=self.shots,
                        input_size=[st['input_size'][1], st['input_size'][0]],  # H, W
                        max_kpt_num=st['max_kpt_num'],
                        amp_dtype=(str(self.amp_dtype).replace('torch.', '')
                                   if self.amp_dtype else None),
                        threads=torch.get_num_threads())
        return dict(config=self.config, model=type(self.model).__name__,
                    image_call_per_slot=bool(getattr(self.model, 'image_call_per_slot', False)),
                    machine=machine_info(s.device), settings=settings)

    def batch(self, train: bool, batch: int, queries: int) -> EpisodeBatch:
        return synthetic_episodes(self.cfg, self.model, self.shots, queries, batch, train,
                                  seed=self.s.seed, num_kpts=self.s.num_kpts,
                                  input_size=self.s.input_size, device=self.s.device)

    def _rr(self, variants, setup=None):
        return time_round_robin(variants, self.s.iters, self.s.warmup, self.s.device,
                                setup=setup, log=self.log if self.s.verbose else None)

    # ------------------------------------------------------------------ eval
    def compile_cfg(self) -> dict:
        """The ``model.compile`` dict of the compiled variants (``--compile-parts``,
        ``--compile-backend``)."""
        out = {}
        if self.s.compile_parts:
            out['parts'] = list(self.s.compile_parts)
        if self.s.compile_backend:
            out['backend'] = self.s.compile_backend
        return out

    def variant_models(self) -> Dict[Tuple[bool, bool], Union[torch.nn.Module, Callable]]:
        """(compile, channels_last) -> the model copy the variants run (built once; a copy that
        fails to build is a failing callable)."""
        if not hasattr(self, '_variant_models'):
            self._variant_models = {}
            for _, _, comp, cl in _variant_names(self.s):
                if (comp, cl) in self._variant_models:
                    continue
                try:
                    self._variant_models[comp, cl] = variant_model(
                        self.model, self.compile_cfg() if comp else None, cl)
                except Exception as e:  # noqa: BLE001
                    self._variant_models[comp, cl] = _compile_failure(e)
        return self._variant_models

    def eval_variants(self, batch: EpisodeBatch, include_pair: bool = True):
        variants, setup = {}, {}
        models = self.variant_models()
        for suffix, amp, comp, cl in _variant_names(self.s):
            dtype = self.amp_dtype if amp else None
            model = models[comp, cl]
            if not isinstance(model, torch.nn.Module):  # the copy failed to build
                variants[f'episode{suffix}'] = model
                if include_pair:
                    variants[f'pair{suffix}'] = model
                continue
            for kind, fn in (('episode', episode_points), ('pair', per_pair_points)):
                if kind == 'pair' and not include_pair:
                    continue

                def call(fn=fn, model=model, dtype=dtype):
                    model.eval()
                    with torch.no_grad(), _autocast(self.s.device, dtype):
                        return fn(model, batch)
                variants[f'{kind}{suffix}'] = call
                if comp:
                    setup[f'{kind}{suffix}'] = call
        return variants, setup

    def run_eval(self) -> dict:
        s = self.s
        batch = self.batch(False, s.batch, s.queries)
        pairs = batch.num_episodes * batch.num_queries
        variants, setup = self.eval_variants(batch)
        self.log(f'eval: {len(variants)} variants, B={s.batch} S={self.shots} Q={s.queries}')
        res = self._rr(variants, setup)
        out = dict(what='pairs/s of episode-batched evaluation (B episodes x Q queries per '
                        'forward, supports encoded once) vs the per-pair protocol (one forward '
                        'per support/query pair, supports re-encoded per query); no_grad, eval',
                   batch=dict(episodes=s.batch, shots=self.shots, queries=s.queries,
                              pairs=pairs), variants={})
        for name, r in res.items():
            v = _timing_figures(r)
            v['pairs_per_s'] = fig(pairs / r['median_s'] if r['median_s'] else None, 'pairs/s')
            v['episodes_per_s'] = fig(s.batch / r['median_s'] if r['median_s'] else None,
                                      'episodes/s')
            v['images_per_s'] = fig(s.batch * (self.shots + s.queries) / r['median_s']
                                    if r['median_s'] else None, 'images/s',
                                    note='distinct images of the batch (supports + queries)')
            out['variants'][name] = v
        # the two protocols give the same points (eval mode): the largest difference
        with torch.no_grad():
            self.model.eval()
            try:
                diff = (episode_points(self.model, batch) -
                        per_pair_points(self.model, batch)).abs().max().item()
            except Exception as e:  # noqa: BLE001
                diff = None
                out['max_abs_diff_error'] = _short_error(e)
        out['max_abs_diff_episode_vs_pair'] = fig(diff, 'normalised crop coordinates')
        rate = {n: out['variants'][n]['pairs_per_s']['value'] for n in out['variants']}
        for suffix, *_ in _variant_names(s):
            key = 'ratio_episode_vs_pair' + suffix.replace('+', '_')
            out[key] = ratio(rate.get(f'episode{suffix}'), rate.get(f'pair{suffix}'),
                             f'pairs/s episode{suffix} / pairs/s pair{suffix}')
        if s.amp:
            out['ratio_amp_vs_fp32'] = ratio(rate.get('episode+amp'), rate.get('episode'),
                                             'pairs/s episode+amp / episode (fp32)')
        if s.compile:
            out['ratio_compile_vs_eager'] = ratio(rate.get('episode+compile'),
                                                  rate.get('episode'),
                                                  'pairs/s episode+compile / episode (eager)')
        if s.channels_last:
            out['ratio_channels_last_vs_contiguous'] = ratio(
                rate.get('episode+cl'), rate.get('episode'),
                'pairs/s episode+cl / episode (contiguous)')
        self._rates['eval_episodes_per_s'] = out['variants']['episode']['episodes_per_s'][
            'value']
        return out

    # ------------------------------------------------------------------ train
    def train_variants(self, batch: EpisodeBatch, include_backbone: bool = True):
        """Each (compile, channels_last) copy trains its own weights with its own Adam: the
        copies start from the same weights and time the same work."""
        variants, setup = {}, {}
        models = self.variant_models()
        for suffix, amp, comp, cl in _variant_names(self.s):
            dtype = self.amp_dtype if amp else None
            model = models[comp, cl]
            if not isinstance(model, torch.nn.Module):
                variants[f'step{suffix}'] = model
                if include_backbone:
                    variants[f'backbone{suffix}'] = model
                continue
            variants[f'step{suffix}'] = make_train_step(model, batch, self.s.device, dtype)
            if include_backbone:
                variants[f'backbone{suffix}'] = make_backbone_step(model, batch, self.s.device,
                                                                   dtype)
            if comp:
                setup[f'step{suffix}'] = variants[f'step{suffix}']
                if include_backbone:
                    setup[f'backbone{suffix}'] = variants[f'backbone{suffix}']
        return variants, setup

    def run_train(self) -> dict:
        s = self.s
        b = s.train_batch or s.batch
        batch = self.batch(True, b, s.train_queries)
        calls = backbone_inputs(self.model, batch)
        n_imgs = sum(c.shape[0] for c in calls)
        variants, setup = self.train_variants(batch)
        mm, mm_flops = make_matmul(s.matmul_size, s.device)
        variants['matmul'] = mm
        self.log(f'train: {len(variants)} variants, B={b} S={self.shots} Q={s.train_queries}')
        # FLOPs first (one counted step, not timed; weights restored after it)
        flops = dict(step=None, forward=None, backbone=None)
        flop_note = None
        if s.flops:
            state = copy.deepcopy(self.model.state_dict())
            try:
                self.model.train()
                c = count_flops(lambda: sum(self.model(batch, mode='loss').values()),
                                self.model, backward=lambda loss: loss.backward())
                flops.update(step=c.total(), forward=c.total('forward'))
                self.model.zero_grad(set_to_none=True)
                bb = self.model.backbone
                c = count_flops(lambda: sum(lv.sum() for imgs in calls for lv in bb(imgs)),
                                backward=lambda loss: loss.backward())
                flops['backbone'] = c.total()
                self.model.zero_grad(set_to_none=True)
            except Exception as e:  # noqa: BLE001
                flop_note = _short_error(e)
            self.model.load_state_dict(state)
        res = self._rr(variants, setup)
        out = dict(what='one optimiser step (loss forward + backward + Adam step) vs '
                        'backbone-only forward + backward on the same images, called as the '
                        'model calls its backbone; FLOPs counted fwd+bwd; fp32 square matmul '
                        'FLOP/s of this machine, same threads',
                   batch=dict(episodes=b, shots=self.shots, queries=s.train_queries,
                              backbone_images=n_imgs, backbone_calls=len(calls)),
                   variants={})
        for name, r in res.items():
            out['variants'][name] = _timing_figures(r)
        med = {n: r['median_s'] for n, r in res.items()}
        for suffix, *_ in _variant_names(s):
            t = med.get(f'step{suffix}')
            out['variants'][f'step{suffix}']['episodes_per_s'] = fig(
                b / t if t else None, 'episodes/s')
            out['variants'][f'step{suffix}']['steps_per_s'] = fig(1 / t if t else None,
                                                                  'steps/s')
            tb = med.get(f'backbone{suffix}')
            out['variants'][f'backbone{suffix}']['images_per_s'] = fig(
                n_imgs / tb if tb else None, 'images/s')
            out['ratio_step_vs_backbone' + suffix.replace('+', '_')] = fig(
                t / tb if t and tb else None, 'x',
                definition=f'seconds step{suffix} / seconds backbone{suffix} fwd+bwd '
                           '(target <= 1.3)')
        mm_t = med.get('matmul')
        mm_rate = mm_flops / mm_t if mm_t else None
        out['matmul'] = dict(size=s.matmul_size, flops=fig(mm_flops, 'FLOP'),
                             flops_per_s=fig(mm_rate, 'FLOP/s', note=f'fp32 {s.matmul_size}^3 '
                                             'square matmul, same threads'))
        out['flops'] = dict(
            method='counted forward + backward (torch.utils.flop_counter formulas in a '
                   'dispatch mode: matmul / conv / attention only)',
            step=fig(flops['step'], 'FLOP', note='loss forward + backward of one step'),
            forward=fig(flops['forward'], 'FLOP'),
            backbone_step=fig(flops['backbone'], 'FLOP', note='backbone fwd+bwd, same images'))
        if flop_note:
            out['flops']['error'] = flop_note
        t = med.get('step')
        achieved = flops['step'] / t if flops['step'] and t else None
        out['flops']['achieved_step_flops_per_s'] = fig(achieved, 'FLOP/s')
        tb = med.get('backbone')
        out['flops']['achieved_backbone_flops_per_s'] = fig(
            flops['backbone'] / tb if flops['backbone'] and tb else None, 'FLOP/s')
        out['ratio_train_flops_vs_matmul'] = ratio(
            achieved, mm_rate, 'achieved FLOP/s of the fp32 train step / fp32 matmul FLOP/s '
                               '(target >= 0.4)')
        out['ratio_backbone_flops_vs_matmul'] = ratio(
            out['flops']['achieved_backbone_flops_per_s']['value'], mm_rate,
            'achieved FLOP/s of the backbone-only fwd+bwd / fp32 matmul FLOP/s')
        self._rates['train_episodes_per_s'] = out['variants']['step']['episodes_per_s']['value']
        return out

    # ------------------------------------------------------------------ data
    def dataset(self, train: bool):
        """The config's train / test dataset with the run's shots (and queries for test) and
        the data-root / image-prefix / annotation-file overrides. Raises
        :class:`DataUnavailable` when the data root or annotation file is missing."""
        from metapoint.registry import DATASETS
        ds_cfg = copy.deepcopy(self.cfg[('train' if train else 'test') + '_dataloader'].dataset)
        ds_cfg['num_shots'] = self.shots
        if not train:
            ds_cfg['num_queries'] = self.s.queries
        if self.s.data_root is not None:
            ds_cfg['data_root'] = self.s.data_root
        if self.s.img_prefix is not None:
            ds_cfg['data_prefix'] = dict(img=self.s.img_prefix)
        if self.s.ann_file is not None:
            ds_cfg['ann_file'] = self.s.ann_file
        if self.s.input_size is not None:  # the crop size of the model figures
            st = episode_settings(self.cfg, train, self.s.input_size)
            for step in ds_cfg.get('pipeline') or []:
                if step.get('type') == 'TopdownAffine':
                    step['input_size'] = st['input_size']
                if step.get('type') == 'GenerateCAPETarget':
                    step['heatmap_size'] = st['target']['heatmap_size']
        root = ds_cfg.get('data_root', '')
        if root and not osp.isdir(root):
            raise DataUnavailable(f'data root {root!r} does not exist (pass --data-root, and '
                                  '--img-prefix / --ann-file when its layout differs)')
        ann = ds_cfg['ann_file'] if osp.isabs(ds_cfg['ann_file']) or not root else \
            osp.join(root, ds_cfg['ann_file'])
        if not osp.isfile(ann):
            raise DataUnavailable(f'annotation file {ann!r} does not exist (pass --ann-file)')
        with _quiet_random_init():
            return DATASETS.build(ds_cfg)

    def run_data(self, eval_section: Optional[dict] = None,
                 train_section: Optional[dict] = None) -> dict:
        """Episodes/s of the train and test pipelines (one process, ``dataset[i]`` + collate
        + data preprocessor) vs the model's consumption (train step / episode-batched eval
        rates of ``train_section`` / ``eval_section`` when given, else measured in this
        round robin)."""
        from metapoint.datasets import episode_collate
        s = self.s
        out = dict(what='episodes/s of the config\'s train / test pipelines in ONE process '
                        '(dataset[i] + episode_collate + data preprocessor; median_s is one turn '
                        'of episodes_per_turn episodes) vs the episodes/s the model consumes; a '
                        'DataLoader with N workers multiplies the data rate by up to N',
                   variants={})
        try:
            datasets = dict(train=self.dataset(True), test=self.dataset(False))
        except DataUnavailable as e:
            out['skipped'] = str(e)
            return out
        except Exception as e:  # noqa: BLE001 (a bad data set: reported, the run goes on)
            out['skipped'] = f'the dataset could not be built: {_short_error(e)}'
            return out
        for role in ('train', 'test'):
            loader = self.cfg[f'{role}_dataloader']
            out[f'{role}_dataloader_num_workers'] = int(loader.get('num_workers', 0))
        variants = {}
        counters = dict(train=0, test=0)
        images = dict(train=[], test=[])
        n_load = max(1, int(s.data_episodes))  # episodes per turn of a pipeline variant
        for role, ds in datasets.items():
            def load(role=role, ds=ds):
                for _ in range(n_load):
                    i = counters[role] % len(ds)
                    counters[role] += 1
                    episode = ds[i]
                    images[role].append(len(episode['supports']) + len(episode['queries']))
                    data = episode_collate([episode])
                    self.model.data_preprocessor(data, training=role == 'train')
            variants[f'{role}_pipeline'] = load
        need_train = train_section is None
        need_eval = eval_section is None
        if need_train:
            tb = s.train_batch or s.batch
            tbatch = self.batch(True, tb, s.train_queries)
            variants['model_train_step'] = make_train_step(self.model, tbatch, s.device)
        if need_eval:
            ebatch = self.batch(False, s.batch, s.queries)
            v, _ = self.eval_variants(ebatch, include_pair=False)
            variants['model_eval'] = v['episode']
        res = self._rr(variants)
        for name, r in res.items():
            out['variants'][name] = _timing_figures(r)
        med = {n: r['median_s'] for n, r in res.items()}
        # the pipelines' images/s, and episodes/s at the requested shape (S + Q images; a small
        # data set may load fewer queries per episode, insufficient_instances='reduce')
        shape = dict(train=self.shots + s.train_queries, test=self.shots + s.queries)
        rate = {}
        for role in ('train', 'test'):
            t = med.get(f'{role}_pipeline')
            t = t / n_load if t else None
            per_episode = statistics.mean(images[role]) if images[role] else None
            img_rate = per_episode / t if t and per_episode else None
            rate[role] = img_rate / shape[role] if img_rate else None
            v = out['variants'][f'{role}_pipeline']
            v['episodes_per_turn'] = n_load
            v['images_per_episode_loaded'] = fig(per_episode, 'images')
            v['images_per_s'] = fig(img_rate, 'images/s')
            v['episodes_per_s'] = fig(rate[role], 'episodes/s',
                                      note=f'of {shape[role]} images (S + Q), from images/s')
        if need_train:
            tb = s.train_batch or s.batch
            t = med.get('model_train_step')
            out['variants']['model_train_step']['episodes_per_s'] = fig(
                tb / t if t else None, 'episodes/s')
            model_train = tb / t if t else None
        else:
            model_train = train_section['variants']['step']['episodes_per_s']['value']
        if need_eval:
            t = med.get('model_eval')
            out['variants']['model_eval']['episodes_per_s'] = fig(
                s.batch / t if t else None, 'episodes/s')
            model_eval = s.batch / t if t else None
        else:
            model_eval = eval_section['variants']['episode']['episodes_per_s']['value']
        out['model_train_episodes_per_s'] = fig(model_train, 'episodes/s')
        out['model_eval_episodes_per_s'] = fig(model_eval, 'episodes/s')
        out['ratio_train_data_vs_model'] = ratio(
            rate['train'], model_train, 'train pipeline episodes/s (one process) / model train '
                                        'step episodes/s (>= 1: one worker keeps up)')
        out['ratio_test_data_vs_model'] = ratio(
            rate['test'], model_eval, 'test pipeline episodes/s (one process) / model '
                                      'episode-batched eval episodes/s (>= 1: one worker '
                                      'keeps up)')
        return out

    # ------------------------------------------------------------------ profile
    def profile(self, mode: str, row_limit: int = 15) -> str:
        """``torch.profiler`` table (top ops by self CPU time) of one fp32 call after one
        untimed call: the episode-batched eval forward (``'eval'``) or the train step
        (``'train'``) of this run's settings."""
        from torch.profiler import ProfilerActivity, profile
        s = self.s
        if mode == 'eval':
            batch = self.batch(False, s.batch, s.queries)
            fn = self.eval_variants(batch, include_pair=False)[0]['episode']
        elif mode == 'train':
            batch = self.batch(True, s.train_batch or s.batch, s.train_queries)
            fn = make_train_step(self.model, batch, s.device)
        else:
            raise ValueError(f"profile mode must be 'eval' or 'train', got {mode!r}")
        fn()
        _sync(s.device)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            fn()
            _sync(s.device)
        return prof.key_averages().table(sort_by='self_cpu_time_total', row_limit=row_limit)

    # ------------------------------------------------------------------ all
    def run(self, modes: Sequence[str]) -> dict:
        result = self.header()
        for mode in modes:
            if mode not in MODES:
                raise ValueError(f'unknown mode {mode!r}; modes are {MODES}')
        if 'eval' in modes:
            result['eval'] = self.run_eval()
        if 'train' in modes:
            result['train'] = self.run_train()
        if 'data' in modes:
            result['data'] = self.run_data(result.get('eval'), result.get('train'))
        return result


class DataUnavailable(RuntimeError):
    """The data root or annotation file of the data mode is missing."""


# ============================================================================================
# table
# ============================================================================================


def _fmt(f: Optional[dict]) -> str:
    if not isinstance(f, dict) or f.get('value') is None:
        return 'n/a'
    v, unit = f['value'], f['unit']
    if unit in ('FLOP', 'FLOP/s'):
        return f"{v / 1e9:.2f} G{unit}"
    if unit == 'x':
        return f'{v:.2f}x'
    if unit == 's':
        return f'{v:.3f} s'
    return f'{v:.4g} {unit}'


def format_result(result: dict) -> str:
    """The benchmark result as a text table."""
    st = result['settings']
    m = result['machine']
    lines = [f"{result['model']} ({result['config']})",
             f"machine: {m['cpu']}, {m['torch_threads']} torch threads, device {m['device']}"
             f"{' (' + m['gpu'] + ')' if m.get('gpu') else ''}, torch {m['torch']}",
             f"input {st['input_size'][0]}x{st['input_size'][1]} (HxW), K {st['max_kpt_num']}, "
             f"shots {st['shots']}, iters {st['iters']} (median), warm-up {st['warmup']}"]
    rows = []
    for mode in MODES:
        sec = result.get(mode)
        if sec is None:
            continue
        if 'skipped' in sec:
            rows.append((mode, '-', 'skipped', sec['skipped']))
            continue
        for name, v in sec.get('variants', {}).items():
            if v.get('error'):
                rows.append((mode, name, 'ERROR', v['error']))
                continue
            rows.append((mode, name, 'median', _fmt(v['median_s'])))
            for key in ('pairs_per_s', 'episodes_per_s', 'images_per_s', 'steps_per_s'):
                if key in v:
                    rows.append((mode, name, key, _fmt(v[key])))
            if 'setup_s' in v:
                rows.append((mode, name, 'setup (compile)', _fmt(v['setup_s'])))
        if mode == 'eval':
            rows.append((mode, '', 'max |episode - pair|',
                         _fmt(sec.get('max_abs_diff_episode_vs_pair'))))
        if mode == 'train':
            rows.append((mode, 'matmul', 'FLOP/s', _fmt(sec['matmul']['flops_per_s'])))
            for key in ('step', 'backbone_step', 'achieved_step_flops_per_s',
                        'achieved_backbone_flops_per_s'):
                rows.append((mode, 'flops', key, _fmt(sec['flops'].get(key))))
        for key, v in sec.items():
            if key.startswith('ratio_'):
                rows.append((mode, '', key, _fmt(v)))
    w = [max(len(str(r[i])) for r in rows + [('mode', 'variant', 'figure', 'value')])
         for i in range(3)] + [len('value')]
    head = ('mode', 'variant', 'figure', 'value')
    lines.append('  '.join(str(h).ljust(w[i]) for i, h in enumerate(head)))
    lines.append('  '.join('-' * x for x in w))
    for r in rows:
        lines.append('  '.join(str(c).ljust(w[i]) for i, c in enumerate(r[:3])) + '  ' +
                     str(r[3]))
    return '\n'.join(lines)


__all__ = ['Benchmark', 'BenchmarkSettings', 'DataUnavailable', 'FlopCounter',
           'backbone_inputs', 'build_model', 'count_flops', 'episode_points',
           'episode_settings', 'fig', 'flops_table', 'format_flops_table', 'format_result',
           'load_config', 'machine_info', 'make_backbone_step', 'make_matmul',
           'make_train_step', 'params_by_part', 'per_pair_points', 'perturb_head_weights',
           'ratio', 'synthetic_episodes', 'time_round_robin']
