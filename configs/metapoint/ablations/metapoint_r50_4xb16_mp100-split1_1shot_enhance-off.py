# MetaPoint ablation (split 1, 1-shot): no meta-embedding enhancement of the support tokens (official 'off' crashes, Q-M5)
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(arch_cfg=dict(enhance_sk_w_meta='off'))
