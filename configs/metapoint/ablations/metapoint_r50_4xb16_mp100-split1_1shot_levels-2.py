# MetaPoint ablation (split 1, 1-shot): 2 pyramid levels (C5, C4)
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(arch_cfg=dict(res_layer_num=2))
