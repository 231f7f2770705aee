# MetaPoint ablation (split 1, 1-shot): decoder self-attention ignores invalid tokens as keys (official attends to them, Q-M7)
_base_ = ['../metapoint_r50_4xb16_mp100-split1_1shot.py']

model = dict(decoder_cfg=dict(mask_invalid_keys=True))
