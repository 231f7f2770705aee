# MetaPoint ablation (split 1, 1-shot): add (not concatenate) the assigned query meta embeddings only
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(arch_cfg=dict(enhance_sk_w_meta='add-q'))
