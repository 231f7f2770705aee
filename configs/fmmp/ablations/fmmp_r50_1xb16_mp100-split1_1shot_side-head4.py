# FMMP ablation (split 1, 1-shot): side_head=4 structural heads (default 8; 0 = plain deformable
# attention at the keypoint, 1 = the keypoint's own head only).
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(predictor=dict(side_heads=4))
