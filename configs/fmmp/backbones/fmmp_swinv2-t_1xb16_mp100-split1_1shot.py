# FMMP (CVPR'25), SwinV2-T backbone, MP-100 split 1, 1-shot.
# Weights: timm 'swinv2_tiny_window8_256.ms_in1k' (ImageNet-1k).
# Everything else is the official ResNet-50 recipe, ../fmmp_r50_1xb16_mp100-split1_1shot.py
# (the neck / heads read the level widths from TimmBackbone.out_channels).
# pretrained=True downloads timm's weights once into the Hugging Face hub cache. Offline:
# --cfg-options model.backbone.pretrained=/path/to/model.safetensors (docs/backbones.md).
# Levels: stages 2-4 (strides 8/16/32), the ones FMMP takes from ResNet-50.
# strict_img_size=False: inputs other than 256 px work too (windows padded, masks
# built for each input size).
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(
    backbone=dict(_delete_=True, type='TimmBackbone',
                  model_name='swinv2_tiny_window8_256.ms_in1k',
                  out_indices=(1, 2, 3), strict_img_size=False, pretrained=True))
