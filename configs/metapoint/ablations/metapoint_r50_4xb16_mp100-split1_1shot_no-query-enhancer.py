# MetaPoint ablation (split 1, 1-shot): support tokens not refined with the query feature map (enhance_sk_on_q=False)
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(arch_cfg=dict(enhance_sk_on_q=False))
