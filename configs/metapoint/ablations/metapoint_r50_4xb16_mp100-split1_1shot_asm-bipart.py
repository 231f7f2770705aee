# MetaPoint ablation (split 1, 1-shot): assign only the support co-visible keypoints (the official 'bipart' crashes, Q-M4)
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(meta_cfg=dict(asm_type='bipart'))
