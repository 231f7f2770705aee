"""Backbones: torchvision-layout ResNet and timm features_only wrapper, local weight files
(named / downloaded weights: tests/test_pretrained.py)."""
import logging
import subprocess
import sys

import pytest
import timm
import torch
import torchvision

from metapoint.models.backbones import StateDictMismatchError, TimmBackbone, TorchvisionResNet
from metapoint.registry import MODELS
from tests.helpers import REPO

RANDOM_INIT = 'randomly initialised'


def _tv_resnet(depth):
    return getattr(torchvision.models, f'resnet{depth}')(weights=None)


def _tv_stages(net, x):
    """torchvision ResNet layer1..layer4 outputs, computed by hand."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    outs = []
    for name in ('layer1', 'layer2', 'layer3', 'layer4'):
        x = getattr(net, name)(x)
        outs.append(x)
    return outs


def _perturb_bn(net, seed=0):
    """Non-trivial BN statistics so eval-mode comparisons exercise the loaded buffers."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)


def _warnings(records):
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


@pytest.fixture(scope='module')
def tv_r18_file(tmp_path_factory):
    """A torchvision resnet18 state dict (random weights, with fc) saved to disk, and the net."""
    torch.manual_seed(0)
    net = _tv_resnet(18)
    _perturb_bn(net)
    path = tmp_path_factory.mktemp('tv') / 'resnet18-random.pth'
    torch.save(net.state_dict(), path)
    return path, net.eval()


# ------------------------------------------------------------------------------------------
# TorchvisionResNet
# ------------------------------------------------------------------------------------------


def test_resnet50_keys_and_torchvision_checkpoint_bit_exact(tmp_path, mm_logs):
    torch.manual_seed(0)
    tv = _tv_resnet(50)
    _perturb_bn(tv)
    ours_keys = list(TorchvisionResNet(depth=50).state_dict().keys())
    expected = [k for k in tv.state_dict() if not k.startswith('fc.')]
    assert ours_keys == expected  # same names, same order, BN buffers incl. num_batches_tracked
    assert any(k.endswith('num_batches_tracked') for k in ours_keys)
    assert 'layer1.0.downsample.0.weight' in ours_keys and 'layer4.2.conv3.weight' in ours_keys

    path = tmp_path / 'resnet50-random.pth'
    torch.save(tv.state_dict(), path)  # contains fc.weight / fc.bias like the ImageNet files
    mm_logs.clear()
    model = TorchvisionResNet(depth=50, pretrained=path).eval()
    assert not _warnings(mm_logs)
    assert any('fc.weight' in r.getMessage() for r in mm_logs)  # the dropped classifier is noted
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        ref = _tv_stages(tv.eval(), x)
    assert isinstance(ours, tuple) and len(ours) == 4
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    assert model.out_channels == [256, 512, 1024, 2048]
    assert model.out_strides == [4, 8, 16, 32]


def test_registry_build_and_mmengine_backbone_prefixed_checkpoint(tmp_path, tv_r18_file):
    src, tv = tv_r18_file
    state = {f'backbone.{k}': v for k, v in tv.state_dict().items() if not k.startswith('fc.')}
    state['keypoint_head.proj.weight'] = torch.zeros(3, 3)  # other parts of a CAPE checkpoint
    ckpt = dict(meta=dict(epoch=3), state_dict=state)
    path = tmp_path / 'cape_model.pth'
    torch.save(ckpt, path)
    model = MODELS.build(dict(type='TorchvisionResNet', depth=18, out_indices=(1, 3),
                              pretrained=str(path))).eval()
    assert isinstance(model, TorchvisionResNet)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours = model(x)
        ref = _tv_stages(tv, x)
    assert len(ours) == 2
    assert torch.equal(ours[0], ref[1]) and torch.equal(ours[1], ref[3])
    for key, value in model.state_dict().items():
        assert torch.equal(value, tv.state_dict()[key]), key


def test_old_torchvision_file_without_num_batches_tracked_loads(tmp_path, tv_r18_file):
    _, tv = tv_r18_file
    state = {k: v for k, v in tv.state_dict().items() if not k.endswith('num_batches_tracked')}
    path = tmp_path / 'old.pth'
    torch.save(state, path)
    TorchvisionResNet(depth=18, pretrained=path)


def test_wrong_shape_missing_and_unexpected_keys_raise(tmp_path, tv_r18_file):
    _, tv = tv_r18_file
    base = tv.state_dict()

    bad_shape = dict(base)
    bad_shape['layer2.0.conv1.weight'] = torch.zeros(128, 64, 1, 1)
    torch.save(bad_shape, tmp_path / 'shape.pth')
    with pytest.raises(StateDictMismatchError, match=r'layer2\.0\.conv1\.weight'):
        TorchvisionResNet(depth=18, pretrained=tmp_path / 'shape.pth')

    missing = dict(base)
    del missing['layer3.1.bn2.running_var']
    torch.save(missing, tmp_path / 'missing.pth')
    with pytest.raises(StateDictMismatchError, match=r'missing.*layer3\.1\.bn2\.running_var'):
        TorchvisionResNet(depth=18, pretrained=tmp_path / 'missing.pth')

    extra = dict(base)
    extra['neck.weight'] = torch.zeros(1)
    torch.save(extra, tmp_path / 'extra.pth')
    with pytest.raises(StateDictMismatchError, match=r'unexpected.*neck\.weight'):
        TorchvisionResNet(depth=18, pretrained=tmp_path / 'extra.pth')

    # a ResNet-18 file is not a ResNet-34 one
    with pytest.raises(StateDictMismatchError, match=r'missing.*layer1\.2\.conv1\.weight'):
        TorchvisionResNet(depth=34, pretrained=tmp_path / 'extra.pth')


def test_missing_path_and_bad_pretrained_values():
    missing = '/nonexistent/dir/resnet50-0676ba61.pth'
    with pytest.raises(FileNotFoundError, match='resnet50-0676ba61.pth'):
        TorchvisionResNet(depth=18, pretrained=missing)
    with pytest.raises(ValueError,
                       match=r"holds resnet50 weights.*depth=18.*'torchvision://resnet18'"):
        TorchvisionResNet(depth=18, pretrained='torchvision://resnet50')  # checked before I/O
    with pytest.raises(ValueError, match=r'pretrained=True is not supported.*IMAGENET1K_V1'):
        TorchvisionResNet(depth=18, pretrained=True)
    with pytest.raises(FileNotFoundError, match='nope.pth'):
        TimmBackbone('resnet18', pretrained='nope.pth')


def test_random_init_logs_warning(mm_logs):
    mm_logs.clear()
    TorchvisionResNet(depth=18)
    assert any(RANDOM_INIT in m for m in _warnings(mm_logs))
    mm_logs.clear()
    TimmBackbone('resnet18', out_indices=(1, 2))
    assert any(RANDOM_INIT in m for m in _warnings(mm_logs))


@pytest.mark.parametrize('depth,channels', [(18, [64, 128, 256, 512]),
                                            (50, [256, 512, 1024, 2048])])
@pytest.mark.parametrize('out_indices', [(0, 1, 2, 3), (1, 2, 3)])
def test_resnet_output_shapes(depth, channels, out_indices):
    model = TorchvisionResNet(depth=depth, out_indices=out_indices).eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, 64, 64))
    assert isinstance(outs, tuple) and len(outs) == len(out_indices)
    strides = [4, 8, 16, 32]
    assert model.out_channels == [channels[i] for i in out_indices]
    assert model.out_strides == [strides[i] for i in out_indices]
    for out, c, s in zip(outs, model.out_channels, model.out_strides):
        assert tuple(out.shape) == (2, c, 64 // s, 64 // s)


def test_resnet_bad_arguments():
    with pytest.raises(KeyError, match='depth'):
        TorchvisionResNet(depth=42)
    with pytest.raises(ValueError, match='out_indices'):
        TorchvisionResNet(depth=18, out_indices=(0, 4))


def test_norm_eval_keeps_bn_in_eval():
    model = TorchvisionResNet(depth=18, norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns)
    assert model.layer1[0].conv1.training  # other modules do train
    mean = model.layer2[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.layer2[0].bn1.running_mean, mean)

    default = TorchvisionResNet(depth=18).train()  # default: BN trains, as the CAPE models
    assert all(m.training for m in default.modules())


def test_frozen_stages_do_not_change():
    torch.manual_seed(0)
    model = TorchvisionResNet(depth=18, frozen_stages=1)
    model.train()
    frozen = [model.conv1, model.bn1, model.layer1]
    for m in frozen:
        assert all(not p.requires_grad for p in m.parameters())
        assert all(not sub.training for sub in m.modules())
    assert all(p.requires_grad for p in model.layer2.parameters())
    assert model.layer2.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = sum(o.square().mean() for o in model(torch.randn(2, 3, 64, 64)))
    loss.backward()
    opt.step()
    after = model.state_dict()
    for key in before:
        if key.startswith(('conv1.', 'bn1.', 'layer1.')):
            assert torch.equal(before[key], after[key]), key  # incl. BN running stats
    assert not torch.equal(before['layer2.0.conv1.weight'], after['layer2.0.conv1.weight'])
    assert not torch.equal(before['layer2.0.bn1.running_mean'], after['layer2.0.bn1.running_mean'])


# ------------------------------------------------------------------------------------------
# TimmBackbone
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize('name', ['resnet18', 'mobilenetv3_small_050'])
def test_timm_backbone_random_init_levels(name):
    model = MODELS.build(dict(type='TimmBackbone', model_name=name, out_indices=(1, 2, 3)))
    model.eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert isinstance(outs, tuple) and len(outs) == 3
    assert [o.shape[1] for o in outs] == model.out_channels
    assert model.out_strides == [4, 8, 16]
    assert [o.shape[-1] for o in outs] == [64 // s for s in model.out_strides]

    frozen_bn = TimmBackbone(name, out_indices=(1, 2, 3), norm_eval=True).train()
    bns = [m for m in frozen_bn.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(not m.training for m in bns) and frozen_bn.timm_model.training


def test_timm_full_model_checkpoint_reproduces_features(tmp_path, mm_logs):
    torch.manual_seed(0)
    full = timm.create_model('resnet18', pretrained=False)
    _perturb_bn(full)
    full.eval()
    path = tmp_path / 'resnet18_timm_full.pth'
    torch.save(full.state_dict(), path)
    mm_logs.clear()
    model = TimmBackbone('resnet18', out_indices=(0, 1, 2, 3, 4), pretrained=path).eval()
    assert not _warnings(mm_logs)
    assert any('fc.weight' in r.getMessage() for r in mm_logs)  # head keys dropped, noted
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = model(x)
        ref = []
        y = full.act1(full.bn1(full.conv1(x)))
        ref.append(y)
        y = full.maxpool(y)
        for name in ('layer1', 'layer2', 'layer3', 'layer4'):
            y = getattr(full, name)(y)
            ref.append(y)
    assert len(outs) == 5
    assert model.out_channels == [64, 64, 128, 256, 512] == [o.shape[1] for o in outs]
    for a, b in zip(outs, ref):
        assert torch.equal(a, b)


@pytest.mark.parametrize('name,out_indices', [('convnext_atto', (0, 1, 2)),
                                              ('mobilenetv3_small_050', (1, 2, 3, 4))])
def test_timm_renamed_keys_full_checkpoint(tmp_path, name, out_indices):
    """convnext: features keys are flattened (``stages.0`` -> ``stages_0``); mobilenetv3: a
    separate features class without ``conv_head`` / ``classifier``."""
    torch.manual_seed(0)
    full = timm.create_model(name, pretrained=False)
    _perturb_bn(full)
    full.eval()
    path = tmp_path / f'{name}.pth'
    torch.save({'state_dict': full.state_dict(), 'epoch': 1}, path)  # timm train format
    model = TimmBackbone(name, out_indices=out_indices, pretrained=path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        outs = model(x)
        ref = full.forward_intermediates(x, indices=list(out_indices), intermediates_only=True)
    assert len(outs) == len(out_indices) == len(ref)
    for a, b in zip(outs, ref):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), (a - b).abs().max()

    # a features-only state dict (what the converter writes) loads too, and round-trips
    feat_path = tmp_path / f'{name}_features.pth'
    torch.save(model.timm_model.state_dict(), feat_path)
    again = TimmBackbone(name, out_indices=out_indices, pretrained=feat_path).eval()
    with torch.no_grad():
        for a, b in zip(again(x), outs):
            assert torch.equal(a, b)


def test_timm_mismatches_raise(tmp_path):
    full = timm.create_model('resnet18', pretrained=False)
    state = full.state_dict()
    state['layer1.0.conv1.weight'] = torch.zeros(64, 64, 1, 1)
    torch.save(state, tmp_path / 'shape.pth')
    with pytest.raises(StateDictMismatchError, match=r'layer1\.0\.conv1\.weight'):
        TimmBackbone('resnet18', pretrained=tmp_path / 'shape.pth')

    state = full.state_dict()
    del state['layer2.1.bn1.weight']
    state['bogus.weight'] = torch.zeros(1)
    torch.save(state, tmp_path / 'keys.pth')
    with pytest.raises(StateDictMismatchError) as err:
        TimmBackbone('resnet18', pretrained=tmp_path / 'keys.pth')
    assert 'layer2.1.bn1.weight' in str(err.value) and 'bogus.weight' in str(err.value)

    with pytest.raises(StateDictMismatchError, match='missing'):  # resnet18 != resnet34
        TimmBackbone('resnet34', pretrained=tmp_path / 'shape.pth')
    with pytest.raises(ValueError, match='features_only'):
        TimmBackbone('resnet18', features_only=False)


def test_timm_channels_last_models_return_nchw():
    model = TimmBackbone('swin_tiny_patch4_window7_224', img_size=64, window_size=2,
                         embed_dim=24, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == model.out_channels == [24, 48, 96, 192]
    assert [o.shape[-1] for o in outs] == [64 // s for s in model.out_strides]


# ------------------------------------------------------------------------------------------
# converter
# ------------------------------------------------------------------------------------------


def test_make_backbone_checkpoint_cli(tmp_path, tv_r18_file):
    src, tv = tv_r18_file
    dst = tmp_path / 'out' / 'r18_backbone.pth'
    script = REPO / 'tools' / 'model_converters' / 'make_backbone_checkpoint.py'
    res = subprocess.run([sys.executable, str(script), str(src), str(dst), '--resnet', '18'],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    state = torch.load(dst, weights_only=True)
    assert list(state) == [k for k in tv.state_dict() if not k.startswith('fc.')]
    TorchvisionResNet(depth=18, pretrained=dst)  # strict load of the written file

    sys.path.insert(0, str(script.parent))
    try:
        import make_backbone_checkpoint as conv
    finally:
        sys.path.remove(str(script.parent))
    with pytest.raises(FileExistsError):
        conv.main([str(src), str(dst), '--resnet', '18'])
    timm_src = tmp_path / 'timm_full.pth'
    torch.save(timm.create_model('resnet18', pretrained=False).state_dict(), timm_src)
    timm_dst = tmp_path / 'timm_feat.pth'
    conv.main([str(timm_src), str(timm_dst), '--timm', 'resnet18', '--out-indices', '1', '2'])
    feats = torch.load(timm_dst, weights_only=True)
    assert 'fc.weight' not in feats and 'layer4.0.conv1.weight' not in feats
    TimmBackbone('resnet18', out_indices=(1, 2), pretrained=timm_dst)
