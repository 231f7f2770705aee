# FMMP ablation (split 1, 1-shot): embed_init='cst': keypoint embeddings start from zeros instead
# of sampled support features.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(predictor=dict(embed_init='cst'))
