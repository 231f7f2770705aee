"""ResNet backbone with torchvision's parameter layout.

:class:`TorchvisionResNet` keeps the submodules of a ``torchvision.models.resnet.ResNet`` (stem,
``layer1`` .. ``layer4``) as its own direct children, so its ``state_dict`` keys are exactly
torchvision's minus the classifier (``fc.*``): torchvision ImageNet files and the mmpose ResNet
keys of the official CAPE checkpoints (``backbone.conv1.weight``,
``backbone.layer1.0.conv1.weight``, ...) load without any renaming.

Its ``pretrained`` value (``'torchvision://resnet50'``, a torchvision weights name, a local path
or None) is resolved by :mod:`.pretrained`, which also holds the strict checkpoint helpers.
"""
import logging
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from metapoint.registry import MODELS
from .pretrained import (PretrainedSpec, _list_keys, check_init_cfg, describe_resnet_weights,
                         fetch_weights, load_state_dict_checked, read_fetched_state_dict,
                         select_backbone_state_dict, warn_random_init, weights_origin)


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
        pretrained: where the initial weights come from (see :mod:`.pretrained`):
            ``'torchvision://resnet{depth}'`` (torchvision's ImageNet V1 file, as mmcv meant
            it; downloaded once into the torch hub cache), a torchvision weights name of this
            depth (``'IMAGENET1K_V1'``, ``'IMAGENET1K_V2'``, ``'ResNet50_Weights.IMAGENET1K_V1'``),
            or a local checkpoint: a torchvision state dict (its ``fc.*`` classifier is dropped
            with a note), a state dict of this class, or an mmengine / mmpose checkpoint whose
            ``state_dict`` holds ``backbone.``-prefixed keys. All other keys must match exactly
            (missing / unexpected keys and shape mismatches raise). None: torchvision's default
            random init, with a logged warning.
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
                 pretrained: PretrainedSpec = None, frozen_stages: int = -1,
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
        owner = f'TorchvisionResNet-{depth}'
        self.pretrained_source = describe_resnet_weights(pretrained, depth, owner)  # validates
        check_init_cfg(pretrained, init_cfg)

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

        if self.pretrained_source.kind == 'random':
            warn_random_init(owner)
        else:
            self.load_pretrained()
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
    def load_pretrained(self, pretrained: PretrainedSpec = None) -> None:
        """Load ``pretrained`` (any value but None, see the class doc; omitted: the value given
        to ``__init__``, whose :attr:`pretrained_source` is reused), downloading named
        torchvision weights into the torch hub cache when they are not there yet."""
        owner = f'TorchvisionResNet-{self.depth}'
        if pretrained is None:
            pretrained, weights = self.pretrained, self.pretrained_source
        else:
            weights = describe_resnet_weights(pretrained, self.depth, owner)
        path = fetch_weights(weights, pretrained, owner)
        source = f'{owner} pretrained {weights_origin(weights, path)}'
        state = select_backbone_state_dict(read_fetched_state_dict(weights, path), source)
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
