"""ONNX export of a CAPE estimator for one episode shape: K keypoints, S support shots.

The exported graph does the whole test-time path of one episode, from plain tensors to points:

* inputs ``support_imgs [S, 3, H, W]``, ``support_keypoints [S, K, 2]`` (normalised crop
  ``(x, y)`` in [0, 1]), ``support_visible [S, K]`` (0/1; above 1 counts as 1) and
  ``query_imgs [Q, 3, H, W]``;
* the config's data preprocessor (channel flip + mean / std; optional, see ``normalize``);
* the config's keypoint targets (:class:`GenerateCAPETarget`: target weights, gaussian support
  heatmaps when the config makes them), padding to the model's ``max_kpt_num`` slots
  (:class:`KeypointPadding` ``'zero'`` or ``'eqdiv'``) and FMMP's structural neighbour table
  (:class:`StructuralNeighbours`) for a skeleton fixed at export time, all computed in the graph
  from the runtime visibility, so invisible support keypoints are handled as the pipeline does;
* the model's ``'tensor'`` forward (:meth:`BaseCAPEEstimator.predict_points`);
* output ``pred_keypoints [Q, K, 2]``, normalised crop ``(x, y)`` of the K real keypoints.

MetaPoint's meta-point assignment (a Hungarian solve, scipy on the host in PyTorch) is replaced
in the exported model by :func:`linear_sum_assignment`, an exact shortest-augmenting-path solver
written with tensor ops and ``while_loop`` (an ONNX ``Loop``), so it runs inside the graph.

:func:`pipeline_points` runs the same episode through the config's own transforms, collate,
data preprocessor and the unmodified model: the reference every check compares with.
"""
import copy
import json
import os
import os.path as osp
import warnings
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from metapoint.structures import EpisodeBatch

#: smallest opset written: the dynamo exporter builds opset-18 graphs (its down-conversion to
#: older opsets fails on these graphs); ``GridSample`` alone would need 16
MIN_OPSET = 18
DEFAULT_OPSET = 18
INPUT_NAMES = ('support_imgs', 'support_keypoints', 'support_visible', 'query_imgs')
OUTPUT_NAMES = ('pred_keypoints', )
#: episode-pipeline steps the graph reproduces
_EPISODE_STEPS = ('KeypointPadding', 'StructuralNeighbours')

Skeleton = List[Tuple[int, int]]


class ExportError(ValueError):
    """The model, config or export settings cannot give a correct graph."""


# ============================================================================================
# skeleton
# ============================================================================================


def chain_skeleton(num_kpts: int) -> Skeleton:
    """Links ``0-1, 1-2, ..., (K-2)-(K-1)``."""
    return [(i, i + 1) for i in range(num_kpts - 1)]


def parse_skeleton(spec: Union[None, str, Sequence], num_kpts: int) -> Skeleton:
    """A skeleton (0-indexed links between the K real keypoints) from ``spec``.

    ``spec``: None (the chain ``0-1, 1-2, ...``), ``'none'`` (no links), a string of links
    ``'0-1,1-2'``, a JSON file (a list of ``[a, b]`` pairs, or an object with a ``'skeleton'``
    list of them, e.g. a support file of ``demo/cape_demo.py``), or a sequence of pairs.
    """
    if spec is None:
        return chain_skeleton(num_kpts)
    source = spec
    if isinstance(spec, (str, os.PathLike)):
        text = str(spec).strip()
        if osp.isfile(text):
            with open(text) as f:
                data = json.load(f)
            pairs = data.get('skeleton') if isinstance(data, dict) else data
            if pairs is None:
                raise ExportError(f'skeleton file {text!r} has no "skeleton" list')
        elif text.lower() == 'none' or not text:
            pairs = []
        else:
            pairs = []
            for item in text.replace(';', ',').split(','):
                ends = item.strip().split('-')
                if len(ends) != 2 or not all(e.strip().isdigit() for e in ends):
                    raise ExportError(f'skeleton link {item.strip()!r} in {text!r} is not '
                                      '"a-b" with two keypoint indices (e.g. "0-1,1-2"), and '
                                      'no file has that name')
                pairs.append((int(ends[0]), int(ends[1])))
    else:
        pairs = spec
    links = []
    for pair in pairs:
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in pair):
            raise ExportError(f'skeleton link {pair!r} of {source!r} is not a pair of '
                              'keypoint indices')
        a, b = (int(v) for v in pair)
        for end in (a, b):
            if not 0 <= end < num_kpts:
                raise ExportError(f'skeleton link {a}-{b} names keypoint {end}, outside the '
                                  f'{num_kpts} keypoints (0..{num_kpts - 1}) of --num-kpts')
        links.append((a, b))
    return links


# ============================================================================================
# settings of the graph
# ============================================================================================


@dataclass
class ExportSpec:
    """What a graph is built for (also written into the ONNX metadata)."""

    model_type: str
    num_kpts: int
    shots: int
    input_size: Tuple[int, int]  # (W, H)
    max_kpt_num: int
    heatmap_size: Tuple[int, int]  # (W, H)
    sigma: float
    with_heatmap: bool
    padding: str
    neighbours: Optional[int]
    skeleton: Skeleton = field(default_factory=list)
    normalize: bool = True
    mean: Tuple[float, ...] = ()
    std: Tuple[float, ...] = ()
    bgr_to_rgb: bool = True

    def metadata(self) -> Dict[str, str]:
        """The spec as ONNX metadata (JSON values), with a sentence on the image input."""
        out = {k: json.dumps(v) for k, v in asdict(self).items()}
        order = 'BGR (the loader\'s order; flipped to RGB in the graph)' if self.bgr_to_rgb \
            else 'the order of mean / std'
        out['image_input'] = json.dumps(
            f'raw pixel values 0-255 (float32), channels {order}, normalised in the graph'
            if self.normalize else "already normalised as the model's data preprocessor does")
        return out


def _pipeline_step(steps, name: str) -> Optional[dict]:
    for step in steps or []:
        if step.get('type') == name:
            return dict(step)
    return None


def export_spec(model: nn.Module, cfg, num_kpts: int, shots: int,
                input_size: Optional[Sequence[int]] = None, skeleton=None,
                normalize: bool = True) -> ExportSpec:
    """Check the request against the model and the config's TEST pipeline; the graph's spec.

    ``input_size`` is (W, H) (default: the config's crop); the heatmap size scales with it.
    Raises :class:`ExportError` naming the bad setting.
    """
    from metapoint.models.estimators.base import BaseCAPEEstimator
    from metapoint.utils.benchmarking import episode_settings
    if not isinstance(model, BaseCAPEEstimator):
        raise ExportError(f'only CAPE estimators (BaseCAPEEstimator: MetaPoint, FMMP, '
                          f'CapeFormer) can be exported, got {type(model).__name__}')
    for name, value in (('num_kpts', num_kpts), ('shots', shots)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ExportError(f'{name} must be a positive integer, got {value!r}')
    if input_size is not None:
        if len(input_size) != 2 or any(int(s) < 32 for s in input_size):
            raise ExportError(f'input size must be two sizes of at least 32 pixels, got '
                              f'{tuple(input_size)!r}')
        input_size = tuple(int(s) for s in input_size)
    st = episode_settings(cfg, train=False, input_size=input_size)
    k_max = st['max_kpt_num']
    if num_kpts > k_max:
        raise ExportError(f'--num-kpts {num_kpts} is larger than the model\'s max_kpt_num '
                          f'{k_max} (the padded slot count it was built for)')
    target = st['target']
    if target.get('type') != 'GenerateCAPETarget':
        raise ExportError(f"the test pipeline's target step {target.get('type')!r} is not "
                          'GenerateCAPETarget: the graph cannot reproduce it')
    steps = st['episode_pipeline']
    unknown = [s.get('type') for s in steps if s.get('type') not in _EPISODE_STEPS]
    if unknown:
        raise ExportError(f'episode pipeline steps {unknown} of the test pipeline are not '
                          f'reproduced in the graph (supported: {list(_EPISODE_STEPS)})')
    pad = _pipeline_step(steps, 'KeypointPadding') or dict(padding='zero', num=k_max)
    padding = pad.get('padding', 'zero')
    if padding not in ('zero', 'eqdiv'):
        raise ExportError(f"test-time KeypointPadding {padding!r} draws random padding; the "
                          "graph supports 'zero' and 'eqdiv'")
    if padding == 'eqdiv' and float(pad.get('prob', 1.0)) != 1.0:
        raise ExportError(f"test-time eqdiv padding with prob={pad['prob']} keeps a random "
                          'subset of the padded points; the graph supports prob=1.0')
    if int(pad.get('num', k_max)) != k_max:
        raise ExportError(f"KeypointPadding num={pad['num']} differs from max_kpt_num {k_max}")
    nbr = _pipeline_step(steps, 'StructuralNeighbours')
    if nbr is not None and nbr.get('visibility_key', 'keypoint_weights') != 'keypoint_weights':
        raise ExportError('StructuralNeighbours with a visibility_key other than '
                          "'keypoint_weights' is not reproduced in the graph")
    links = parse_skeleton(skeleton, num_kpts)
    pre = model.data_preprocessor
    mean = tuple(float(v) for v in getattr(pre, 'mean', torch.zeros(3)).flatten())
    std = tuple(float(v) for v in getattr(pre, 'std', torch.ones(3)).flatten())
    if normalize and not hasattr(pre, 'normalize'):
        raise ExportError(f'the model\'s data preprocessor {type(pre).__name__} has no '
                          'normalize(); export with normalized input instead')
    assigner = getattr(model, 'assigner', None)
    if assigner is not None and getattr(assigner, 'mode', 'nbipart') == 'bipart':
        num_meta = model.meta_embedding.num_embeddings
        if num_meta < k_max:
            raise ExportError("the in-graph 'bipart' assignment needs at least as many "
                              f'meta-points as slots ({k_max}); this model has {num_meta}')
    return ExportSpec(
        model_type=type(model).__name__, num_kpts=num_kpts, shots=shots,
        input_size=tuple(st['input_size']), max_kpt_num=k_max,
        heatmap_size=tuple(int(s) for s in target['heatmap_size']),
        sigma=float(target.get('sigma', 2.0)), with_heatmap=bool(target.get('with_heatmap')),
        padding=padding, neighbours=None if nbr is None else int(nbr.get('num', 16)),
        skeleton=links, normalize=normalize, mean=mean, std=std,
        bgr_to_rgb=bool(getattr(pre, 'bgr_to_rgb', False)))


# ============================================================================================
# loops: ONNX Loop when exporting, plain Python otherwise
# ============================================================================================


def _while(cond_fn, body_fn, carried: tuple) -> tuple:
    """``while cond_fn(*carried): carried = body_fn(*carried)``; a ``while_loop`` (ONNX
    ``Loop``) under ``torch.export``, a Python loop in eager mode."""
    if torch.compiler.is_exporting():
        from torch._higher_order_ops import while_loop
        return tuple(while_loop(cond_fn, body_fn, carried))
    while bool(cond_fn(*carried)):
        carried = tuple(body_fn(*carried))
    return carried


def _select(cond: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where(cond, a, b)``; with logic ops for bool tensors (ONNX Runtime has no
    boolean ``Where``)."""
    if a.dtype == torch.bool:
        return (cond & a) | (~cond & b)
    return torch.where(cond, a, b)


def _pick(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``values[index]`` for a 0-d long ``index`` (a gather that exports)."""
    return values.index_select(0, index.reshape(1)).reshape(values.shape[1:])


def linear_sum_assignment(cost: torch.Tensor) -> torch.Tensor:
    """Exact minimum-cost assignment of the R rows of ``cost [R, C]`` (R <= C) to distinct
    columns: ``col_of_row`` long ``[R]``.

    The shortest augmenting path method (Jonker-Volgenant / Crouse, the algorithm of scipy's
    ``linear_sum_assignment``): for each row, a Dijkstra-like search over the reduced costs, the
    dual update, then the augmentation along the path found. Ties prefer a free column, then the
    lowest index, so with tied optimal costs the answer may differ from scipy's (an equally
    optimal one). Run it in float64 for costs that scipy would solve in float64.

    All of it is ONE loop (ONNX ``Loop`` when exporting) whose step is either a search step or an
    augmentation step (``searching``): ``torch.export`` mishandles nested loops next to the
    grad-mode switches of the models' ``no_grad`` regions.
    """
    r_num, c_num = cost.shape
    if r_num > c_num:
        raise ValueError(f'linear_sum_assignment needs rows <= columns, got cost {r_num}x{c_num}')
    dev, dt = cost.device, cost.dtype
    rows = torch.arange(r_num, device=dev)
    cols = torch.arange(c_num, device=dev)
    inf = torch.full((), float('inf'), dtype=dt, device=dev)
    zero = torch.zeros((), dtype=dt, device=dev)
    long0 = torch.zeros((), dtype=torch.long, device=dev)
    true = torch.ones((), dtype=torch.bool, device=dev)

    def fresh(row):
        """Search state of a new row: shortest, path, seen rows / columns, min_val, i, sink."""
        return (torch.full((c_num,), float('inf'), dtype=dt, device=dev),
                torch.full((c_num,), -1, dtype=torch.long, device=dev),
                torch.zeros(r_num, dtype=torch.bool, device=dev),
                torch.zeros(c_num, dtype=torch.bool, device=dev), zero.clone(),
                row.clamp(max=r_num - 1), long0 - 1)

    def running(cur, *_):
        return cur < r_num

    def step(cur, searching, u, v, col4row, row4col, shortest, path, seen_r, seen_c, min_val,
             i, sink, j):
        # one search step from row i
        s_seen_r = seen_r | (rows == i)
        reduced = min_val + _pick(cost, i) - _pick(u, i) - v
        better = ~seen_c & (reduced < shortest)
        s_path = torch.where(better, i, path)
        s_short = torch.where(better, reduced, shortest)
        key = torch.where(seen_c, inf, s_short)
        lowest = key.min()
        tied = (key == lowest) & ~seen_c
        free = tied & (row4col < 0)
        pick = tied & (free | ~free.any())
        col = (pick.long() * (c_num - cols)).argmax()  # the first picked column
        s_seen_c = seen_c | (cols == col)
        owner = _pick(row4col, col)
        found = owner < 0  # a free column: the path ends there, dual update
        at_row = s_short.index_select(0, col4row.clamp(min=0))
        du = torch.where(rows == cur, lowest,
                         torch.where(s_seen_r, lowest - at_row, torch.zeros_like(u)))
        dv = torch.where(s_seen_c, lowest - s_short, torch.zeros_like(v))
        s_u = torch.where(found, u + du, u)
        s_v = torch.where(found, v - dv, v)
        s_i = torch.where(found, i, owner)
        s_sink = torch.where(found, col, sink)
        s_j = torch.where(found, col, j)
        # one augmentation step at column j (back along the path)
        a_i = _pick(path, j.clamp(min=0)).clamp(min=0)
        a_row4col = torch.where(cols == j, a_i, row4col)
        a_prev = _pick(col4row, a_i)
        a_col4row = torch.where(rows == a_i, j, col4row)
        a_done = a_i == cur
        # next state
        next_cur = torch.where(searching | ~a_done, cur, cur + 1)
        reset = fresh(next_cur)
        searched = (s_short, s_path, s_seen_r, s_seen_c, lowest, s_i, s_sink)
        kept = (shortest, path, seen_r, seen_c, min_val, i, sink)
        search_state = tuple(_select(searching, a, _select(a_done, b, c))
                             for a, b, c in zip(searched, reset, kept))
        return (next_cur, _select(searching, ~found, a_done),
                torch.where(searching, s_u, u), torch.where(searching, s_v, v),
                torch.where(searching, col4row, a_col4row),
                torch.where(searching, row4col, a_row4col),
                *search_state, torch.where(searching, s_j, a_prev))

    start = (long0.clone(), true.clone(), cost.new_zeros(r_num), cost.new_zeros(c_num),
             torch.full((r_num,), -1, dtype=torch.long, device=dev),
             torch.full((c_num,), -1, dtype=torch.long, device=dev), *fresh(long0), long0.clone())
    return _while(running, step, start)[4]


class GraphAssigner:
    """MetaPoint's assigner with the Hungarian solve in tensor ops (:func:`linear_sum_assignment`
    in float64 on the assigner's own cost), so that it is part of the exported graph.

    ``'bipart'``: the slots outside ``assign_mask`` get a constant cost and are unassigned
    afterwards; with at least as many meta-points as slots this gives the assignment of the
    masked sub-problem (they can take any leftover meta-point).
    """

    def __init__(self, assigner) -> None:
        self.assigner = assigner
        self.mode = assigner.mode

    def __call__(self, meta_points, meta_visible, keypoints, weights, assign_mask=None):
        cost = self.assigner.cost(meta_points, meta_visible, keypoints, weights)  # [B, M, K]
        if self.mode == 'bipart':
            if assign_mask is None:
                raise ValueError("'bipart' assignment needs assign_mask (co-visible keypoints)")
            keep = assign_mask.bool()[:, None]
            cost = torch.where(keep, cost, torch.zeros_like(cost))
        meta_to_kp = torch.stack([linear_sum_assignment(c.t().double()) for c in cost])
        if self.mode == 'bipart':
            assigned = assign_mask.bool()
            meta_to_kp = torch.where(assigned, meta_to_kp, torch.full_like(meta_to_kp, -1))
        else:
            assigned = torch.ones_like(meta_to_kp, dtype=torch.bool)
        return meta_to_kp, assigned


# ============================================================================================
# the test pipeline in tensor ops
# ============================================================================================


def gaussian_targets(kpts_px: torch.Tensor, visible: torch.Tensor, spec: ExportSpec
                     ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """:class:`GenerateCAPETarget` on ``[N, K, 2]`` crop-pixel keypoints: target weights
    ``[N, K]`` and, when the config makes them, unnormalised gaussian heatmaps
    ``[N, K, h, w]`` (mmpose's ``generate_gaussian_heatmaps`` rules: a (6 sigma + 1) patch
    around the rounded centre, clipped to the map; weight 0 when it lies fully off the map)."""
    (in_w, in_h), (hm_w, hm_h) = spec.input_size, spec.heatmap_size
    stride = torch.tensor(np.array([in_w / hm_w, in_h / hm_h], np.float32),
                          device=kpts_px.device)
    kpts_hm = kpts_px / stride
    radius = 3 * spec.sigma
    mu = (kpts_hm + 0.5).long().double()
    low = (mu - radius).long()  # left / top
    high = (mu + radius + 1).long()  # right / bottom
    off = (low[..., 0] >= hm_w) | (low[..., 1] >= hm_h) | (high[..., 0] < 0) | \
        (high[..., 1] < 0)
    zero = torch.zeros_like(visible)
    if not spec.with_heatmap:
        return torch.where(off, zero, visible), None
    drawn = (visible >= 0.5) & ~off
    weights = torch.where((visible >= 0.5) & off, zero, visible)
    x0 = float((2 * radius + 1) // 2)

    def axis(n: int, c: int):
        grid = torch.arange(n, device=kpts_px.device)
        inside = (grid >= low[..., c, None]) & (grid < high[..., c, None])  # [N, K, n]
        d = (grid - low[..., c, None]).float() - x0
        return inside, d * d

    in_x, dx2 = axis(hm_w, 0)
    in_y, dy2 = axis(hm_h, 1)
    gauss = torch.exp(-(dx2[..., None, :] + dy2[..., :, None]) / (2 * spec.sigma ** 2))
    keep = in_y[..., :, None] & in_x[..., None, :] & drawn[..., None, None]
    return weights, torch.where(keep, gauss, torch.zeros_like(gauss))


class _StructureTables(nn.Module):
    """Constants of the padded structure of one skeleton: eqdiv padded slots and the full link
    list (original links, then the chain links of every link's padded points)."""

    def __init__(self, spec: ExportSpec) -> None:
        super().__init__()
        k, k_max, links = spec.num_kpts, spec.max_kpt_num, spec.skeleton
        self.k, self.k_max = k, k_max
        eqdiv = spec.padding == 'eqdiv' and bool(links) and k < k_max
        n = (k_max - k) // len(links) if eqdiv else 0
        self.per_link = n
        t = np.linspace(0, 1, n + 2, dtype=np.float32)[1:-1]
        pad_a, pad_b, pad_t, pad_1mt, pad_link = [], [], [], [], []
        chains = []  # (a, b, link id) in link-list order
        chains += [(a, b, -1) for a, b in links]
        for e, (a, b) in enumerate(links if n else []):
            start = k + e * n
            pad_a += [a] * n
            pad_b += [b] * n
            pad_t += list(t)
            pad_1mt += list((1 - t).astype(np.float32))
            pad_link += [e] * n
            ends = [a] + list(range(start, start + n)) + [b]
            chains += [(ends[i], ends[i + 1], e) for i in range(n + 1)]
        self.num_padded = len(pad_a)  # slots k..k+num_padded-1; the rest stay zero
        num_links = max(len(links), 1)
        self.register_buffer('link_a', torch.tensor([a for a, _ in links] or [0]),
                             persistent=False)
        self.register_buffer('link_b', torch.tensor([b for _, b in links] or [0]),
                             persistent=False)
        self.register_buffer('pad_a', torch.tensor(pad_a, dtype=torch.long), persistent=False)
        self.register_buffer('pad_b', torch.tensor(pad_b, dtype=torch.long), persistent=False)
        self.register_buffer('pad_t', torch.tensor(np.array(pad_t, np.float32)).view(-1, 1),
                             persistent=False)
        self.register_buffer('pad_1mt', torch.tensor(np.array(pad_1mt, np.float32)).view(-1, 1),
                             persistent=False)
        # padded slot -> its link (one-hot [P, E]) for the chain visibility
        onehot = np.zeros((len(pad_link), num_links), np.float32)
        onehot[np.arange(len(pad_link)), pad_link] = 1
        self.register_buffer('pad_onehot', torch.from_numpy(onehot), persistent=False)
        # incidence of every (node p, neighbour q) pair in the link list, both directions:
        # [2L, K*K] one-hot, the link position, and the link id (-1: always present)
        ends = np.array([(a, b) for a, b, _ in chains], np.int64).reshape(-1, 2)
        flat = np.concatenate([ends[:, 0] * k_max + ends[:, 1], ends[:, 1] * k_max + ends[:, 0]])
        incid = np.zeros((len(flat), k_max * k_max), bool)
        incid[np.arange(len(flat)), flat] = True
        position = np.tile(np.arange(len(chains), dtype=np.float32), 2)
        link_of = np.tile(np.array([e for _, _, e in chains], np.int64), 2)
        chain_onehot = np.zeros((len(flat), num_links), np.float32)
        chain_onehot[link_of >= 0, link_of[link_of >= 0]] = 1
        self.register_buffer('incidence', torch.from_numpy(incid), persistent=False)
        self.register_buffer('link_position', torch.from_numpy(position), persistent=False)
        self.register_buffer('always', torch.from_numpy(link_of < 0), persistent=False)
        self.register_buffer('chain_onehot', torch.from_numpy(chain_onehot), persistent=False)
        self.num_chain_links = len(chains)


class EpisodeExportWrapper(nn.Module):
    """The test-time path of one episode (K keypoints, S shots) from plain tensors.

    Build it with :func:`build_export_wrapper`. Forward: ``support_imgs [S, 3, H, W]``,
    ``support_keypoints [S, K, 2]`` (normalised crop (x, y)), ``support_visible [S, K]`` (0/1),
    ``query_imgs [Q, 3, H, W]`` -> ``pred_keypoints [Q, K, 2]`` (normalised crop (x, y)).
    Images are raw pixel values (0-255, the loader's channel order) when ``spec.normalize``,
    else already normalised as the model's data preprocessor does.
    """

    def __init__(self, model: nn.Module, spec: ExportSpec) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        self.tables = _StructureTables(spec)

    # ------------------------------------------------------------------ pipeline pieces
    def pad_slots(self, kpts: torch.Tensor, visible: torch.Tensor):
        """``[S, K, 2]`` / ``[S, K]`` -> zero-padded to ``[S, K_max, ...]``."""
        s, k = visible.shape
        extra = self.spec.max_kpt_num - k
        return (torch.cat([kpts, kpts.new_zeros(s, extra, 2)], 1),
                torch.cat([visible, visible.new_zeros(s, extra)], 1))

    def eqdiv(self, kpts: torch.Tensor, weights: torch.Tensor, visible: torch.Tensor):
        """:class:`KeypointPadding` ``'eqdiv'`` (prob 1) on the padded slots; returns keypoints,
        weights, visibility ``[S, K_max(, 2)]`` and the chain-link activity ``[S, E]``."""
        tb = self.tables
        k, p = tb.k, tb.num_padded
        real_w = weights[:, :k]
        link_on = ((real_w.index_select(1, tb.link_a) > 0) &
                   (real_w.index_select(1, tb.link_b) > 0)).float()  # [S, E]
        if p == 0:
            return kpts, weights, visible, link_on
        real_v = visible[:, :k]
        link_vis = ((real_v.index_select(1, tb.link_a) > 0) &
                    (real_v.index_select(1, tb.link_b) > 0)).float()
        pts = tb.pad_t * kpts.index_select(1, tb.pad_a) + \
            tb.pad_1mt * kpts.index_select(1, tb.pad_b)  # [S, P, 2]
        rest = self.spec.max_kpt_num - k - p
        s = kpts.shape[0]
        kpts = torch.cat([kpts[:, :k], pts, kpts.new_zeros(s, rest, 2)], 1)
        weights = torch.cat([real_w, link_on @ tb.pad_onehot.t(), weights.new_zeros(s, rest)], 1)
        visible = torch.cat([real_v, link_vis @ tb.pad_onehot.t(), visible.new_zeros(s, rest)],
                            1)
        return kpts, weights, visible, link_on

    def neighbour_table(self, weights: torch.Tensor, link_on: torch.Tensor) -> torch.Tensor:
        """:func:`structural_neighbours` of every support ``[S, K_max, num]`` (long): the
        breadth-first order over the padded skeleton, the expanded nodes being those with weight
        > 0, computed level by level for all roots at once."""
        tb, num = self.tables, self.spec.neighbours
        s, k_max = weights.shape
        nodes = torch.arange(k_max, device=weights.device)
        if tb.num_chain_links == 0:  # no skeleton: every row is the node itself
            return nodes.view(1, -1, 1).expand(s, k_max, num).clone()
        inf = float('inf')
        # adjacency order A[s, p, q]: position of the first present link p-q, inf if none
        present = tb.always[None] | (link_on @ tb.chain_onehot.t() > 0)  # [S, 2L]
        pos = torch.where(present, tb.link_position[None], torch.full_like(link_on[:, :1], inf))
        adj = torch.where(tb.incidence[None], pos[..., None],
                          torch.full_like(pos[..., None], inf)).amin(1).view(s, k_max, k_max)
        expand = (weights > 0)[:, :, None]  # only visible nodes have neighbours
        adj = torch.where(expand, adj, torch.full_like(adj, inf))
        big = float(tb.num_chain_links + 1)
        eye = torch.eye(k_max, dtype=torch.bool, device=weights.device)[None].expand(s, -1, -1)
        order = torch.where(eye, torch.zeros_like(adj), torch.full_like(adj, inf))  # [S, R, N]
        frontier, visited = eye, eye
        count = torch.ones(s, k_max, 1, dtype=adj.dtype, device=adj.device)
        for _ in range(num - 1):  # a node at depth d has queue position >= d
            via = order[..., None] * big + adj[:, None]  # [S, R, P, N]
            via = torch.where(frontier[..., None], via, torch.full_like(via, inf))
            key = via.amin(2)  # [S, R, N]
            new = ~visited & (key < inf)
            key = torch.where(new, key, torch.full_like(key, inf))
            rank = (key[..., None, :] < key[..., :, None]).sum(-1).to(adj.dtype)  # [S, R, N]
            order = torch.where(new, count + rank, order)
            count = count + new.sum(-1, keepdim=True).to(adj.dtype)
            visited = visited | new
            frontier = new
        slots = torch.arange(num, device=adj.device, dtype=adj.dtype)
        hit = order[..., None, :] == slots[:, None]  # [S, R, num, N]
        idx = (hit.long() * nodes).sum(-1)
        roots = nodes.view(1, -1, 1).expand_as(idx)
        return torch.where(hit.any(-1), idx, roots)

    # ------------------------------------------------------------------ forward
    def forward(self, support_imgs: torch.Tensor, support_keypoints: torch.Tensor,
                support_visible: torch.Tensor, query_imgs: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        k = spec.num_kpts
        (w_in, h_in), s = spec.input_size, spec.shots
        expected = dict(support_imgs=(support_imgs, (s, 3, h_in, w_in)),
                        support_keypoints=(support_keypoints, (s, k, 2)),
                        support_visible=(support_visible, (s, k)),
                        query_imgs=(query_imgs[0], (3, h_in, w_in)))
        for name, (value, shape) in expected.items():
            got = tuple(value.shape)
            if got != shape:
                raise ExportError(f'{name} has shape {got}, the graph is built for {shape}' +
                                  (' per query' if name == 'query_imgs' else ''))
        s_imgs, q_imgs = support_imgs[None].float(), query_imgs[None].float()
        if spec.normalize:
            s_imgs = self.model.data_preprocessor.normalize(s_imgs)
            q_imgs = self.model.data_preprocessor.normalize(q_imgs)
        # visibility as the loader packs it: min(1, v) (COCO's v = 2 counts as 1)
        kpts, vis = self.pad_slots(support_keypoints.float(),
                                   support_visible.float().clamp(0, 1))
        size = torch.tensor([float(w_in), float(h_in)], device=kpts.device)
        weights, heatmaps = gaussian_targets(kpts * size, vis, spec)
        neighbours = None
        if spec.padding == 'eqdiv':
            kpts, weights, vis, link_on = self.eqdiv(kpts, weights, vis)
        else:
            link_on = weights.new_zeros(weights.shape[0], max(len(spec.skeleton), 1))
        if spec.neighbours is not None:
            neighbours = self.neighbour_table(weights, link_on)[None]
        q = q_imgs.shape[1]
        k_max = spec.max_kpt_num
        q_kpts = kpts.new_full((1, q, k_max, 2), 0.5)
        q_w = weights.new_ones(1, q, k_max)
        batch = EpisodeBatch(
            support_imgs=s_imgs, query_imgs=q_imgs, support_keypoints=kpts[None],
            query_keypoints=q_kpts, support_keypoints_visible=vis[None],
            query_keypoints_visible=q_w, support_keypoint_weights=weights[None],
            query_keypoint_weights=q_w,
            num_kpts=torch.full((1, ), k, dtype=torch.long, device=kpts.device),
            category_id=torch.full((1, ), -1, dtype=torch.long, device=kpts.device),
            skeleton=[torch.tensor(spec.skeleton, dtype=torch.long).reshape(-1, 2)],
            support_metas=[[]], query_metas=[[]],  # no metadata in the graph
            support_heatmaps=None if heatmaps is None else heatmaps[None],
            support_neighbour_idx=neighbours)
        return self.model.predict_points(batch)[0, :, :k]


def build_export_wrapper(model: nn.Module, cfg, num_kpts: int, shots: int,
                         input_size: Optional[Sequence[int]] = None, skeleton=None,
                         normalize: bool = True) -> EpisodeExportWrapper:
    """The graph's module for ``model`` (left untouched: a copy in eval mode is wrapped, with
    MetaPoint's assigner replaced by :class:`GraphAssigner` and FMMP's structural attention on
    its project-then-sample path, the same function up to float rounding). ``input_size`` is
    (W, H)."""
    spec = export_spec(model, cfg, num_kpts, shots, input_size, skeleton, normalize)
    model = copy.deepcopy(model).cpu().eval()
    if getattr(model, 'assigner', None) is not None:
        model.assigner = GraphAssigner(model.assigner)
    for module in model.modules():
        # FMMP's structural attention: project then sample (GridSample); its gather path
        # (embedding_bag) becomes an ONNX Loop over every bag, far slower in ONNX Runtime
        if getattr(module, 'gather_mode', None) == 'auto':
            module.gather_mode = 'project_first'
    return EpisodeExportWrapper(model, spec).eval()


# ============================================================================================
# the reference: the config's own pipeline and the unmodified model
# ============================================================================================


@torch.no_grad()
def pipeline_points(model: nn.Module, cfg, spec: ExportSpec, support_imgs, support_keypoints,
                    support_visible, query_imgs) -> torch.Tensor:
    """The same episode through the config's test transforms (``GenerateCAPETarget``, the
    episode pipeline), ``episode_collate``, the data preprocessor (when ``spec.normalize``) and
    ``model(batch, mode='tensor')``. Arrays as the graph takes them; -> ``[Q, K, 2]``."""
    from metapoint.datasets import episode_collate
    from metapoint.registry import TRANSFORMS
    from metapoint.utils.benchmarking import episode_settings
    st = episode_settings(cfg, train=False, input_size=spec.input_size)
    target = TRANSFORMS.build(st['target'])
    steps = [TRANSFORMS.build(t) for t in st['episode_pipeline']]
    (w, h), k_max, k = spec.input_size, spec.max_kpt_num, spec.num_kpts
    size = np.array([w, h], np.float32)

    def instance(img, kp01, vis, ann_id):
        kp = np.zeros((1, k_max, 2), np.float32)
        v = np.zeros((1, k_max), np.float32)
        kp01_full = np.zeros((k_max, 2), np.float32)
        if kp01 is not None:
            kp01_full[:k] = kp01
            kp[0, :k] = kp01 * size
            v[0, :k] = np.clip(vis, 0, 1)
        res = target(dict(transformed_keypoints=kp.copy(), keypoints=kp.copy(),
                          keypoints_visible=v.copy(), input_size=(w, h)))
        inst = dict(img=torch.as_tensor(np.asarray(img, np.float32)),
                    keypoints=torch.from_numpy(kp01_full),
                    keypoints_visible=torch.from_numpy(v[0]),
                    keypoint_weights=torch.from_numpy(res['keypoint_weights'][0]),
                    meta=dict(ann_id=ann_id, input_size=(w, h)))
        if 'heatmaps' in res:
            inst['heatmaps'] = torch.from_numpy(np.ascontiguousarray(res['heatmaps']))
        return inst

    supports = [instance(support_imgs[i], np.asarray(support_keypoints[i], np.float32),
                         np.asarray(support_visible[i], np.float32), i + 1)
                for i in range(len(support_imgs))]
    queries = [instance(img, None, None, 1000 + i) for i, img in enumerate(query_imgs)]
    episode = dict(supports=supports, queries=queries, num_kpts=k, category_id=0,
                   skeleton=[list(p) for p in spec.skeleton])
    for step in steps:
        episode = step(episode)
    data = episode_collate([episode])
    model = model.eval()
    if spec.normalize:
        batch = model.data_preprocessor(data)['inputs']
    else:
        batch = data['inputs'].to(next(model.parameters()).device)
    return model(batch, mode='tensor')[0, :, :k].cpu()


def random_inputs(spec: ExportSpec, queries: int = 1, seed: int = 0) -> Dict[str, np.ndarray]:
    """Random graph inputs (raw 0-255 images, or N(0, 1) ones for normalised input; keypoints
    in [0.05, 0.95]; each keypoint visible with probability 0.8, the first always)."""
    rng = np.random.default_rng(seed)
    (w, h), s, k = spec.input_size, spec.shots, spec.num_kpts

    def images(n):
        if spec.normalize:
            return rng.integers(0, 256, (n, 3, h, w)).astype(np.float32)
        return rng.standard_normal((n, 3, h, w)).astype(np.float32)

    vis = (rng.random((s, k)) < 0.8).astype(np.float32)
    vis[:, 0] = 1
    return dict(support_imgs=images(s),
                support_keypoints=rng.uniform(0.05, 0.95, (s, k, 2)).astype(np.float32),
                support_visible=vis, query_imgs=images(queries))


# ============================================================================================
# export and check
# ============================================================================================


def check_opset(opset: int) -> None:
    """Raise :class:`ExportError` for an opset the exporter cannot write."""
    if opset < MIN_OPSET:
        raise ExportError(f'--opset {opset} is not supported: the exporter (torch.export + '
                          f'onnxscript) writes opset >= {MIN_OPSET} (GridSample, the deformable '
                          'attention, needs >= 16 in any case)')


def export_onnx(wrapper: EpisodeExportWrapper, path: str, opset: int = DEFAULT_OPSET,
                queries: int = 2, dynamic_queries: bool = True,
                metadata: Optional[Dict[str, str]] = None) -> dict:
    """Export ``wrapper`` to ``path`` with the dynamo exporter (``torch.export``), one file.

    ``dynamic_queries``: the query count Q is a dynamic axis of ``query_imgs`` and
    ``pred_keypoints`` (``queries`` is the example count). The exporter's graph optimiser is
    not run (it drops ``x + 1e-8`` terms, which turns the heatmap pooling of all-zero heatmaps
    into 0 / 0); ONNX Runtime optimises at load time. Returns what was done.
    """
    check_opset(opset)
    spec = wrapper.spec
    example = tuple(torch.from_numpy(v) for v in random_inputs(spec, queries, seed=1).values())
    dynamic_shapes = None
    if dynamic_queries:
        q_dim = torch.export.Dim('queries', min=1, max=4096)
        dynamic_shapes = dict(support_imgs=None, support_keypoints=None, support_visible=None,
                              query_imgs={0: q_dim})
    parent = osp.dirname(osp.abspath(path))
    os.makedirs(parent, exist_ok=True)
    # no_grad: the models' own no_grad regions then add no grad-mode switches to the graph
    # (torch.export splits the graph at such switches and then misses the loops' subgraphs)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        program = torch.onnx.export(wrapper, example, dynamo=True, opset_version=opset,
                                    input_names=list(INPUT_NAMES),
                                    output_names=list(OUTPUT_NAMES),
                                    dynamic_shapes=dynamic_shapes, optimize=False,
                                    external_data=False, verbose=False)
    for key, value in (metadata or {}).items():
        program.model.metadata_props[key] = str(value)
    program.save(path, external_data=False)
    return dict(path=path, exporter='dynamo (torch.export)', opset=opset,
                dynamic_queries=dynamic_queries)


def onnx_session(path: str):
    """An ONNX Runtime session on the CPU (errors-only logging) for a graph of this module,
    its inputs checked."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    sess = ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])
    names = [i.name for i in sess.get_inputs()]
    if sorted(names) != sorted(INPUT_NAMES):
        raise ExportError(f'{path} has inputs {names}, expected {list(INPUT_NAMES)}')
    return sess


def onnx_points(path_or_session, inputs: Dict[str, np.ndarray]) -> np.ndarray:
    """Run the graph (a path or an :func:`onnx_session`) -> ``pred_keypoints``."""
    sess = onnx_session(path_or_session) if isinstance(path_or_session, (str, os.PathLike)) \
        else path_or_session
    return sess.run(None, {n: inputs[n] for n in INPUT_NAMES})[0]


def check_onnx(path: str, wrapper: EpisodeExportWrapper, model: nn.Module, cfg,
               queries: Sequence[int] = (1, 3), seed: int = 123) -> dict:
    """ONNX Runtime vs PyTorch on random inputs (other than the export example): the graph's
    output against the wrapper in eager mode and against :func:`pipeline_points` (the config's
    pipeline and the unmodified model). Max abs differences over all runs."""
    sess = onnx_session(str(path))
    diff_eager, diff_pipeline = 0.0, 0.0
    for i, q in enumerate(queries):
        inputs = random_inputs(wrapper.spec, q, seed=seed + i)
        got = onnx_points(sess, inputs)
        if got.shape != (q, wrapper.spec.num_kpts, 2):
            raise ExportError(f'{path} returned shape {got.shape} for {q} queries')
        with torch.no_grad():
            eager = wrapper(*(torch.from_numpy(v) for v in inputs.values())).numpy()
        ref = pipeline_points(model, cfg, wrapper.spec, *inputs.values()).numpy()
        diff_eager = max(diff_eager, float(np.abs(got - eager).max()))
        diff_pipeline = max(diff_pipeline, float(np.abs(got - ref).max()))
    return dict(queries=list(queries), max_abs_diff_vs_eager=diff_eager,
                max_abs_diff_vs_pipeline=diff_pipeline)


__all__ = ['DEFAULT_OPSET', 'EpisodeExportWrapper', 'ExportError', 'ExportSpec',
           'GraphAssigner', 'INPUT_NAMES', 'MIN_OPSET', 'OUTPUT_NAMES', 'build_export_wrapper',
           'chain_skeleton', 'check_onnx', 'check_opset', 'export_onnx', 'export_spec',
           'gaussian_targets', 'linear_sum_assignment', 'onnx_points', 'onnx_session',
           'parse_skeleton', 'pipeline_points', 'random_inputs']
