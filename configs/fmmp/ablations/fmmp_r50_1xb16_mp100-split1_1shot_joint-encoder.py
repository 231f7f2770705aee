# FMMP ablation (split 1, 1-shot): use_joint_encoder=True: a CapeFormer-style encoder layer per
# recurrent layer over the query's deepest tokens + keypoint tokens.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

model = dict(predictor=dict(use_joint_encoder=True))
