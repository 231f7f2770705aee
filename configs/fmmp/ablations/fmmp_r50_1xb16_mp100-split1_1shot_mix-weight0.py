# FMMP ablation (split 1, 1-shot): mix_weight=0 (default 0.5): mixup points are padded but not
# supervised.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(criterion=dict(mix_weight=0.0))
