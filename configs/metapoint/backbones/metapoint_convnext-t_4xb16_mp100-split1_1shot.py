# MetaPoint (CVPR'24), ConvNeXt-T backbone, MP-100 split 1, 1-shot.
# Weights: timm 'convnext_tiny.fb_in1k' (ImageNet-1k).
# Everything else is the official ResNet-50 recipe, ../metapoint_r50_4xb16_mp100-split1_1shot.py
# (the neck / heads read the level widths from TimmBackbone.out_channels).
# pretrained=True downloads timm's weights once into the Hugging Face hub cache. Offline:
# --cfg-options model.backbone.pretrained=/path/to/model.safetensors (docs/backbones.md).
# Levels: all four stages, as with ResNet-50; the neck keeps the deepest three
# (strides 8/16/32).
# The '.fb_in1k' tag: the ConvNeXt paper's ImageNet-1k weights (plain 'convnext_tiny'
# would pick timm's ImageNet-12k-pretrained ones).
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone', model_name='convnext_tiny.fb_in1k',
                  out_indices=(0, 1, 2, 3), pretrained=True))
