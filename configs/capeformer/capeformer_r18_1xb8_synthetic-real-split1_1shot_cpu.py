# CapeFormer on the synthetic set rendered from the real MP-100 poses (bash scripts.sh
# synthetic-real), split-1 category lists (unified file + splits.json, the same episodes as the
# MetaPoint / FMMP CPU checks), on a CPU: the CPU learning check (bash scripts.sh capeformer-cpu).
# The official recipe is capeformer_r50_1xb16_mp100-split1_1shot.py.
#
# Budget changes (the learning-check budget: at most 20 min of training on 2 cores; 840
# iterations of 8 episodes take about 11 min with 2 threads):
# * ResNet-18 from scratch, 128x128 crops, its first 3 stages only: the stride-16 map (256
#   channels) gives the 8x8 token grid the official model has at 256 px (stride 32); the
#   stride-32 map (out_indices=(3,), 512 channels) would leave 4x4 cells of 32 px for the
#   proposal window. Heatmaps 32x32 (stride 4 of the crop), sigma 1;
# * no dropout, FFN 512 instead of 2048 in encoder and decoder (3 + 3 layers kept);
# * batch 8 episodes, 16 episodes per category and epoch, 6 epochs; Adam 3e-4 with a 50-iteration
#   warmup, x0.1 for the last epoch, gradient clipping at norm 1 (from scratch; the official
#   recipe uses 1e-5 without clipping on an ImageNet backbone);
# * K stays 100 (the order embedding is tied to K); no similarity aid (similarity_aid=None).
_base_ = ['./capeformer_r50_1xb16_mp100-split1_1shot_unified.py']

data_root = 'data/synthetic_mp100_real'
input_size = (128, 128)
model = dict(backbone=dict(type='TorchvisionResNet', depth=18, out_indices=(2, ),
                           pretrained=None),  # from scratch, on purpose
             encoder_cfg=dict(ffn_dims=512, dropout=0.0),
             decoder_cfg=dict(ffn_dims=512, dropout=0.0),
             similarity_aid=None)

_train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='RandomScaleRotation', scale_factor=0.15, rot_factor=15, rot_prob=0.6),
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
                     clip_grad=dict(max_norm=1.0))
# 70 categories x 16 episodes / 8 = 140 iterations per epoch
train_cfg = dict(max_epochs=6, val_interval=6)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=6, milestones=[5], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=6))
auto_scale_lr = dict(base_batch_size=8)
