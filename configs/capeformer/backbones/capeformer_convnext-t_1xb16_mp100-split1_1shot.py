# CapeFormer (CVPR'23), ConvNeXt-T backbone, MP-100 split 1, 1-shot.
# Weights: timm 'convnext_tiny.fb_in1k' (ImageNet-1k).
# Everything else is the official ResNet-50 recipe, ../capeformer_r50_1xb16_mp100-split1_1shot.py
# (the neck / heads read the level widths from TimmBackbone.out_channels).
# pretrained=True downloads timm's weights once into the Hugging Face hub cache. Offline:
# --cfg-options model.backbone.pretrained=/path/to/model.safetensors (docs/backbones.md).
# Level: the last stage (stride 32: 8x8 at 256 px, like ResNet-50 C5).
# The '.fb_in1k' tag: the ConvNeXt paper's ImageNet-1k weights (plain 'convnext_tiny'
# would pick timm's ImageNet-12k-pretrained ones).
_base_ = ['../capeformer_r50_1xb16_mp100-split1_1shot.py']

model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='convnext_tiny.fb_in1k',
                  out_indices=(3, ), pretrained=True))
