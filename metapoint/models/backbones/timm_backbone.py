"""Any timm model as a multi-scale feature backbone (``features_only``).

Weights: ``pretrained=True`` takes timm's own pretrained weights of the model name, fetched into
the Hugging Face hub cache (or torch hub cache for URL weights) by :mod:`.pretrained` and loaded
by timm itself (its per-model key filters apply); a local path is loaded by this module, as below.

timm's ``features_only`` wrappers rename some modules of the full (classification) model, so a
full-model state dict does not load into them as is. What timm 1.0 does, by wrapper class:

* ``FeatureListNet`` / ``FeatureDictNet`` / ``FeatureHookNet`` (resnet, convnext, swin, regnet,
  densenet, ...): the full model's top-level children are kept under their own names, except that
  with ``flatten_sequential`` one level of ``nn.Sequential`` is flattened into the wrapper with
  ``'_'`` joining the names: ``stages.0.blocks.0.conv_dw.weight`` ->
  ``stages_0.blocks.0.conv_dw.weight``. Modules after the last requested level and the head are
  dropped.
* ``FeatureGetterNet`` (vit, levit, ...): the whole model is kept as ``self.model`` (keys gain a
  ``model.`` prefix) and its unused tail (final norm, head, later blocks) is pruned.
* model-specific feature classes (``MobileNetV3Features``, ``EfficientNetFeatures``,
  ``HighResolutionNetFeatures``): the full model's names, minus the head (``conv_head``,
  ``classifier``, ``bn2``, ...).

:class:`TimmBackbone` therefore maps a full-model checkpoint onto the features model by building
the full model's key list once (on the ``meta`` device, no memory or init cost) and matching each
features key to the full key it came from (same name, first ``.`` -> ``_``, or a ``model.``
prefix). Full-model keys the features model does not use are dropped with a logged note; any
other missing or unexpected key, and any shape mismatch, raises. The one tensor that is adapted
rather than refused is a plain ViT's absolute position embedding: a checkpoint trained at another
image size (DINOv2: 518 px, a 37 x 37 grid) is resampled to the model's grid, as timm does for
its own weights.

Patch-embedding models (ViT, DINOv2, DeiT, ...: timm's ``FeatureGetterNet`` models whose levels
all share the patch stride) return one token map per requested block. :class:`TimmBackbone`
makes them usable in the CAPE pyramids:

* ``token_stride``: the input is resized (bilinear) to ``ceil(H / token_stride)`` x
  ``ceil(W / token_stride)`` patches, so that the token grid covers exactly the input image with
  one token per ``token_stride`` pixels, whatever the patch size. Default: the patch size, which
  only resizes inputs that are not a multiple of it (a 256 px input to a patch-14 model becomes
  266 px, 19 x 19 tokens). Padding instead would make the grid overhang the image and shift every
  normalised keypoint coordinate. Inputs other than the model's ``img_size`` need timm's
  ``dynamic_img_size=True`` (the position embedding is then interpolated in every forward).
* ``pyramid_strides``: a ViTDet-style simple feature pyramid (:class:`SimpleFeaturePyramid`)
  turns the token map(s) into levels at the given strides (2x2 transposed convolutions up, 2x2 max
  pooling down, identity at ``token_stride``), shallow to deep like a CNN's stages.
"""
import difflib
import logging
import math
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch import nn

from metapoint.registry import MODELS
from .pretrained import (PathLike, PretrainedSpec, StateDictMismatchError, _list_keys,
                         check_init_cfg, describe_timm_weights, fetch_weights,
                         load_state_dict_checked, read_checkpoint_state_dict,
                         select_backbone_state_dict, warn_random_init, weights_origin)
from .resnet import set_bn_eval

#: ``timm.create_model`` arguments that :class:`TimmBackbone` sets itself.
_RESERVED_KWARGS = ('features_only', 'pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay',
                    'checkpoint_path', 'out_indices')
#: A pyramid level is at most this many factors of 2 away from the token stride.
_MAX_PYRAMID_OCTAVES = 3


def _feature_key_variants(full_key: str) -> Tuple[str, ...]:
    """Names a full-model state-dict key can take in timm's ``features_only`` wrappers."""
    variants = [full_key]
    head, dot, tail = full_key.partition('.')
    if dot and '.' in tail:  # a flattened Sequential child: 'stages.0.x' -> 'stages_0.x'
        child, _, rest = tail.partition('.')
        variants.append(f'{head}_{child}.{rest}')
    variants.append(f'model.{full_key}')  # FeatureGetterNet keeps the model as `.model`
    return tuple(variants)


def _module_prefixes(full_module: str) -> Tuple[str, ...]:
    """Parameter-name prefixes of a full-model module (``'stages.0'``) in the features model."""
    flat = full_module.replace('.', '_', 1)
    return tuple(dict.fromkeys((f'{full_module}.', f'{flat}.', f'model.{full_module}.')))


def _is_power_of_two_ratio(a: int, b: int) -> Optional[int]:
    """k with ``a == b * 2**k`` (k may be negative), or None."""
    if a <= 0 or b <= 0:
        return None
    k = round(math.log2(a / b))
    return k if (b * 2 ** k == a if k >= 0 else a * 2 ** -k == b) else None


def _normed_getter_class():
    """timm's ``FeatureGetterNet`` with ``norm=True``: every returned level passes the model's
    final norm (``forward_intermediates(norm=True)``), as DINOv2's ``get_intermediate_layers``."""
    from timm.models._features import FeatureGetterNet

    class NormedFeatureGetterNet(FeatureGetterNet):

        def __init__(self, model: nn.Module, **kwargs):
            kwargs['norm'] = True
            super().__init__(model, **kwargs)

    return NormedFeatureGetterNet


class SimpleFeaturePyramid(nn.Module):
    """Levels at several strides from single-stride token maps (ViTDet's simple feature pyramid).

    For a level at stride ``s`` from tokens at stride ``t`` (``s = t * 2**k``):

    * ``k < 0``: ``-k`` 2x2 stride-2 transposed convolutions, each halving the channels, with
      ``LayerNorm2d`` + GELU between two of them (ViTDet's up-sampling branch);
    * ``k = 0``: the token map as is;
    * ``k > 0``: ``k`` 2x2 stride-2 max poolings (``ceil_mode``: odd sizes keep their border).

    Args:
        in_channels: token width C.
        token_stride: stride t of the token map(s) in input pixels.
        strides: the output strides, increasing (shallow to deep).
        num_inputs: 1 (every level from the same map) or ``len(strides)`` (level i from input i,
            e.g. the outputs of blocks 3, 7, 11).
    Forward: sequence of ``[N, C, h, w]`` maps -> list of ``[N, C_i, h_i, w_i]``.
    """

    def __init__(self, in_channels: int, token_stride: int, strides: Sequence[int],
                 num_inputs: int = 1) -> None:
        super().__init__()
        from timm.layers import LayerNorm2d
        strides = [int(s) for s in strides]
        if not strides or any(b <= a for a, b in zip(strides, strides[1:])):
            raise ValueError(f'pyramid_strides must be a non-empty increasing sequence, got '
                             f'{tuple(strides)}')
        if num_inputs not in (1, len(strides)):
            raise ValueError(f'a pyramid of {len(strides)} levels takes 1 token map or one per '
                             f'level, got {num_inputs} (the number of out_indices)')
        self.strides, self.num_inputs = strides, num_inputs
        self.levels = nn.ModuleList()
        self.out_channels: List[int] = []
        for s in strides:
            k = _is_power_of_two_ratio(s, token_stride)
            if k is None or abs(k) > _MAX_PYRAMID_OCTAVES:
                raise ValueError(
                    f'pyramid stride {s} is not token_stride ({token_stride}) times a power of 2 '
                    f'between 1/{2 ** _MAX_PYRAMID_OCTAVES} and {2 ** _MAX_PYRAMID_OCTAVES}')
            layers: List[nn.Module] = []
            c = in_channels
            if k < 0:
                for i in range(-k):
                    if i:
                        layers += [LayerNorm2d(c), nn.GELU()]
                    if c % 2:
                        raise ValueError(f'cannot halve {c} channels for pyramid stride {s}')
                    layers.append(nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2))
                    c //= 2
            else:
                layers += [nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
                           for _ in range(k)]
            self.levels.append(nn.Sequential(*layers))
            self.out_channels.append(c)

    def forward(self, feats: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        if len(feats) != self.num_inputs:
            raise ValueError(f'SimpleFeaturePyramid expects {self.num_inputs} maps, got '
                             f'{len(feats)}')
        return [level(feats[i if self.num_inputs > 1 else 0])
                for i, level in enumerate(self.levels)]


@MODELS.register_module()
class TimmBackbone(BaseModule):
    """A timm model created with ``features_only=True``; returns a tuple of NCHW feature maps.

    Args:
        model_name: any ``timm.list_models()`` name, e.g. ``'resnet50'``, ``'convnext_tiny'``,
            optionally with a pretrained tag (``'convnext_tiny.fb_in1k'``).
        out_indices: timm feature levels to return, increasing (timm's numbering: for ResNets
            level 0 is the stride-2 stem and 1..4 are ``layer1``..``layer4``; for ViTs level i is
            block i; negative values count from the last level); None: timm's default.
        pretrained: True: timm's pretrained weights of ``model_name`` (its default tag, or the
            tag in the name, e.g. ``'resnet50.tv_in1k'``), downloaded once into the Hugging Face
            hub cache and loaded by timm; None / False: random init, with a logged warning; or
            a local checkpoint path. Accepted local files: a full-model timm state dict (e.g.
            ``timm.create_model(name).state_dict()`` or a hub ``pytorch_model.bin`` /
            ``model.safetensors``), a features-only state dict, this class's own state dict, or
            an mmengine checkpoint with ``backbone.``-prefixed keys. Read with
            ``torch.load(weights_only=True)``.
        norm_eval: keep every BatchNorm layer in eval mode during training (LayerNorm models:
            no effect).
        frozen_stages: -1: train everything; k >= 0: freeze (``requires_grad=False``, eval
            mode) everything before timm feature level k: the stem (patch embedding, position
            embedding and class token for ViTs) and levels 0..k-1. k = the number of levels
            freezes the whole timm model; a pyramid stays trainable.
        token_stride: patch-embedding models only: resize the input to a whole number of patches,
            one per ``token_stride`` input pixels (module doc). None: the patch size.
        pyramid_strides: patch-embedding models only: build a :class:`SimpleFeaturePyramid` with
            levels at these strides (relative to the input) from the returned token map(s).
        feature_norm: apply the model's final norm to every returned level (timm's
            ``forward_intermediates(norm=True)``; meant for ViTs, as DINOv2's
            ``get_intermediate_layers(norm=True)``).
        init_cfg: mmengine init config; must be None when ``pretrained`` is given.
        **timm_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``,
            ``dynamic_img_size``, ``strict_img_size``, ...).

    Attributes:
        out_channels / out_strides: channels and strides of the returned levels.
    """

    def __init__(self, model_name: str, out_indices: Optional[Sequence[int]] = None,
                 pretrained: PretrainedSpec = None, norm_eval: bool = False,
                 frozen_stages: int = -1, token_stride: Optional[int] = None,
                 pyramid_strides: Optional[Sequence[int]] = None, feature_norm: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None, **timm_kwargs):
        super().__init__(init_cfg=init_cfg)
        import timm
        owner = f'TimmBackbone({model_name!r})'
        reserved = sorted(set(timm_kwargs) & set(_RESERVED_KWARGS + (
            ('feature_cls', ) if feature_norm else ())))
        if reserved:
            raise ValueError(f'{owner}: TimmBackbone sets {reserved} itself; use its '
                             '`out_indices` / `pretrained` / `feature_norm` arguments instead')
        if not isinstance(model_name, str) or not timm.is_model(model_name):
            close = difflib.get_close_matches(str(model_name), timm.list_models(), n=5)
            raise ValueError(f'TimmBackbone: {model_name!r} is not a timm model name (timm '
                             f'{timm.__version__}); close names: {close or "none"}. '
                             'timm.list_models() lists them all.')
        weights = describe_timm_weights(pretrained, model_name, owner)  # validates
        check_init_cfg(pretrained, init_cfg)
        self.pretrained_source = weights
        self.model_name = model_name
        self.norm_eval = norm_eval
        self.pretrained = pretrained
        self._timm_kwargs = dict(timm_kwargs)
        self._full_keys: Optional[List[str]] = None
        self._full_levels: Optional[List[dict]] = None

        create_kwargs = dict(timm_kwargs, features_only=True, pretrained=False)
        if out_indices is not None:
            create_kwargs['out_indices'] = self._check_out_indices(out_indices, owner)
        if feature_norm:
            create_kwargs['feature_cls'] = _normed_getter_class()
        if weights.is_remote:  # timm loads its own weights (and applies its key filters)
            path = fetch_weights(weights, pretrained, owner)
            create_kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=path))
        try:
            self.timm_model = timm.create_model(model_name, **create_kwargs)
        except TypeError as err:  # an argument the model does not take
            raise TypeError(f'{owner}: timm.create_model does not take the arguments '
                            f'{sorted(timm_kwargs)}: {err}') from err

        info = self.timm_model.feature_info
        self.out_indices = tuple(info.out_indices)
        self._out_channels = [int(c) for c in info.channels()]
        self._out_strides = [int(r) for r in info.reduction()]
        fmt = getattr(self.timm_model, 'output_fmt', 'NCHW')
        self._channels_last = str(getattr(fmt, 'value', fmt)).upper() == 'NHWC'  # e.g. swin

        # patch-embedding (token) models: input fitted to the patches, optional pyramid
        self._patch_size = self._token_patch_size()
        if (token_stride is not None or pyramid_strides is not None) and self._patch_size is None:
            raise ValueError(f'{owner}: token_stride / pyramid_strides are for patch-embedding '
                             f'models with one stride (ViTs); this one returns levels at strides '
                             f'{self._out_strides}')
        self.token_stride: Optional[Tuple[int, int]] = None
        self.pyramid: Optional[SimpleFeaturePyramid] = None
        if self._patch_size is not None:
            ts = self._patch_size if token_stride is None else (int(token_stride), ) * 2
            if min(ts) < 1:
                raise ValueError(f'{owner}: token_stride must be >= 1, got {token_stride}')
            self.token_stride = ts
            self._out_strides = [ts[0]] * len(self._out_channels)
            if pyramid_strides is not None:
                if ts[0] != ts[1] or len(set(self._out_channels)) != 1:
                    raise ValueError(f'{owner}: pyramid_strides needs a square token_stride and '
                                     'one width for all returned blocks')
                try:
                    self.pyramid = SimpleFeaturePyramid(self._out_channels[0], ts[0],
                                                        pyramid_strides, len(self._out_channels))
                except ValueError as err:
                    raise ValueError(f'{owner}: {err} (out_indices={self.out_indices})') from None
                self._out_channels = list(self.pyramid.out_channels)
                self._out_strides = list(self.pyramid.strides)

        if weights.kind == 'random':
            warn_random_init(owner, pretrained)
        elif weights.kind == 'file':
            self.load_pretrained(weights.name)
        else:
            print_log(f'{owner}: loaded timm pretrained weights {weights_origin(weights, path)}',
                      logger='current', level=logging.INFO)

        self.frozen_stages = int(frozen_stages)
        self._frozen_modules: List[str] = []
        self._freeze_stages(owner)

    # -- properties -----------------------------------------------------------------------------
    @property
    def out_channels(self) -> List[int]:
        """Channels of the returned levels (timm ``feature_info.channels()``, or the pyramid's)."""
        return list(self._out_channels)

    @property
    def out_strides(self) -> List[int]:
        """Strides of the returned levels in input pixels (timm ``feature_info.reduction()``;
        for token models ``token_stride`` or the pyramid's strides)."""
        return list(self._out_strides)

    # -- the full model's structure -------------------------------------------------------------
    def _full_structure(self) -> Tuple[List[str], List[dict]]:
        """State-dict keys and feature levels (``feature_info``) of the full (classification)
        timm model with the same arguments, built once on the ``meta`` device."""
        if self._full_keys is None:
            import timm
            try:
                with torch.device('meta'):  # structure only: no memory, no init cost
                    full = timm.create_model(self.model_name, pretrained=False,
                                             **self._timm_kwargs)
            except TypeError as err:  # an argument the model does not take
                raise TypeError(f'TimmBackbone({self.model_name!r}): timm.create_model does not '
                                f'take the arguments {sorted(self._timm_kwargs)}: {err}') from err
            except Exception:  # a model whose __init__ needs real tensor values
                full = timm.create_model(self.model_name, pretrained=False, **self._timm_kwargs)
            self._full_keys = list(full.state_dict().keys())
            levels = getattr(full, 'feature_info', None)
            self._full_levels = [dict(d) for d in levels] if isinstance(levels, list) else []
        return self._full_keys, self._full_levels

    def _full_model_keys(self) -> List[str]:
        """State-dict keys of the full (classification) timm model with the same arguments."""
        return self._full_structure()[0]

    def _check_out_indices(self, out_indices: Sequence[int], owner: str) -> Tuple[int, ...]:
        """``out_indices`` as increasing non-negative levels of the model, or a ValueError that
        lists the levels."""
        try:
            wanted = tuple(int(i) for i in out_indices)
        except (TypeError, ValueError):
            raise ValueError(f'{owner}: out_indices must be a sequence of ints, got '
                             f'{out_indices!r}') from None
        levels = self._full_structure()[1]
        if not levels:  # the model does not describe its levels: timm checks
            return wanted
        n = len(levels)
        listed = ', '.join(f"{i}: {d.get('module')} ({d.get('num_chs')} ch, stride "
                           f"{d.get('reduction')})" for i, d in enumerate(levels))
        bad = [i for i in wanted if not -n <= i < n]
        norm = tuple(i % n for i in wanted)
        if not wanted or bad or any(b <= a for a, b in zip(norm, norm[1:])):
            why = (f'{bad} out of range' if bad else 'not increasing' if wanted else 'empty')
            raise ValueError(f'{owner}: out_indices={tuple(wanted)} ({why}); the model has {n} '
                             f'feature levels: {listed}')
        return norm

    def _token_patch_size(self) -> Optional[Tuple[int, int]]:
        """The patch size of a patch-embedding model whose levels all have the patch stride."""
        inner = getattr(self.timm_model, 'model', None)
        patch = getattr(getattr(inner, 'patch_embed', None), 'patch_size', None)
        if patch is None:
            return None
        patch = (int(patch), ) * 2 if isinstance(patch, int) else tuple(int(p) for p in patch)
        if set(self._out_strides) != {max(patch)}:
            return None
        return patch

    # -- weights --------------------------------------------------------------------------------
    def map_full_model_state_dict(self, state: Dict[str, torch.Tensor],
                                  source: str = 'checkpoint') -> Dict[str, torch.Tensor]:
        """Rename a full-model (or features-only) state dict to the features model's keys.

        Keys already named like the features model are kept; full-model keys that the features
        model uses are renamed; full-model keys it does not use (head, pruned tail) are dropped
        with a logged note; keys of neither model are kept so that loading reports them.
        """
        target = set(self.timm_model.state_dict().keys())
        full_keys = self._full_model_keys()
        full_set = set(full_keys)
        variant_to_full: Dict[str, str] = {}
        for fk in full_keys:  # exact names win over renamed variants
            variant_to_full[fk] = fk
        for fk in full_keys:
            for variant in _feature_key_variants(fk)[1:]:
                variant_to_full.setdefault(variant, fk)
        full_to_target = {variant_to_full[t]: t for t in target if t in variant_to_full}

        mapped: Dict[str, torch.Tensor] = {}
        origin: Dict[str, str] = {}
        dropped = []
        for key, value in state.items():
            if key in target:
                new = key
            elif key in full_to_target:
                new = full_to_target[key]
            elif key in full_set or key in variant_to_full:
                dropped.append(key)
                continue
            else:
                new = key  # unknown: left for load_state_dict_checked to report
            if new in mapped:
                raise StateDictMismatchError(
                    f'{source}: keys {origin[new]!r} and {key!r} both map to {new!r} of '
                    f'TimmBackbone({self.model_name!r})')
            mapped[new] = value
            origin[new] = key
        if dropped:
            print_log(f'{source}: dropping {len(dropped)} full-model keys the features_only '
                      f'model does not use ({_list_keys(dropped)})',
                      logger='current', level=logging.INFO)
        return mapped

    def _resample_pos_embed(self, state: Dict[str, torch.Tensor],
                            source: str) -> Dict[str, torch.Tensor]:
        """A ViT position embedding of another grid, resampled to the model's (bicubic)."""
        inner = getattr(self.timm_model, 'model', None)
        key = 'model.pos_embed'
        own = self.timm_model.state_dict().get(key)
        value = state.get(key)
        grid = getattr(getattr(inner, 'patch_embed', None), 'grid_size', None)
        if own is None or value is None or grid is None or value.shape == own.shape \
                or value.dim() != 3 or value.shape[-1] != own.shape[-1]:
            return state  # nothing to do, or a mismatch load_state_dict_checked reports
        from timm.layers import resample_abs_pos_embed
        prefix = 0 if getattr(inner, 'no_embed_class', False) else \
            int(getattr(inner, 'num_prefix_tokens', 1))
        old = math.isqrt(value.shape[1] - prefix)
        if old * old != value.shape[1] - prefix:
            raise StateDictMismatchError(
                f'{source}: {key!r} holds {value.shape[1]} tokens, not {prefix} prefix tokens '
                f'and a square grid; the model has {tuple(own.shape)}')
        state = dict(state)
        state[key] = resample_abs_pos_embed(value.float(), new_size=list(grid),
                                            old_size=[old, old],
                                            num_prefix_tokens=prefix).to(value.dtype)
        print_log(f'{source}: position embedding resampled from a {old}x{old} to a '
                  f'{grid[0]}x{grid[1]} grid', logger='current', level=logging.INFO)
        return state

    def load_pretrained(self, path: PathLike) -> None:
        """Load a local checkpoint (see the class doc for the accepted formats).

        A file of this class's own state dict restores the pyramid too; any other file leaves
        the pyramid (which no timm checkpoint has) as initialised."""
        source = f'TimmBackbone({self.model_name!r}) pretrained {os.fspath(path)!r}'
        state = select_backbone_state_dict(read_checkpoint_state_dict(path), source)
        pyramid = {k[len('pyramid.'):]: v for k, v in state.items() if k.startswith('pyramid.')}
        state = {k: v for k, v in state.items() if not k.startswith('pyramid.')}
        state = select_backbone_state_dict(state, source, prefixes=('timm_model.', ))
        target = set(self.timm_model.state_dict().keys())
        if set(state) != target:  # not (exactly) a features-only state dict
            state = self.map_full_model_state_dict(state, source)
        state = self._resample_pos_embed(state, source)
        load_state_dict_checked(self.timm_model, state, source)
        if pyramid:
            if self.pyramid is None:
                raise StateDictMismatchError(
                    f'{source} holds pyramid weights ({_list_keys(pyramid)}) but this '
                    'TimmBackbone has no pyramid (pyramid_strides=None)')
            load_state_dict_checked(self.pyramid, pyramid, f'{source} (pyramid)')
        elif self.pyramid is not None:
            print_log(f'{source}: the file has no pyramid weights; the feature pyramid keeps '
                      'its random init', logger='current', level=logging.INFO)
        print_log(f'{source}: loaded {len(state) + len(pyramid)} tensors', logger='current',
                  level=logging.INFO)

    # -- frozen stages --------------------------------------------------------------------------
    def _freeze_stages(self, owner: str) -> None:
        """``requires_grad=False`` on the parameters before feature level ``frozen_stages``."""
        k = self.frozen_stages
        if k == -1:
            return
        levels = self._full_structure()[1]
        n = len(levels)
        if not levels:
            raise ValueError(f'{owner}: frozen_stages needs the feature levels of the model, '
                             'which timm does not describe for it')
        if not 0 <= k <= n:
            raise ValueError(f'{owner}: frozen_stages must be -1 or in 0..{n} (the model has {n} '
                             f'feature levels), got {k}')
        params = list(self.timm_model.named_parameters())
        later = tuple(p for d in levels[k:] for p in _module_prefixes(str(d.get('module'))))
        end = next((i for i, (name, _) in enumerate(params) if name.startswith(later)),
                   len(params)) if later else len(params)
        for _, p in params[:end]:
            p.requires_grad = False
        # the outermost modules whose parameters are all frozen stay in eval mode
        frozen: List[str] = []
        for name, module in self.timm_model.named_modules():
            if '' in frozen:  # the whole timm model
                break
            if any(name.startswith(f'{f}.') for f in frozen):
                continue
            ps = list(module.parameters())
            if ps and not any(p.requires_grad for p in ps):
                frozen.append(name)
        self._frozen_modules = ['timm_model' + (f'.{f}' if f else '') for f in frozen]
        print_log(f'{owner}: frozen_stages={k}: {end} of {len(params)} parameter tensors frozen',
                  logger='current', level=logging.INFO)

    # -- train / forward ------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Switch mode, keeping BatchNorm layers in eval when ``norm_eval`` and frozen stages in
        eval always."""
        super().train(mode)
        if mode and self.norm_eval:
            set_bn_eval(self)
        if mode:
            for name in getattr(self, '_frozen_modules', ()):
                self.get_submodule(name).eval()
        return self

    def fit_to_patches(self, x: torch.Tensor) -> torch.Tensor:
        """Resize ``x`` to whole patches, one per ``token_stride`` input pixels (token models)."""
        (ph, pw), (th, tw) = self._patch_size, self.token_stride
        h, w = x.shape[-2:]
        size = (math.ceil(h / th) * ph, math.ceil(w / tw) * pw)
        inner = self.timm_model.model
        fixed = getattr(inner.patch_embed, 'img_size', None)
        if not getattr(inner, 'dynamic_img_size', False) and fixed is not None \
                and tuple(fixed) != size:
            raise ValueError(
                f'TimmBackbone({self.model_name!r}): an input of {h}x{w} is fed as {size[0]}x'
                f'{size[1]} ({size[0] // ph}x{size[1] // pw} patches of {ph}x{pw}), but the model '
                f'was built for {fixed[0]}x{fixed[1]}; add dynamic_img_size=True (position '
                'embedding interpolated per input) or img_size to the backbone config')
        if size != (h, w):
            x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        return x

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``x`` [B, C, H, W] -> tuple of feature maps [B, C_i, H/s_i, W/s_i] (NCHW always)."""
        if self._patch_size is not None:
            x = self.fit_to_patches(x)
        feats = self.timm_model(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        if self._channels_last:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        if self.pyramid is not None:
            feats = self.pyramid(feats)
        return tuple(feats)


__all__ = ['SimpleFeaturePyramid', 'TimmBackbone']
