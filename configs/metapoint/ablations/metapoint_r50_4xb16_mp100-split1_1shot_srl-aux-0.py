# MetaPoint ablation (split 1, 1-shot): plain L1 (slack delta 0) instead of the slacked regression loss
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(criterion=dict(aux=0.0))
