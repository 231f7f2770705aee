# FMMP ablation (split 1, 1-shot): ref_feat_aware=True: point features at the reference points are
# added to the mining queries.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(predictor=dict(ref_feat_aware=True))
