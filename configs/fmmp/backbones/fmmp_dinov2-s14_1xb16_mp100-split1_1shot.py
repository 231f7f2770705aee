# FMMP (CVPR'25), DINOv2 ViT-S/14 backbone, MP-100 split 1, 1-shot.
# Weights: timm 'vit_small_patch14_dinov2.lvd142m' (DINOv2 LVD-142M).
# Everything else is the official ResNet-50 recipe, ../fmmp_r50_1xb16_mp100-split1_1shot.py
# (the neck / heads read the level widths from TimmBackbone.out_channels).
# pretrained=True downloads timm's weights once into the Hugging Face hub cache. Offline:
# --cfg-options model.backbone.pretrained=/path/to/model.safetensors (docs/backbones.md).
# Levels: strides 8/16/32 (the grid of R50 C3-C5) from the last block through a
# simple feature pyramid (2x2 transposed conv / identity / 2x2 max pool).
# Patch 14: the input is resized to one 14 px patch per 16 input px (token_stride=16:
# 256 px -> 224 px, 16x16 tokens), so the token grid covers the crop exactly; the
# checkpoint's 518 px (37x37) position embedding is interpolated to the grid of each
# input (dynamic_img_size=True). feature_norm=True: the final LayerNorm is applied to
# the block output, as DINOv2's own dense features.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone',
                  model_name='vit_small_patch14_dinov2.lvd142m',
                  out_indices=(11, ), dynamic_img_size=True, token_stride=16,
                  pyramid_strides=(8, 16, 32),
                  feature_norm=True, pretrained=True))
