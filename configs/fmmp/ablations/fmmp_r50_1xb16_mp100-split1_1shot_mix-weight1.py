# FMMP ablation (split 1, 1-shot): mix_weight=1 (default 0.5).
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(criterion=dict(mix_weight=1.0))
