"""Mixed precision (bfloat16 autocast on CPU), channels-last and ``torch.compile``.

On the official split-1 configs of the three models, shrunk as the benchmark tests do (ResNet-18,
64x64 crops, random weights, synthetic episodes):

* a training step under ``AutocastOptimWrapper`` (bfloat16 on CPU) gives finite losses, finite
  gradients for every trained parameter and moves the weights; its losses are within a stated
  tolerance of the float32 ones, and the deformable sampling and the losses ran in float32;
* evaluation under bfloat16 autocast predicts points within a stated tolerance of float32;
* ``channels_last=True`` predicts the float32 points (rounding-level differences) and trains;
* ``compile`` (``nn.Module.compile`` of the parts) predicts the eager points and keeps the
  state-dict keys; a bad ``compile`` key or part is refused with a message naming it.
"""
import pytest
import torch
from mmengine.config import Config

from metapoint.engine.mixed_precision import AutocastOptimWrapper, parse_amp_dtype
from metapoint.models.estimators.base import parse_compile_cfg
from metapoint.models.layers import precision
from metapoint.utils.benchmarking import (build_model, load_config, perturb_head_weights,
                                          synthetic_episodes)
from tests.helpers import REPO

OFFICIAL = {
    'metapoint': 'configs/metapoint/metapoint_r50_4xb16_mp100-split1_1shot.py',
    'fmmp': 'configs/fmmp/fmmp_r50_1xb16_mp100-split1_1shot.py',
    'capeformer': 'configs/capeformer/capeformer_r50_1xb16_mp100-split1_1shot.py',
}
#: allowed distance of bf16 from fp32 predicted points, normalised crop units (1/64 = 1 px of
#: the 64 px crops): (median, max). CapeFormer's proposals are the argmax of a similarity map
#: that is nearly flat with random weights, so bf16-rounded features move some peaks to a
#: neighbouring cell; MetaPoint and FMMP regress points continuously.
BF16_POINT_TOL = {'metapoint': (0.002, 0.01), 'fmmp': (0.002, 0.01), 'capeformer': (0.03, 0.1)}
#: largest allowed relative difference of a bf16 loss term from its fp32 value
BF16_LOSS_RTOL = 0.05


def _tiny(name, **model_options):
    cfg = load_config(str(REPO / OFFICIAL[name]))
    cfg.model.update(model_options)
    torch.manual_seed(0)
    model = build_model(cfg, backbone_depth=18)
    perturb_head_weights(model)  # FMMP's zero-initialised heads predict constant points
    return cfg, model


def _batch(cfg, model, train, queries=2, batch=1):
    torch.manual_seed(1)
    return synthetic_episodes(cfg, model, shots=1, queries=queries, batch=batch, train=train,
                              input_size=(64, 64))


def _losses(model, batch):
    losses = model(batch, mode='loss')
    return {k: v for k, v in losses.items() if torch.is_tensor(v)}


def _float_dtypes(obj, out):
    if torch.is_tensor(obj):
        if obj.is_floating_point():
            out.append(obj.dtype)
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            _float_dtypes(item, out)
    elif isinstance(obj, dict):
        _float_dtypes(list(obj.values()), out)
    return out


@pytest.mark.parametrize('name', list(OFFICIAL))
def test_bf16_autocast_on_cpu_eval_and_train_step(name):
    cfg, model = _tiny(name)
    # evaluation: points within BF16_POINT_TOL of float32
    model.eval()
    batch = _batch(cfg, model, train=False)
    with torch.no_grad():
        fp32_points = model(batch, mode='tensor')
        with torch.autocast('cpu', dtype=torch.bfloat16):
            bf16_points = model(batch, mode='tensor')
    dist = (bf16_points.float() - fp32_points).norm(dim=-1).flatten()
    median, largest = BF16_POINT_TOL[name]
    assert dist.median().item() <= median and dist.max().item() <= largest, \
        (dist.median().item(), dist.max().item())
    assert dist.max().item() > 0  # the region really ran in low precision

    # training: the same dropout draws (seed) in float32 and under the wrapper
    model.train()
    batch = _batch(cfg, model, train=True, queries=1, batch=2)
    torch.manual_seed(3)
    with torch.no_grad():
        fp32 = {k: v.item() for k, v in _losses(model, batch).items()}
    wrapper = AutocastOptimWrapper(optimizer=torch.optim.Adam(model.parameters(), lr=1e-3))
    seen = []
    original = precision.to_float32

    def spy(obj):  # what the float32 regions hand to the functions they wrap
        out = original(obj)
        _float_dtypes(out, seen)
        return out

    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    precision.to_float32 = spy
    try:
        torch.manual_seed(3)
        with wrapper.optim_context(model):
            assert torch.is_autocast_enabled('cpu')
            assert torch.get_autocast_dtype('cpu') == torch.bfloat16
            losses = _losses(model, batch)
    finally:
        precision.to_float32 = original
    # the criterion (and, for MetaPoint / FMMP, the deformable sampling) got float32 inputs
    assert seen and set(seen) == {torch.float32}
    for key, value in losses.items():
        assert value.dtype == torch.float32, key
        assert torch.isfinite(value), key
        assert abs(value.item() - fp32[key]) <= BF16_LOSS_RTOL * abs(fp32[key]) + 1e-3, \
            (key, value.item(), fp32[key])
    wrapper.update_params(sum(losses.values()))
    for n, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), n
    moved = [n for n, p in model.named_parameters()
             if p.requires_grad and not torch.equal(p.detach(), before[n])]
    assert any(n.startswith('backbone.') for n in moved)
    assert len(moved) > 0.8 * len(before), (len(moved), len(before))


def test_float32_region_is_exact_and_free_outside_autocast():
    x = torch.randn(4, 8)
    w = torch.randn(8, 3)
    f = precision.float32_region(lambda a, b: a @ b)
    assert torch.equal(f(x, w), x @ w)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert (x @ w).dtype == torch.bfloat16
        out = f(x, w)
    assert out.dtype == torch.float32 and torch.equal(out, x @ w)


def test_channels_last_matches_contiguous():
    """The option lives in the template (weights + images of the backbone): one model."""
    name = 'metapoint'
    cfg, model = _tiny(name)
    cfg_cl, model_cl = _tiny(name, channels_last=True)
    model_cl.load_state_dict(model.state_dict())
    model.eval(), model_cl.eval()
    batch = _batch(cfg, model, train=False)
    with torch.no_grad():
        ref = model(batch, mode='tensor')
        out = model_cl(batch, mode='tensor')
    assert model_cl.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=0)
    # and it trains: gradients reach the channels-last weights
    model_cl.train()
    loss = sum(_losses(model_cl, _batch(cfg, model_cl, train=True, queries=1, batch=2))
               .values())
    loss.backward()
    assert torch.isfinite(model_cl.backbone.conv1.weight.grad).all()


def test_compile_keeps_points_and_state_dict_keys():
    """The neck and the query enhancer with aot_eager: dynamo traces them and AOT autograd
    builds their backward, with eager kernels (inductor's C++ compilation of a whole model
    takes many minutes on 2 CPU cores; docs/benchmarks.md)."""
    cfg, model = _tiny('metapoint')
    _, compiled = _tiny('metapoint', compile=dict(backend='aot_eager',
                                                   parts=['neck', 'query_enhancer']))
    compiled.load_state_dict(model.state_dict())
    assert list(compiled.state_dict()) == list(model.state_dict())
    model.eval(), compiled.eval()
    batch = _batch(cfg, model, train=False)
    with torch.no_grad():
        ref = model(batch, mode='tensor')
        out = compiled(batch, mode='tensor')
    assert compiled.neck._compiled_call_impl is not None
    assert compiled.backbone._compiled_call_impl is None
    assert 'criterion' not in compiled.compile_parts() and 'backbone' in compiled.compile_parts()
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    compiled.train(), model.train()
    tb = _batch(cfg, model, train=True, queries=1, batch=2)
    torch.manual_seed(5)
    l_ref = sum(_losses(model, tb).values())
    torch.manual_seed(5)
    l_out = sum(_losses(compiled, tb).values())
    torch.testing.assert_close(l_out, l_ref, atol=1e-5, rtol=1e-5)
    l_out.backward()
    assert torch.isfinite(compiled.neck.projs[0][0].weight.grad).all()
    assert list(compiled.state_dict()) == list(model.state_dict())


def test_compile_and_amp_options_are_checked():
    assert parse_compile_cfg(False) is None and parse_compile_cfg(True) == {}
    with pytest.raises(ValueError, match=r"unknown keys \['bakend'\]"):
        parse_compile_cfg(dict(bakend='inductor'))
    _, model = _tiny('capeformer', compile=dict(parts=['backbone', 'decodr']))
    with pytest.raises(ValueError, match=r"compile parts \['decodr'\]"):
        model.apply_runtime_options()
    with pytest.raises(ValueError, match='dtype must be one of'):
        parse_amp_dtype('float8')
    wrapper = AutocastOptimWrapper(
        dtype='float16', optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(ValueError, match='float16 autocast needs a CUDA device'):
        with wrapper.optim_context(model):
            pass


def test_train_tool_amp_on_cpu_selects_bf16_autocast(monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location('train_tool', REPO / 'tools' / 'train.py')
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='Adam'))))
    assert tool.apply_amp(cfg) == 'bfloat16'
    assert cfg.optim_wrapper.type == 'AutocastOptimWrapper'
    assert cfg.optim_wrapper.dtype == 'bfloat16'
    with pytest.raises(SystemExit, match='float16 needs a CUDA GPU'):
        tool.apply_amp(cfg, 'float16')
