# MetaPoint ablation (split 1, 1-shot): 70 meta-points (non-square: near-square initial grid)
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(meta_cfg=dict(point_num=70))
