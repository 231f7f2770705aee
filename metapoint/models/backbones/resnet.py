"""ResNet backbone with torchvision's parameter layout, plus the local checkpoint helpers.

:class:`TorchvisionResNet` keeps the submodules of a ``torchvision.models.resnet.ResNet`` (stem,
``layer1`` .. ``layer4``) as its own direct children, so its ``state_dict`` keys are exactly
torchvision's minus the classifier (``fc.*``): torchvision ImageNet files and the mmpose ResNet
keys of the official CAPE checkpoints (``backbone.conv1.weight``,
``backbone.layer1.0.conv1.weight``, ...) load without any renaming.

The checkpoint helpers (:func:`read_checkpoint_state_dict`, :func:`select_backbone_state_dict`,
:func:`load_state_dict_checked`) are shared with :mod:`.timm_backbone` and
``tools/model_converters/make_backbone_checkpoint.py``. Weights are only ever read from local
files (``torch.load(..., weights_only=True)``); nothing is downloaded.
"""
import logging
import os
from collections.abc import Mapping
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from metapoint.registry import MODELS

PathLike = Union[str, os.PathLike]

# --------------------------------------------------------------------------------------------
# Local checkpoint helpers
# --------------------------------------------------------------------------------------------

#: Wrapper keys under which training frameworks nest the weights (mmengine / timm train:
#: 'state_dict', DeiT-style: 'model'). Tried in this order; the first one holding a mapping wins.
_NESTED_STATE_KEYS = ('state_dict', 'model')
_MAX_LISTED_KEYS = 20


class StateDictMismatchError(RuntimeError):
    """A checkpoint's keys or tensor shapes do not match the backbone (the offenders are named)."""


def _list_keys(keys: Iterable[str]) -> str:
    """``'a', 'b', ... (+N more)``: a readable, bounded list of keys for error messages."""
    keys = sorted(keys)
    shown = ', '.join(repr(k) for k in keys[:_MAX_LISTED_KEYS])
    if len(keys) > _MAX_LISTED_KEYS:
        shown += f', ... (+{len(keys) - _MAX_LISTED_KEYS} more)'
    return shown


def check_pretrained_arg(pretrained, owner: str, init_cfg=None) -> Optional[str]:
    """Validate a ``pretrained`` argument: ``None`` or a local path (returned as ``str``).

    ``pretrained`` and ``init_cfg`` exclude each other (init_cfg would overwrite the loaded
    weights in ``init_weights()``).
    """
    if pretrained is None:
        return None
    if isinstance(pretrained, bool):
        raise ValueError(
            f'{owner}: pretrained={pretrained!r} is not supported; pass the path of a local '
            'checkpoint file (weights are never downloaded) or None for random init.')
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f'{owner}: pretrained must be None or a local file path, '
                        f'got {type(pretrained).__name__}')
    if init_cfg is not None:
        raise ValueError('give either `pretrained` or `init_cfg`, not both (init_cfg would '
                         'overwrite the pretrained weights in init_weights())')
    return os.fspath(pretrained)


def read_checkpoint_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read the tensors of a local checkpoint file.

    Accepts a plain state dict (torchvision / timm files), a training checkpoint that nests it
    under ``'state_dict'`` (mmengine, timm train) or ``'model'``, and ``.safetensors`` files. The
    file is read with ``torch.load(..., map_location='cpu', weights_only=True)``.

    Raises:
        FileNotFoundError: ``path`` is not an existing file (nothing is downloaded).
        ValueError: the file holds no mapping of tensors.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'pretrained checkpoint not found: {path!r}. Backbone weights are only read from '
            'local files (URLs and model-zoo names are not downloaded); see '
            'tools/model_converters/make_backbone_checkpoint.py to prepare one offline.')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        ckpt = load_file(path, device='cpu')
    else:
        from metapoint.utils.setup_env import allow_mmengine_checkpoint_globals
        allow_mmengine_checkpoint_globals()  # mmengine checkpoints carry a message hub
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # UnpicklingError and friends: say which file and why
            raise RuntimeError(
                f'could not read checkpoint {path!r} with torch.load(weights_only=True): '
                f'{err}') from err
    for key in _NESTED_STATE_KEYS:
        if isinstance(ckpt, Mapping) and isinstance(ckpt.get(key), Mapping):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, Mapping):
        raise ValueError(f'checkpoint {path!r} holds a {type(ckpt).__name__}, not a state dict')
    state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f'checkpoint {path!r} holds no tensors (keys: {_list_keys(ckpt)})')
    return state


def _strip_common_prefix(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key when all keys carry it (e.g. DDP's ``module.``)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def select_backbone_state_dict(state: Dict[str, torch.Tensor], source: str = '',
                               prefixes: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """The backbone part of a checkpoint's state dict, with wrapper prefixes removed.

    * a ``module.`` prefix on every key (DDP) is removed;
    * when some keys start with ``backbone.`` (a full detector / CAPE model checkpoint), only
      those are kept, without the prefix; the other keys (heads, necks) are dropped with a note;
    * each of ``prefixes`` (e.g. the attribute a wrapper stores its model under) is then removed
      when every remaining key carries it.
    """
    state = _strip_common_prefix(state, 'module.')
    if any(k.startswith('backbone.') for k in state):
        others = [k for k in state if not k.startswith('backbone.')]
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        if others:
            print_log(f'{source}: using the {len(state)} `backbone.*` tensors of the checkpoint, '
                      f'ignoring {len(others)} other keys ({_list_keys(others)})',
                      logger='current', level=logging.INFO)
        state = _strip_common_prefix(state, 'module.')
    for prefix in prefixes:
        state = _strip_common_prefix(state, prefix)
    return state


def load_state_dict_checked(module: nn.Module, state: Dict[str, torch.Tensor],
                            source: str = 'checkpoint') -> None:
    """Load ``state`` into ``module`` with strict key and shape checks and readable errors.

    Missing BatchNorm ``num_batches_tracked`` buffers (absent from old torchvision files) are
    filled with 0; any other missing or unexpected key, or a shape mismatch, raises.

    Raises:
        StateDictMismatchError: keys missing from ``state`` or not expected by ``module``, or
            tensors whose shape differs from the module's (the keys and shapes are listed).
    """
    expected = module.state_dict()
    state = dict(state)
    for key in expected:
        if key not in state and key.endswith('num_batches_tracked'):
            state[key] = torch.zeros_like(expected[key])
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f'missing keys ({len(missing)}): {_list_keys(missing)}')
        if unexpected:
            parts.append(f'unexpected keys ({len(unexpected)}): {_list_keys(unexpected)}')
        raise StateDictMismatchError(
            f'{source} does not match {type(module).__name__}: ' + '; '.join(parts))
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        listed = ', '.join(f'{k!r}: checkpoint {a} vs model {b}' for k, a, b in wrong[:10])
        more = f' (+{len(wrong) - 10} more)' if len(wrong) > 10 else ''
        raise StateDictMismatchError(f'{source}: shape mismatch for {len(wrong)} tensors of '
                         f'{type(module).__name__}: {listed}{more}')
    module.load_state_dict(state, strict=True)


def warn_random_init(owner: str) -> None:
    """The warning logged when a backbone is built without pretrained weights."""
    print_log(f'{owner}: no `pretrained` checkpoint given, the backbone is randomly initialised. '
              'This is expected only when a full model checkpoint is loaded afterwards '
              '(load_from / --checkpoint) or when training from scratch on purpose.',
              logger='current', level=logging.WARNING)


def set_bn_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer under ``module`` in eval mode (running statistics frozen)."""
    for m in module.modules():
        if isinstance(m, _BatchNorm):
            m.eval()


# --------------------------------------------------------------------------------------------
# ResNet
# --------------------------------------------------------------------------------------------


@MODELS.register_module()
class TorchvisionResNet(BaseModule):
    """ResNet-18/34/50/101/152 built from torchvision blocks, returning multi-scale features.

    Parameter names equal torchvision's ``resnet{depth}`` without ``fc`` / ``avgpool``: stem
    ``conv1`` / ``bn1`` (+ ``relu``, ``maxpool``) and stages ``layer1`` .. ``layer4``.

    Args:
        depth: 18, 34, 50, 101 or 152.
        out_indices: stages to return, 0..3 = ``layer1`` .. ``layer4`` (strides 4, 8, 16, 32).
            Stages after the deepest one returned are not built (their checkpoint keys are
            dropped with a note when pretrained weights are loaded).
        pretrained: local checkpoint path or None. Accepted formats: a torchvision state dict
            (its ``fc.*`` classifier is dropped with a note), a state dict of this class, or an
            mmengine / mmpose checkpoint whose ``state_dict`` holds ``backbone.``-prefixed keys.
            All other keys must match exactly (missing / unexpected keys and shape mismatches
            raise). None: torchvision's default random init, with a logged warning.
        frozen_stages: freeze the stem and the first ``frozen_stages`` stages (-1: nothing,
            0: stem only); frozen parts get ``requires_grad=False`` and stay in eval mode.
        norm_eval: keep every BatchNorm layer in eval mode during training (default False, as
            in the official CAPE models).
        init_cfg: mmengine init config; must be None when ``pretrained`` is given (it would
            overwrite the loaded weights in ``init_weights``).
    """

    arch_settings = {
        18: (BasicBlock, (2, 2, 2, 2)),
        34: (BasicBlock, (3, 4, 6, 3)),
        50: (Bottleneck, (3, 4, 6, 3)),
        101: (Bottleneck, (3, 4, 23, 3)),
        152: (Bottleneck, (3, 8, 36, 3)),
    }
    stage_strides = (4, 8, 16, 32)
    _layer_names = ('layer1', 'layer2', 'layer3', 'layer4')

    def __init__(self, depth: int = 50, out_indices: Sequence[int] = (0, 1, 2, 3),
                 pretrained: Optional[PathLike] = None, frozen_stages: int = -1,
                 norm_eval: bool = False, init_cfg: Optional[Union[dict, List[dict]]] = None):
        super().__init__(init_cfg=init_cfg)
        if depth not in self.arch_settings:
            raise KeyError(f'invalid depth {depth} for TorchvisionResNet, '
                           f'choose from {sorted(self.arch_settings)}')
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or any(i < 0 or i > 3 for i in out_indices):
            raise ValueError(f'out_indices must be a non-empty subset of 0..3, got {out_indices}')
        if len(set(out_indices)) != len(out_indices):
            raise ValueError(f'out_indices has duplicates: {out_indices}')
        if not -1 <= frozen_stages <= 4:
            raise ValueError(f'frozen_stages must be in -1..4, got {frozen_stages}')
        pretrained = check_pretrained_arg(pretrained, f'TorchvisionResNet-{depth}', init_cfg)

        self.depth = depth
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.pretrained = pretrained

        block, layers = self.arch_settings[depth]
        net = ResNet(block, list(layers))  # torchvision's default init happens here
        # Keep the feature-extraction submodules as direct children (flat torchvision keys).
        # Only the stages up to the deepest returned one are kept: a stage that no output uses
        # would get no gradient, which DDP refuses.
        self.conv1 = net.conv1
        self.bn1 = net.bn1
        self.relu = net.relu
        self.maxpool = net.maxpool
        self.num_stages = max(out_indices) + 1
        for name in self._layer_names[:self.num_stages]:
            setattr(self, name, getattr(net, name))
        self._stage_channels = [64 * block.expansion * 2**i for i in range(4)]
        del net  # fc / avgpool and the stages after the deepest output are not used

        if pretrained is None:
            warn_random_init(f'TorchvisionResNet-{depth}')
        else:
            self.load_pretrained(pretrained)
        self._freeze_stages()

    # -- properties -----------------------------------------------------------------------------
    @property
    def out_channels(self) -> List[int]:
        """Channels of the returned levels, in ``out_indices`` order."""
        return [self._stage_channels[i] for i in self.out_indices]

    @property
    def out_strides(self) -> List[int]:
        """Strides (input pixels per feature cell) of the returned levels."""
        return [self.stage_strides[i] for i in self.out_indices]

    # -- weights --------------------------------------------------------------------------------
    def load_pretrained(self, path: PathLike) -> None:
        """Load a local checkpoint (see the class doc for the accepted formats)."""
        source = f'TorchvisionResNet-{self.depth} pretrained {os.fspath(path)!r}'
        state = select_backbone_state_dict(read_checkpoint_state_dict(path), source)
        unused = ('fc',) + self._layer_names[self.num_stages:]
        dropped = [k for k in state if k.split('.')[0] in unused]
        if dropped:
            print_log(f'{source}: dropping {len(dropped)} tensors of parts this backbone does not '
                      f'build (classifier, stages after layer{self.num_stages}): '
                      f'{_list_keys(dropped)}', logger='current', level=logging.INFO)
            state = {k: v for k, v in state.items() if k not in dropped}
        load_state_dict_checked(self, state, source)
        print_log(f'{source}: loaded {len(state)} tensors', logger='current', level=logging.INFO)

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        frozen = [self.conv1, self.bn1]
        frozen += [getattr(self, name) for name in self._layer_names[:self.frozen_stages]
                   if hasattr(self, name)]
        for m in frozen:
            m.eval()
            for p in m.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True):
        """Switch mode, keeping frozen stages (and all BN layers when ``norm_eval``) in eval."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            set_bn_eval(self)
        return self

    # -- forward --------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``x`` [B, 3, H, W] -> tuple of the ``out_indices`` stage outputs [B, C_i, H/s, W/s]."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = {}
        for i, name in enumerate(self._layer_names[:self.num_stages]):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs[i] = x
        return tuple(outs[i] for i in self.out_indices)
