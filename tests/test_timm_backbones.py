"""The timm backbone configs (SwinV2-T, ConvNeXt-T, DINOv2 ViT-S/14 for MetaPoint, FMMP and
CapeFormer) and what :class:`TimmBackbone` does for them: level widths and strides, patch-14
inputs, the feature pyramid, local full-model checkpoints, frozen stages, clear errors.

Random weights only (``pretrained`` disabled); inputs of 64 to 128 px keep every step short.
"""
import copy
import math

import pytest
import timm
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

from metapoint.models.backbones import (StateDictMismatchError, TimmBackbone,
                                        disable_backbone_pretrained)
from metapoint.registry import MODELS
from metapoint.utils import register_all_modules
from metapoint.utils.benchmarking import perturb_head_weights, synthetic_episodes
from tests.helpers import REPO

BACKBONES = ('swinv2-t', 'convnext-t', 'dinov2-s14')
MODEL_DIRS = {'metapoint': 'metapoint_{}_4xb16', 'fmmp': 'fmmp_{}_1xb16',
              'capeformer': 'capeformer_{}_1xb16'}
TIMM_NAMES = {'swinv2-t': 'swinv2_tiny_window8_256.ms_in1k',
              'convnext-t': 'convnext_tiny.fb_in1k',
              'dinov2-s14': 'vit_small_patch14_dinov2.lvd142m'}
#: (model, backbone) -> (out_channels, out_strides) the heads are built for
LEVELS = {
    ('metapoint', 'swinv2-t'): ([96, 192, 384, 768], [4, 8, 16, 32]),
    ('metapoint', 'convnext-t'): ([96, 192, 384, 768], [4, 8, 16, 32]),
    ('metapoint', 'dinov2-s14'): ([192, 384, 384], [8, 16, 32]),
    ('fmmp', 'swinv2-t'): ([192, 384, 768], [8, 16, 32]),
    ('fmmp', 'convnext-t'): ([192, 384, 768], [8, 16, 32]),
    ('fmmp', 'dinov2-s14'): ([192, 384, 384], [8, 16, 32]),
    ('capeformer', 'swinv2-t'): ([768], [32]),
    ('capeformer', 'convnext-t'): ([768], [32]),
    ('capeformer', 'dinov2-s14'): ([384], [16]),
}
INPUT = 128


@pytest.fixture(autouse=True, scope='module')
def _one_thread():
    """One intra-op thread: on a small shared CPU, two threads per process oversubscribe the
    cores and a train step gets many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config_path(model, backbone):
    stem = MODEL_DIRS[model].format(backbone)
    return REPO / 'configs' / model / 'backbones' / f'{stem}_mp100-split1_1shot.py'


def _backbone_cfg(model, backbone, **overrides):
    cfg = Config.fromfile(str(_config_path(model, backbone)))
    return dict(copy.deepcopy(cfg.model.backbone.to_dict()), **overrides)


def _build_backbone(model, backbone, **overrides):
    register_all_modules()
    return MODELS.build(_backbone_cfg(model, backbone, **overrides))


def test_backbone_configs_exist_and_differ_from_r50_only_in_the_backbone():
    register_all_modules()
    found = sorted(p for m in MODEL_DIRS for p in (REPO / 'configs' / m / 'backbones').glob('*.py'))
    assert found == sorted(_config_path(m, b) for m, b in LEVELS)
    bases = {m: Config.fromfile(str(REPO / 'configs' / m / (
        MODEL_DIRS[m].format('r50') + '_mp100-split1_1shot.py'))) for m in MODEL_DIRS}
    for (model, backbone) in LEVELS:
        cfg, base = Config.fromfile(str(_config_path(model, backbone))), bases[model]
        assert cfg.model.backbone.type == 'TimmBackbone'
        assert cfg.model.backbone.model_name == TIMM_NAMES[backbone]
        assert cfg.model.backbone.pretrained is True  # timm's weights by default
        for key in set(cfg.model) | set(base.model):
            if key != 'backbone':
                assert cfg.model.get(key) == base.model.get(key), (model, backbone, key)
        for key in ('train_dataloader', 'val_dataloader', 'test_dataloader', 'optim_wrapper',
                    'param_scheduler', 'train_cfg', 'input_size'):
            assert cfg.get(key) == base.get(key), (model, backbone, key)


@pytest.mark.parametrize('model,backbone', sorted(LEVELS), ids=[f'{m}-{b}' for m, b in
                                                               sorted(LEVELS)])
def test_config_trains_one_step(model, backbone):
    """Random backbone weights, one 1-shot episode at 128 px: finite loss, a gradient for every
    trainable parameter (backbone and heads), and the config's optimizer moves both."""
    register_all_modules()
    cfg = Config.fromfile(str(_config_path(model, backbone)))
    model_cfg = copy.deepcopy(cfg.model)
    assert disable_backbone_pretrained(model_cfg) and model_cfg.backbone.pretrained is None
    torch.manual_seed(0)
    net = MODELS.build(model_cfg)
    # FMMP / CapeFormer zero-initialise their last coordinate layers, which blocks the gradient
    # to the features at the first step; a little noise lets it reach the backbone
    perturb_head_weights(net)
    channels, strides = LEVELS[(model, backbone)]
    assert (net.backbone.out_channels, net.backbone.out_strides) == (channels, strides)

    batch = synthetic_episodes(cfg, net, shots=1, queries=1, batch=1, train=True,
                               input_size=(INPUT, INPUT), num_kpts=9)
    net.train()
    with torch.no_grad():  # the reported widths and strides are those of the maps
        feats = net.backbone(batch.support_imgs.flatten(0, 1))
    assert [f.shape[1] for f in feats] == channels
    assert [f.shape[-1] for f in feats] == [math.ceil(INPUT / s) for s in strides]

    loss, _ = net.parse_losses(net.loss(batch))
    assert torch.isfinite(loss), loss
    loss.backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f'no gradient for {missing[:10]}'
    for part in ('backbone.', 'head'):
        grads = [p.grad.abs().sum() for n, p in trainable
                 if n.startswith('backbone.') == (part == 'backbone.')]
        assert grads and sum(grads) > 0, part

    backbone_w = dict(net.backbone.named_parameters())
    probe_b = next(n for n in backbone_w if 'timm_model' in n and backbone_w[n].dim() > 1)
    probe_h = next(n for n, p in net.named_parameters() if not n.startswith('backbone.')
                   and p.grad is not None and p.grad.abs().sum() > 0)
    before = {n: p.detach().clone() for n, p in net.named_parameters() if n in
              (f'backbone.{probe_b}', probe_h)}
    optim = build_optim_wrapper(net, copy.deepcopy(cfg.optim_wrapper))
    optim.step()
    after = dict(net.named_parameters())
    for name, value in before.items():
        assert not torch.equal(after[name].detach(), value), f'{name} did not change'


# --------------------------------------------------------------------------------------------
# local checkpoints
# --------------------------------------------------------------------------------------------
def _full_model(name, **kwargs):
    torch.manual_seed(1)
    return timm.create_model(name, pretrained=False, **kwargs).eval()


@pytest.mark.parametrize('backbone,model,size', [('swinv2-t', 'fmmp', 64),
                                                 ('convnext-t', 'metapoint', 64),
                                                 ('dinov2-s14', 'capeformer', 100)])
def test_full_timm_checkpoint_from_a_local_file(tmp_path, backbone, model, size, mm_logs):
    """A full (classification) timm state dict loads into the config's backbone and gives the
    full model's own intermediate features."""
    cfg = _backbone_cfg(model, backbone)
    timm_kwargs = {k: v for k, v in cfg.items() if k in ('strict_img_size', 'dynamic_img_size')}
    full = _full_model(cfg['model_name'], **timm_kwargs)
    path = tmp_path / f'{backbone}_full.pth'
    torch.save(full.state_dict(), path)
    net = _build_backbone(model, backbone, pretrained=str(path)).eval()
    logs = [r.getMessage() for r in mm_logs]
    if backbone != 'dinov2-s14':  # DINOv2 has no classifier; the others' is dropped
        assert any('dropping' in m and "'head." in m for m in logs), logs
    assert any(f'{path}' in m and 'loaded' in m for m in logs), logs

    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = net(x)
        if backbone == 'dinov2-s14':  # 100 px -> 7 x 7 patches of 14 px, final norm applied
            fitted = F.interpolate(x, size=(98, 98), mode='bilinear', align_corners=False)
            ref = full.forward_intermediates(fitted, indices=[11], norm=True,
                                             intermediates_only=True)
        else:
            ref = full.forward_intermediates(x, indices=list(net.out_indices),
                                             intermediates_only=True)
    assert len(out) == len(ref)
    for o, r in zip(out, ref):
        assert o.shape == r.shape
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)


def test_wrong_checkpoints_fail_clearly(tmp_path):
    swin = tmp_path / 'swin.pth'
    torch.save(_full_model('swinv2_tiny_window8_256').state_dict(), swin)
    with pytest.raises(StateDictMismatchError, match='missing keys') as err:
        _build_backbone('fmmp', 'convnext-t', pretrained=str(swin))
    for part in (str(swin), "'stages_0.blocks.0.conv_dw.weight'", 'unexpected keys',
                 "'layers.0.blocks.0.attn.qkv.weight'"):
        assert part in str(err.value), part

    state = _full_model('vit_small_patch14_dinov2').state_dict()
    state['blocks.3.attn.qkv.weight'] = state['blocks.3.attn.qkv.weight'][:, :192]
    bad_shape = tmp_path / 'vit_bad_shape.pth'
    torch.save(state, bad_shape)
    with pytest.raises(StateDictMismatchError, match='shape mismatch') as err:
        _build_backbone('capeformer', 'dinov2-s14', pretrained=str(bad_shape))
    assert "'model.blocks.3.attn.qkv.weight': checkpoint (1152, 192) vs model (1152, 384)" \
        in str(err.value)

    with pytest.raises(FileNotFoundError, match='missing.pth'):
        _build_backbone('capeformer', 'swinv2-t', pretrained=str(tmp_path / 'missing.pth'))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face hub cache, the hub offline (no request is made)."""
    import huggingface_hub
    cache = tmp_path / 'hf_hub'
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_CACHE', str(cache))
    monkeypatch.setattr(huggingface_hub.constants, 'HF_HUB_OFFLINE', True)
    return cache


def test_config_default_takes_timm_weights_from_the_hub_cache(hf_cache):
    """pretrained=True (the configs' value): timm's DINOv2 file from the hub cache, loaded by
    timm into the normed-feature model; without the file, an error that says what to do."""
    from safetensors.torch import save_file

    from metapoint.models.backbones import PretrainedWeightsUnavailable
    with pytest.raises(PretrainedWeightsUnavailable) as err:
        _build_backbone('capeformer', 'dinov2-s14')
    for part in ('timm/vit_small_patch14_dinov2.lvd142m', 'model.backbone.pretrained='):
        assert part in str(err.value)

    full = _full_model('vit_small_patch14_dinov2', dynamic_img_size=True)
    revision = 'b' * 40
    repo_dir = hf_cache / 'models--timm--vit_small_patch14_dinov2.lvd142m'
    (repo_dir / 'snapshots' / revision).mkdir(parents=True)
    (repo_dir / 'refs').mkdir()
    (repo_dir / 'refs' / 'main').write_text(revision)
    save_file({k: v.contiguous() for k, v in full.state_dict().items()},
              str(repo_dir / 'snapshots' / revision / 'model.safetensors'))
    net = _build_backbone('capeformer', 'dinov2-s14').eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = full.forward_intermediates(F.interpolate(x, size=(56, 56), mode='bilinear'),
                                         indices=[11], norm=True, intermediates_only=True)
        torch.testing.assert_close(net(x)[0], ref[0], rtol=1e-4, atol=1e-4)


def test_vit_position_embedding_of_another_size_is_resampled(tmp_path, mm_logs):
    """A 518 px DINOv2 checkpoint into a ViT built for 224 px (no dynamic_img_size): the 37x37
    position grid is resampled to 16x16 at load time, the rest loads as is."""
    full = _full_model('vit_small_patch14_dinov2')
    path = tmp_path / 'dinov2_518.pth'
    torch.save(full.state_dict(), path)
    net = TimmBackbone('vit_small_patch14_dinov2', out_indices=(11, ), img_size=224,
                       token_stride=16, pretrained=path)
    assert net.timm_model.model.pos_embed.shape == (1, 1 + 16 * 16, 384)
    assert any('37x37 to a 16x16' in r.getMessage() for r in mm_logs)
    assert torch.equal(net.timm_model.model.blocks[5].mlp.fc1.weight, full.blocks[5].mlp.fc1.weight)
    assert net(torch.randn(1, 3, 256, 256))[0].shape == (1, 384, 16, 16)  # 256 px -> 224 px
    with pytest.raises(ValueError, match='dynamic_img_size=True'):
        net(torch.randn(1, 3, 128, 128))  # 112 px, not the 224 px the model was built for


def test_own_state_dict_restores_the_pyramid(tmp_path):
    net = _build_backbone('fmmp', 'dinov2-s14', pretrained=None)
    path = tmp_path / 'backbone.pth'
    torch.save({f'backbone.{k}': v for k, v in net.state_dict().items()}, path)
    again = _build_backbone('fmmp', 'dinov2-s14', pretrained=str(path))
    for key, value in net.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    with pytest.raises(StateDictMismatchError, match='no pyramid'):
        TimmBackbone('vit_small_patch14_dinov2', out_indices=(11, ), dynamic_img_size=True,
                     feature_norm=True, pretrained=path)


# --------------------------------------------------------------------------------------------
# patch-14 inputs, frozen stages, errors
# --------------------------------------------------------------------------------------------
def test_patch14_inputs_of_any_size():
    """token_stride=16: ceil(H/16) x ceil(W/16) tokens whatever the size; default token_stride
    (the patch): sizes that are not multiples of 14 are resized up to the next multiple."""
    net = _build_backbone('metapoint', 'dinov2-s14', pretrained=None).eval()
    with torch.no_grad():
        for h, w in ((64, 64), (100, 128), (130, 70)):
            out = net(torch.randn(1, 3, h, w))
            assert [tuple(o.shape[-2:]) for o in out] == [
                (math.ceil(math.ceil(h / 16) * 16 / s), math.ceil(math.ceil(w / 16) * 16 / s))
                for s in (8, 16, 32)]
        plain = TimmBackbone('vit_small_patch14_dinov2', out_indices=(5, 11),
                             dynamic_img_size=True)
        assert plain.out_strides == [14, 14] and plain.out_channels == [384, 384]
        x = torch.randn(1, 3, 128, 100)
        out = plain(x)
        assert [tuple(o.shape) for o in out] == [(1, 384, 10, 8)] * 2  # 140 x 112 px
        ref = plain.timm_model(F.interpolate(x, size=(140, 112), mode='bilinear',
                                             align_corners=False))
        torch.testing.assert_close(out[1], ref[1])


def test_frozen_stages():
    vit = _build_backbone('fmmp', 'dinov2-s14', pretrained=None, frozen_stages=12).train()
    trainable = {n for n, p in vit.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith('pyramid.') for n in trainable)
    assert not vit.timm_model.training and vit.pyramid.training

    vit = _build_backbone('capeformer', 'dinov2-s14', pretrained=None, frozen_stages=0)
    frozen = {n for n, p in vit.named_parameters() if not p.requires_grad}
    assert frozen == {'timm_model.model.cls_token', 'timm_model.model.pos_embed',
                      'timm_model.model.patch_embed.proj.weight',
                      'timm_model.model.patch_embed.proj.bias'}

    swin = _build_backbone('fmmp', 'swinv2-t', pretrained=None, frozen_stages=1).train()
    for name, p in swin.named_parameters():
        assert p.requires_grad == (not name.startswith(('timm_model.patch_embed.',
                                                        'timm_model.layers_0.'))), name
    assert not swin.timm_model.layers_0.training and swin.timm_model.layers_1.training


@pytest.mark.parametrize('kwargs,message', [
    (dict(model_name='convnext_tinyy'), r"'convnext_tinyy' is not a timm model.*'convnext_tiny'"),
    (dict(model_name='convnext_tiny', out_indices=(1, 4)),
     r'out_indices=\(1, 4\) \(\[4\] out of range\).*4 feature levels.*3: stages.3'),
    (dict(model_name='convnext_tiny', out_indices=(3, 2)), 'not increasing'),
    (dict(model_name='convnext_tiny', token_stride=16), 'patch-embedding models'),
    (dict(model_name='vit_small_patch14_dinov2', out_indices=(11, ), token_stride=16,
          pyramid_strides=(8, 12)), r'pyramid stride 12 is not token_stride \(16\)'),
    (dict(model_name='vit_small_patch14_dinov2', pyramid_strides=(8, 16)),
     r'takes 1 token map or one per level, got 3'),
    (dict(model_name='vit_small_patch14_dinov2', frozen_stages=13), r'frozen_stages.*0\.\.12'),
    (dict(model_name='convnext_tiny', depth=50), 'depth'),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TimmBackbone(**kwargs)
