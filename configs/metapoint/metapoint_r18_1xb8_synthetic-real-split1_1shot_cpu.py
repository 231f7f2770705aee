# MetaPoint on the synthetic set rendered from the real MP-100 poses (bash scripts.sh
# synthetic-real), split-1 category lists, on a CPU: the CPU learning check (docs/metapoint.md,
# "Learning check on CPU"); the quickstart runs a shortened copy. The official recipe is
# metapoint_r50_4xb16_mp100-split1_1shot.py.
#
# Budget changes (about 1.7 s per iteration on one core: 560 iterations, about 16 min):
# * ResNet-18 from scratch, 128x128 crops, its first 3 stages only (levels of stride 16 / 8 / 4,
#   8x8 / 16x16 / 32x32 maps): the keypoint markers are a few pixels wide;
# * support keypoint features pooled from all 3 levels; 70 meta-points (the minimum for 70
#   slots with 'nbipart'); 1 meta-decoder and 2 refine-decoder layers; no dropout; narrower
#   enhancer FFN; batch 8 episodes; Adam 3e-4 (x3 for the backbone and input projection);
# * the OPTIONAL similarity aid (similarity_aid; not part of the paper method, off in every
#   other config): support keypoint features vs the query map, cosine + softmax over positions,
#   on the two finest levels; with init_points the refine decoder starts from the similarity
#   peak of the finest level instead of the assigned query meta-point.
_base_ = ['./metapoint_r50_4xb16_mp100-split1_1shot.py']

data_root = 'data/synthetic_mp100_real'
input_size = (128, 128)
model = dict(backbone=dict(type='TorchvisionResNet', depth=18, out_indices=(0, 1, 2),
                           pretrained=None),  # from scratch, on purpose
             meta_cfg=dict(point_num=70),
             arch_cfg=dict(skfeat_layer_num=3),
             meta_decoder_layers=1,
             ref_decoder_layers=2,
             decoder_cfg=dict(dropout=0.0),
             enhancer_cfg=dict(ffn_dims=512, dropout=0.0),
             similarity_aid=dict(type='SimilarityAid', levels=(-1, -2),
                                 support_features='heatmap', weight=1.0, temperature=0.1,
                                 sigma=1.0, init_points=True, init_radius=1))

_train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='RandomScaleRotation', scale_factor=0.30, rot_factor=30, rot_prob=0.6),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='GenerateCAPETarget', heatmap_size=(32, 32), sigma=1, with_heatmap=True),
    dict(type='PackCAPEInstance'),
]
_test_pipeline = [p for p in _train_pipeline if p['type'] != 'RandomScaleRotation']
_data = dict(data_root=data_root, ann_file='annotations/unified_ann_file.json',
             data_prefix=dict(img='images'), split_file='splits.json')
total_batch_size = 8
train_dataloader = dict(
    batch_size=8, num_workers=0, persistent_workers=False,
    sampler=dict(type='EpisodeSampler', episodes_per_category=16),
    dataset=dict(_data, pipeline=_train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(_data, pipeline=_test_pipeline, num_episodes=5))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(_data, pipeline=_test_pipeline, num_episodes=20))

optim_wrapper = dict(optimizer=dict(type='Adam', lr=3e-4, weight_decay=0.0),
                     clip_grad=dict(max_norm=1.0),
                     paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=3.0),
                                                     'neck': dict(lr_mult=3.0)}))
# 70 categories x 16 episodes / 8 = 140 iterations per epoch
train_cfg = dict(max_epochs=4, val_interval=4)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=4, milestones=[3], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=4))
auto_scale_lr = dict(base_batch_size=8)
