# FMMP ablation (split 1, 1-shot): zero padding at train time (default mixup); test keeps eqdiv. No
# padded slot is supervised.
_base_ = ['../fmmp_r50_1xb16_mp100-split1_1shot.py']

train_dataloader = dict(dataset=dict(episode_pipeline=[
    dict(type='KeypointPadding', padding='zero', num=70),
    dict(type='StructuralNeighbours', num=16)]))
