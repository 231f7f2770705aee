# FMMP ablation (split 1, 1-shot): 2 recurrent layer(s) (default 3).
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(predictor=dict(num_layers=2))
