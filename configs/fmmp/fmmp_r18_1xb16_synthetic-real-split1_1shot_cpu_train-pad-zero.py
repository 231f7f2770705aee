# The FMMP CPU learning-check recipe with zero padding at train time instead of mixup (same
# budget; docs/fmmp.md compares the two). Test padding stays eqdiv.
_base_ = ['./fmmp_r18_1xb16_synthetic-real-split1_1shot_cpu.py']

train_dataloader = dict(dataset=dict(episode_pipeline=[
    dict(type='KeypointPadding', padding='zero', num=70),
    dict(type='StructuralNeighbours', num=16)]))
