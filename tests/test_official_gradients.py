"""Gradients of the official total loss match the official code (MetaPoint and FMMP, split-1).

Each model is built with the converted rule weights (as in the forward parity tests), run once
in train mode with dropout off on the fixture inputs, and the official total loss (the sum of the
official loss terms, each already weighted) is back-propagated once. Every parameter's gradient is
then compared, under its official state_dict key, with the packed official gradients
(``tests/data/official/{prefix}.grads.pt.xz``; full gradients stored as scaled float16 for the
heads and int8 for the rest, far inside the tolerances below):

* ``stats`` (every parameter): ``sum`` and ``ramp_sum`` differences divided by the official
  ``abs_sum``; ``abs_sum`` and ``l2`` relative. ``ramp_sum`` weights the flattened gradient with
  ``linspace(-1, 1, numel)``, so it sees a reversed or swapped layout (e.g. x/y rows); a
  transposed square weight can stay within the statistics tolerance, only a full gradient
  rules that out.
* ``grads`` (full gradients of a subset): ``rel_l2 = |g_ours - g_official| / |g_official|``.

Tolerances are those the fixture README suggests: the prediction heads sit downstream of every
rounding-sensitive event (ReLU zero crossings, bilinear samples crossing a pixel centre), so they
agree to ~1e-4 between 1 and 2 threads of the official code; every other parameter moves by a few
% under such flips. The tolerances catch structural errors (a missing or extra ``detach``, a wrong
loss weight or normaliser, a parameter reached or not reached, a permuted layout), not
float-level equivalence. Run with ``-rP`` to see the measured maxima per group.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import pytest
import torch

from metapoint.models.converters import convert_fmmp_official, convert_metapoint_official
from tests.helpers import (REPO, fmmp_official_batch, load_official_fixture, load_official_grads,
                           metapoint_official_batch, official_weights_model)

#: per model: config, converter, fixture batch builder, official key prefixes of the prediction
#: heads (the README's tight group) and the last layer's (x, y) output weight
MODELS = {
    'metapoint_s1': dict(
        config=REPO / 'configs' / 'metapoint' / 'metapoint_r50_4xb16_mp100-split1_1shot.py',
        converter=convert_metapoint_official, batch=metapoint_official_batch,
        heads=('meta_decoder.point_heads.', 'ref_decoder.point_heads.', 'visible_head.'),
        xy_weight='ref_decoder.point_heads.2.mlp.6.weight'),
    'fmmp_s1': dict(
        config=REPO / 'configs' / 'fmmp' / 'fmmp_r50_1xb16_mp100-split1_1shot.py',
        converter=convert_fmmp_official, batch=fmmp_official_batch,
        heads=('predictor.kpt_branch.',), xy_weight='predictor.kpt_branch.2.mlp.6.weight'),
}
#: group -> (full-gradient rel_l2 tolerance, statistics tolerance)
TOLERANCES = {'head': (1e-2, 2e-3), 'other': (0.2, 5e-2), 'backbone': (0.2, 5e-2)}
STAT_NAMES = ('sum', 'abs_sum', 'l2', 'ramp_sum')
LOSS_ATOL = 1e-5
#: the fixture generator ran the official code with 2 intra-op threads
FIXTURE_THREADS = 2


@dataclass
class Comparison:
    """One parameter compared with the official gradient (``rel_l2`` None without a full one)."""
    key: str
    group: str
    stats: Dict[str, float]
    rel_l2: Optional[float]

    @property
    def stat_max(self) -> Tuple[str, float]:
        name = max(self.stats, key=self.stats.get)
        return name, self.stats[name]

    def failures(self) -> List[str]:
        rel_tol, stat_tol = TOLERANCES[self.group]
        bad = [f'{n} {v:.3g}' for n, v in self.stats.items() if not v <= stat_tol]
        if self.rel_l2 is not None and not self.rel_l2 <= rel_tol:
            bad.append(f'rel_l2 {self.rel_l2:.3g}')
        return bad


def gradient_group(key: str, heads: Tuple[str, ...]) -> str:
    """``'head'``, ``'backbone'`` or ``'other'`` for an official parameter key."""
    if key.startswith(heads):
        return 'head'
    return 'backbone' if key.startswith('backbone.') else 'other'


def _grad_stats(grad: torch.Tensor) -> Dict[str, float]:
    """The fixture's statistics of one gradient (float64 accumulation)."""
    g = grad.detach().double().flatten()
    ramp = torch.linspace(-1, 1, g.numel(), dtype=torch.float64)
    return dict(sum=g.sum().item(), abs_sum=g.abs().sum().item(), l2=g.norm().item(),
                ramp_sum=(g * ramp).sum().item())


def compare_gradients(reference: dict, ours: Dict[str, Optional[torch.Tensor]],
                      heads: Tuple[str, ...]) -> List[Comparison]:
    """Compare ``ours`` (official key -> gradient, None if none) with a loaded ``.grads.pt``.

    Only ``reference['stats']`` (every parameter) and ``reference['grads']`` (any subset) are
    read. A parameter without a gradient on our side is compared as zeros.
    """
    rows = []
    for key, ref in reference['stats'].items():
        grad = ours.get(key)
        if grad is None:
            grad = torch.zeros(ref['shape'])
        if list(grad.shape) != list(ref['shape']):
            raise AssertionError(f'{key}: gradient shape {list(grad.shape)} != official '
                                 f'{list(ref["shape"])}')
        mine = _grad_stats(grad)
        scale = max(ref['abs_sum'], 1e-30)
        stats = dict(sum=abs(mine['sum'] - ref['sum']) / scale,
                     abs_sum=abs(mine['abs_sum'] - ref['abs_sum']) / scale,
                     l2=abs(mine['l2'] - ref['l2']) / max(ref['l2'], 1e-30),
                     ramp_sum=abs(mine['ramp_sum'] - ref['ramp_sum']) / scale)
        rel_l2 = None
        if key in reference['grads']:
            full = reference['grads'][key].double()
            rel_l2 = ((grad.double() - full).norm() / full.norm().clamp_min(1e-30)).item()
        rows.append(Comparison(key, gradient_group(key, heads), stats, rel_l2))
    return rows


def official_key_map(converter: Callable, keys) -> Dict[str, str]:
    """Our parameter name -> official key, from the converter (which must be a pure rename)."""
    sentinels = {k: torch.empty(0) for k in keys}
    back = {id(v): k for k, v in sentinels.items()}
    converted = converter(sentinels)
    not_renamed = [k for k, v in converted.items() if id(v) not in back]
    assert not not_renamed, (f'the converter builds new tensors for {not_renamed[:5]}: compare '
                             'those gradients in the official layout')
    return {ours: back[id(v)] for ours, v in converted.items()}


@dataclass
class GradientRun:
    prefix: str
    reference: dict
    losses: Dict[str, float]
    total: float
    grads: Dict[str, Optional[torch.Tensor]]     # official key -> our gradient
    unmapped: List[str]                          # our parameters without an official key
    rows: List[Comparison]


@pytest.fixture(scope='module', params=list(MODELS))
def run(request) -> GradientRun:
    """One train-mode forward and backward of the official total loss per model."""
    prefix = request.param
    spec = MODELS[prefix]
    reference = load_official_grads(prefix)
    inputs, _ = load_official_fixture(prefix)
    threads = torch.get_num_threads()
    torch.set_num_threads(FIXTURE_THREADS)
    try:
        model = official_weights_model(spec['config'], spec['converter'], prefix)
        model.train()
        batch = spec['batch'](inputs)
        losses = model.loss(batch)
        terms = reference['info']['loss_terms']
        assert set(losses) == set(terms), f'loss terms {sorted(losses)} != official {terms}'
        total = sum(losses[k] for k in terms)
        total.backward()
    finally:
        torch.set_num_threads(threads)
    to_official = official_key_map(spec['converter'], reference['stats'])
    params = dict(model.named_parameters())
    grads = {to_official[n]: (None if p.grad is None else p.grad.detach().clone())
             for n, p in params.items() if n in to_official}
    return GradientRun(prefix, reference, {k: v.item() for k, v in losses.items()}, total.item(),
                       grads, sorted(set(params) - set(to_official)),
                       compare_gradients(reference, grads, spec['heads']))


def summary(result: GradientRun) -> str:
    """Max measured differences per group (for the docs)."""
    lines = [f'{result.prefix}: loss_total {result.total:.7f} vs '
             f'{result.reference["info"]["loss_total"]:.7f} '
             f'(|diff| {abs(result.total - result.reference["info"]["loss_total"]):.2g})']
    for group in TOLERANCES:
        rows = [r for r in result.rows if r.group == group]
        worst = max(rows, key=lambda r: r.stat_max[1])
        full = [r for r in rows if r.rel_l2 is not None]
        line = (f'  {group}: {len(rows)} params, stats max {worst.stat_max[1]:.2g} '
                f'({worst.stat_max[0]}, {worst.key})')
        if full:
            worst_full = max(full, key=lambda r: r.rel_l2)
            line += (f'; {len(full)} full grads, rel_l2 max {worst_full.rel_l2:.2g} '
                     f'({worst_full.key})')
        lines.append(line)
    return '\n'.join(lines)


def _offenders(rows: List[Comparison]) -> List[str]:
    return [f'{r.key} [{r.group}]: ' + ', '.join(r.failures()) for r in rows if r.failures()]


def test_loss_total_matches_official(run):
    info = run.reference['info']
    assert abs(run.total - info['loss_total']) <= LOSS_ATOL, (run.total, info['loss_total'])
    off = {k: (run.losses[k], v) for k, v in info['loss_values'].items()
           if not abs(run.losses[k] - v) <= LOSS_ATOL}
    assert not off, f'loss terms beyond {LOSS_ATOL} (ours, official): {off}'


def test_every_parameter_gets_a_nonzero_gradient(run):
    assert run.reference['info']['parameters_without_grad'] == []
    assert not run.unmapped, f'parameters without an official key: {run.unmapped}'
    missing = sorted(set(run.reference['stats']) - set(run.grads))
    assert not missing, f'official parameters missing from our model: {missing}'
    none = [k for k, g in run.grads.items() if g is None]
    zero = [k for k, g in run.grads.items() if g is not None and not g.abs().sum() > 0]
    nonfinite = [k for k, g in run.grads.items() if g is not None and not g.isfinite().all()]
    assert not (none or zero or nonfinite), (f'no gradient: {none}; all-zero gradient: {zero}; '
                                             f'non-finite gradient: {nonfinite}')


def test_gradient_statistics_match_official(run):
    print(summary(run))
    bad = _offenders([Comparison(r.key, r.group, r.stats, None) for r in run.rows])
    assert not bad, (f'{len(bad)} gradient statistics beyond tolerance {TOLERANCES}:\n'
                     + '\n'.join(bad))


def test_full_gradients_match_official(run):
    full = [r for r in run.rows if r.rel_l2 is not None]
    assert len(full) == len(run.reference['grads'])
    bad = _offenders([Comparison(r.key, r.group, {}, r.rel_l2) for r in full])
    assert not bad, f'{len(bad)} full gradients beyond tolerance:\n' + '\n'.join(bad)


def test_comparison_flags_structural_errors(run):
    """The checks above can fail: a 10% loss-weight error, swapped x/y rows of the last point
    head and a parameter the loss no longer reaches are all reported."""
    spec = MODELS[run.prefix]
    scaled = {k: g * 1.1 for k, g in run.grads.items()}
    assert all(r.failures() for r in compare_gradients(run.reference, scaled, spec['heads']))
    xy = spec['xy_weight']
    cut = next(k for k in run.reference['stats'] if gradient_group(k, spec['heads']) == 'other')
    broken = dict(run.grads, **{xy: run.grads[xy].flip(0), cut: None})
    # the stats alone (ramp_sum) must see the swap, and so must the full gradient
    for reference in (dict(run.reference, grads={}), run.reference):
        rows = compare_gradients(reference, broken, spec['heads'])
        assert {r.key for r in rows if r.failures()} == {xy, cut}
