"""Feature backbones (torchvision-layout ResNets, any timm model) and their pretrained weights."""
from .pretrained import (PretrainedWeightsUnavailable, StateDictMismatchError, WeightsSource,
                         describe_resnet_weights, describe_timm_weights,
                         disable_backbone_pretrained, fetch_weights)
from .resnet import TorchvisionResNet
from .timm_backbone import SimpleFeaturePyramid, TimmBackbone

__all__ = [
    'PretrainedWeightsUnavailable', 'SimpleFeaturePyramid', 'StateDictMismatchError',
    'TimmBackbone', 'TorchvisionResNet', 'WeightsSource', 'describe_resnet_weights',
    'describe_timm_weights', 'disable_backbone_pretrained', 'fetch_weights'
]
