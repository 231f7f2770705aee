"""MetaPoint matcher and losses against the official fixtures (packed official function fixtures)."""
import pytest
import torch

from metapoint.models.losses import meta_point_losses, refine_losses
from metapoint.models.task_modules import MetaPointAssigner, gather_by_assignment
from tests.helpers import load_official_functions


@pytest.fixture(scope='module')
def functions():
    return load_official_functions()


def _matcher_inputs(m):
    pts = torch.stack(m['meta_point_s_list'], 1)  # [B, S, L, M, 2]
    vis = torch.stack(m['meta_visible_s_list'], 1)[..., 0]  # [B, S, M]
    kpts = torch.stack(m['gtpoints_s_list'], 1)
    w = torch.stack(m['gtvisibles_s_list'], 1)[..., 0]
    return pts, vis, kpts, w


def _assigner(h):
    return MetaPointAssigner(h['l1'], h['vp'], h['vn'], h['aux'])


@pytest.mark.parametrize('case', ['one_shot', 'two_shot', 'no_covisible_in_sample1',
                                  'tie_dependent'])
def test_assignment_matches_official_on_covisible_columns(functions, case):
    data = functions['metapoint_losses'][case]
    m2k, assigned = _assigner(functions['hypercfg'])(*_matcher_inputs(data['matcher_in']))
    cov = data['matcher_in']['covisibles'][..., 0]
    assert assigned.all()
    assert torch.equal(m2k[cov], data['meta_to_kp'][cov])
    # a valid assignment: distinct meta-points per episode
    for row in m2k:
        assert len(set(row.tolist())) == len(row)


@pytest.mark.parametrize('case', ['one_shot', 'two_shot', 'no_covisible_in_sample1'])
def test_losses_match_official(functions, case):
    h = functions['hypercfg']
    data = functions['metapoint_losses'][case]
    li = data['loss_in']
    m2k = data['meta_to_kp']
    assigned = torch.ones_like(m2k, dtype=torch.bool)
    meta = meta_point_losses(li['meta_point'], li['meta_visible'][..., 0], m2k, assigned,
                             li['gtpoints'], li['gtvisibles'][..., 0], l1_weight=h['l1'],
                             vp_weight=h['vp'], vn_weight=h['vn'], meta_weight=h['meta'],
                             slack=h['aux'])
    ref = refine_losses(li['ref_point'], li['gtpoints'], li['covisibles'][..., 0],
                        l1_weight=h['l1'], ref_weight=h['ref'], slack=h['aux'])
    expected = dict(data['meta_loss'], **data['ref_loss'])
    assert set(meta) | set(ref) == set(expected)
    for key, value in {**meta, **ref}.items():
        torch.testing.assert_close(value, expected[key], atol=1e-6, rtol=1e-5, msg=key)


def test_refine_loss_without_any_covisible_is_zero_not_nan():
    pts = torch.rand(2, 3, 4, 2, requires_grad=True)
    out = refine_losses(pts, torch.rand(2, 4, 2), torch.zeros(2, 4, dtype=torch.bool),
                        l1_weight=1.0, ref_weight=1.0, slack=0.1)
    total = sum(out.values())
    assert torch.isfinite(total) and total.item() == 0
    total.backward()
    assert pts.grad is not None


def test_bipart_assigns_only_masked_slots_and_gather_respects_gate():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(1, 1, 3, 5, 2, generator=g)
    vis = torch.rand(1, 1, 5, generator=g).clamp(0.01, 0.99)
    kpts = torch.rand(1, 1, 7, 2, generator=g)
    w = torch.ones(1, 1, 7)
    mask = torch.tensor([[True, False, True, True, False, False, True]])
    m2k, assigned = MetaPointAssigner(mode='bipart')(pts, vis, kpts, w, assign_mask=mask)
    assert torch.equal(assigned, mask) and (m2k[~mask] == -1).all()
    assert len(set(m2k[mask].tolist())) == 4
    with pytest.raises(ValueError, match='at least as many meta-points'):
        MetaPointAssigner(mode='nbipart')(pts, vis, kpts, w)
    seq = torch.arange(10.0).view(1, 5, 2)
    out = gather_by_assignment(seq, m2k, mask)
    assert torch.equal(out[0, 1], torch.zeros(2))
    assert torch.equal(out[0, 0], seq[0, m2k[0, 0]])
