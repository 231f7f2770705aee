# MetaPoint (CVPR'24), SwinV2-T backbone, MP-100 split 1, 1-shot.
# Weights: timm 'swinv2_tiny_window8_256.ms_in1k' (ImageNet-1k).
# Everything else is the official ResNet-50 recipe, ../metapoint_r50_4xb16_mp100-split1_1shot.py
# (the neck / heads read the level widths from TimmBackbone.out_channels).
# pretrained=True downloads timm's weights once into the Hugging Face hub cache. Offline:
# --cfg-options model.backbone.pretrained=/path/to/model.safetensors (docs/backbones.md).
# Levels: all four stages, as with ResNet-50; the neck keeps the deepest three
# (strides 8/16/32).
# strict_img_size=False: inputs other than 256 px work too (windows padded, masks
# built for each input size).
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone',
                  model_name='swinv2_tiny_window8_256.ms_in1k',
                  out_indices=(0, 1, 2, 3), strict_img_size=False, pretrained=True))
