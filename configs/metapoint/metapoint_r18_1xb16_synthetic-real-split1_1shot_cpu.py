# MetaPoint on the synthetic set rendered from the real MP-100 poses (bash scripts.sh
# synthetic-real), split-1 category lists, on a CPU: ResNet-18 from scratch, 128x128 crops,
# 1 process x 16 episodes. Used by the learning check (docs/metapoint.md) and, shortened, by
# the quickstart. The official recipe is metapoint_r50_4xb16_mp100-split1_1shot.py.
_base_ = ['./metapoint_r50_4xb16_mp100-split1_1shot.py']

data_root = 'data/synthetic_mp100_real'
input_size = (128, 128)
# dropout off and a narrower enhancer FFN keep a CPU iteration cheap
model = dict(backbone=dict(type='TorchvisionResNet', depth=18, out_indices=(0, 1, 2, 3),
                           pretrained=None),
             decoder_cfg=dict(dropout=0.0),
             enhancer_cfg=dict(ffn_dims=512, dropout=0.0))

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
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False,
    sampler=dict(type='EpisodeSampler', episodes_per_category=16),
    dataset=dict(_data, pipeline=_train_pipeline))
val_dataloader = dict(num_workers=0, persistent_workers=False,
                      dataset=dict(_data, pipeline=_test_pipeline, num_episodes=5))
test_dataloader = dict(num_workers=0, persistent_workers=False,
                       dataset=dict(_data, pipeline=_test_pipeline, num_episodes=20))

optim_wrapper = dict(optimizer=dict(type='Adam', lr=3e-4, weight_decay=0.0),
                     clip_grad=dict(max_norm=1.0))
train_cfg = dict(max_epochs=8, val_interval=8)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=8, milestones=[7], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=8))
auto_scale_lr = dict(base_batch_size=16)
