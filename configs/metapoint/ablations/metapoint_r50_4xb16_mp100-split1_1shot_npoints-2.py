# MetaPoint ablation (split 1, 1-shot): 2 sampling points per head in the deformable attention
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(decoder_cfg=dict(n_points=2))
