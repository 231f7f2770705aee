# FMMP on the synthetic set rendered from the real MP-100 poses (bash scripts.sh synthetic-real),
# split-1 category lists, on a CPU: ResNet-18 from scratch (stages 2-4 as officially: a 4/8/16
# cell pyramid at 128 px), 128x128 crops, 1 process x 16 episodes, and a CPU-sized predictor
# (128 channels, 4 side heads instead of 256 and 8: the 8 per-head value projections over the
# whole pyramid dominate a CPU iteration). Used by the learning check (docs/fmmp.md). The
# official recipe is fmmp_r50_1xb16_mp100-split1_1shot.py.
_base_ = ['./fmmp_r50_1xb16_mp100-split1_1shot.py']

data_root = 'data/synthetic_mp100_real'
input_size = (128, 128)
max_kpt_num = 70
train_padding = dict(type='KeypointPadding', padding='mixup', num=max_kpt_num, prob=1.0,
                     alpha=1.0)
test_padding = dict(type='KeypointPadding', padding='eqdiv', num=max_kpt_num, prob=1.0,
                    alpha=1.0)
# similarity_aid: the optional aid (NOT part of FMMP, docs/fmmp.md): a dense matching loss for
# the from-scratch backbone, and the recurrent predictor starts from the similarity peak instead
# of the crop centre. Set model.similarity_aid=None for plain FMMP.
model = dict(backbone=dict(type='TorchvisionResNet', depth=18, out_indices=(1, 2, 3),
                           pretrained=None),  # from scratch, on purpose
             neck=dict(out_channels=128),
             predictor=dict(dropout=0.0, side_heads=4),
             similarity_aid=dict(type='SimilarityAid', levels=(-1,),
                                 support_features='point', temperature=0.1, sigma=1.0,
                                 weight=1.0, init_points=True))

_train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='RandomScaleRotation', scale_factor=0.15, rot_factor=15, rot_prob=0.6),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='GenerateCAPETarget', heatmap_size=(32, 32), sigma=1, with_heatmap=False),
    dict(type='PackCAPEInstance'),
]
_test_pipeline = [p for p in _train_pipeline if p['type'] != 'RandomScaleRotation']
_neighbours = dict(type='StructuralNeighbours', num=16)
_data = dict(data_root=data_root, ann_file='annotations/unified_ann_file.json',
             data_prefix=dict(img='images'), split_file='splits.json')
total_batch_size = 16
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    sampler=dict(type='EpisodeSampler', episodes_per_category=16),
    dataset=dict(_data, pipeline=_train_pipeline, episode_pipeline=[train_padding, _neighbours]))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(_data, pipeline=_test_pipeline, num_episodes=5,
                                   episode_pipeline=[test_padding, _neighbours]))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(_data, pipeline=_test_pipeline, num_episodes=20,
                                    episode_pipeline=[test_padding, _neighbours]))

optim_wrapper = dict(optimizer=dict(type='Adam', lr=3e-4, weight_decay=0.0),
                     clip_grad=dict(max_norm=1.0))
train_cfg = dict(max_epochs=6, val_interval=6)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=6, milestones=[5], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=6, save_best=None))
auto_scale_lr = dict(base_batch_size=16)
