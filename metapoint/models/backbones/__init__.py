"""Feature backbones: torchvision-layout ResNets and any timm model, weights from local files."""
from .resnet import StateDictMismatchError, TorchvisionResNet
from .timm_backbone import TimmBackbone

__all__ = ['StateDictMismatchError', 'TimmBackbone', 'TorchvisionResNet']
