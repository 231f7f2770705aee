# FMMP ablation (split 1, 1-shot): eqdiv padding at train time (default mixup); test keeps eqdiv.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

train_dataloader = dict(dataset=dict(episode_pipeline=[
    dict(type='KeypointPadding', padding='eqdiv', num=70, prob=1.0, alpha=1.0),
    dict(type='StructuralNeighbours', num=16)]))
