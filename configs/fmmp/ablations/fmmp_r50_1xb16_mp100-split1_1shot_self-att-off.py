# FMMP ablation (split 1, 1-shot): use_self_att=False: no self-attention block in the mining
# layers.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(predictor=dict(self_attn=False))
