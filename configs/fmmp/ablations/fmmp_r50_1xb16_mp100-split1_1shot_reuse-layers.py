# FMMP ablation (split 1, 1-shot): reuse_layers=True: one support and one query mining layer shared
# by the 3 recurrent layers.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(predictor=dict(reuse_layers=True))
