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
other missing or unexpected key, and any shape mismatch, raises.
"""
import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from mmengine.model import BaseModule

from metapoint.registry import MODELS
from .pretrained import (PathLike, PretrainedSpec, StateDictMismatchError, _list_keys,
                         check_init_cfg, describe_timm_weights, fetch_weights,
                         load_state_dict_checked, read_checkpoint_state_dict,
                         select_backbone_state_dict, warn_random_init, weights_origin)
from .resnet import set_bn_eval

#: ``timm.create_model`` arguments that :class:`TimmBackbone` sets itself.
_RESERVED_KWARGS = ('features_only', 'pretrained', 'pretrained_cfg', 'pretrained_cfg_overlay',
                    'checkpoint_path', 'out_indices')


def _feature_key_variants(full_key: str) -> Tuple[str, ...]:
    """Names a full-model state-dict key can take in timm's ``features_only`` wrappers."""
    variants = [full_key]
    head, dot, tail = full_key.partition('.')
    if dot and '.' in tail:  # a flattened Sequential child: 'stages.0.x' -> 'stages_0.x'
        child, _, rest = tail.partition('.')
        variants.append(f'{head}_{child}.{rest}')
    variants.append(f'model.{full_key}')  # FeatureGetterNet keeps the model as `.model`
    return tuple(variants)


@MODELS.register_module()
class TimmBackbone(BaseModule):
    """A timm model created with ``features_only=True``; returns a tuple of NCHW feature maps.

    Args:
        model_name: any ``timm.list_models()`` name, e.g. ``'resnet50'``, ``'convnext_tiny'``.
        out_indices: timm feature levels to return (timm's numbering: for ResNets level 0 is
            the stride-2 stem and 1..4 are ``layer1``..``layer4``); None: timm's default.
        pretrained: True: timm's pretrained weights of ``model_name`` (its default tag, or the
            tag in the name, e.g. ``'resnet50.tv_in1k'``), downloaded once into the Hugging Face
            hub cache and loaded by timm; None / False: random init, with a logged warning; or
            a local checkpoint path. Accepted local files: a full-model timm state dict (e.g.
            ``timm.create_model(name).state_dict()`` or a hub ``pytorch_model.bin`` /
            ``model.safetensors``), a features-only state dict, this class's own state dict, or
            an mmengine checkpoint with ``backbone.``-prefixed keys. Read with
            ``torch.load(weights_only=True)``.
        norm_eval: keep every BatchNorm layer in eval mode during training.
        init_cfg: mmengine init config; must be None when ``pretrained`` is given.
        **timm_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).
    """

    def __init__(self, model_name: str, out_indices: Optional[Sequence[int]] = None,
                 pretrained: PretrainedSpec = None, norm_eval: bool = False,
                 init_cfg: Optional[Union[dict, List[dict]]] = None, **timm_kwargs):
        super().__init__(init_cfg=init_cfg)
        import timm
        reserved = sorted(set(timm_kwargs) & set(_RESERVED_KWARGS))
        if reserved:
            raise ValueError(f'TimmBackbone sets {reserved} itself; use its `out_indices` / '
                             '`pretrained` arguments instead')
        owner = f'TimmBackbone({model_name!r})'
        weights = describe_timm_weights(pretrained, model_name, owner)  # validates
        check_init_cfg(pretrained, init_cfg)
        self.pretrained_source = weights
        self.model_name = model_name
        self.norm_eval = norm_eval
        self.pretrained = pretrained
        self._timm_kwargs = dict(timm_kwargs)

        create_kwargs = dict(timm_kwargs, features_only=True, pretrained=False)
        if out_indices is not None:
            create_kwargs['out_indices'] = tuple(int(i) for i in out_indices)
        if weights.is_remote:  # timm loads its own weights (and applies its key filters)
            path = fetch_weights(weights, pretrained, owner)
            create_kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=path))
        self.timm_model = timm.create_model(model_name, **create_kwargs)

        info = self.timm_model.feature_info
        self.out_indices = tuple(info.out_indices)
        self._out_channels = [int(c) for c in info.channels()]
        self._out_strides = [int(r) for r in info.reduction()]
        fmt = getattr(self.timm_model, 'output_fmt', 'NCHW')
        self._channels_last = str(getattr(fmt, 'value', fmt)).upper() == 'NHWC'  # e.g. swin

        if weights.kind == 'random':
            warn_random_init(owner, pretrained)
        elif weights.kind == 'file':
            self.load_pretrained(weights.name)
        else:
            print_log(f'{owner}: loaded timm pretrained weights {weights_origin(weights, path)}',
                      logger='current', level=logging.INFO)

    # -- properties -----------------------------------------------------------------------------
    @property
    def out_channels(self) -> List[int]:
        """Channels of the returned levels (timm ``feature_info.channels()``)."""
        return list(self._out_channels)

    @property
    def out_strides(self) -> List[int]:
        """Strides of the returned levels (timm ``feature_info.reduction()``)."""
        return list(self._out_strides)

    # -- weights --------------------------------------------------------------------------------
    def _full_model_keys(self) -> List[str]:
        """State-dict keys of the full (classification) timm model with the same arguments."""
        import timm
        try:
            with torch.device('meta'):  # structure only: no memory, no init cost
                full = timm.create_model(self.model_name, pretrained=False, **self._timm_kwargs)
        except Exception:  # a model whose __init__ needs real tensor values
            full = timm.create_model(self.model_name, pretrained=False, **self._timm_kwargs)
        return list(full.state_dict().keys())

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

    def load_pretrained(self, path: PathLike) -> None:
        """Load a local checkpoint (see the class doc for the accepted formats)."""
        source = f'TimmBackbone({self.model_name!r}) pretrained {os.fspath(path)!r}'
        state = select_backbone_state_dict(read_checkpoint_state_dict(path), source,
                                           prefixes=('timm_model.',))
        target = set(self.timm_model.state_dict().keys())
        if set(state) != target:  # not (exactly) a features-only state dict
            state = self.map_full_model_state_dict(state, source)
        load_state_dict_checked(self.timm_model, state, source)
        print_log(f'{source}: loaded {len(state)} tensors', logger='current', level=logging.INFO)

    # -- train / forward ------------------------------------------------------------------------
    def train(self, mode: bool = True):
        """Switch mode, keeping BatchNorm layers in eval when ``norm_eval``."""
        super().train(mode)
        if mode and self.norm_eval:
            set_bn_eval(self)
        return self

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``x`` [B, C, H, W] -> tuple of feature maps [B, C_i, H/s_i, W/s_i] (NCHW always)."""
        feats = self.timm_model(x)
        if isinstance(feats, dict):
            feats = list(feats.values())
        if self._channels_last:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        return tuple(feats)


__all__ = ['TimmBackbone']
