# FMMP ablation (split 1, 1-shot): top_down_fuse=True: a second, convolutional top-down fusion of
# the query pyramid.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(predictor=dict(top_down_fuse=True))
