# FMMP (CVPR'25), ResNet-50, MP-100 split 1, 1-shot: the official s1 recipe.
# Batch: 1 GPU x 16 episodes (the official install.sh trains on 1 GPU with --batch-size 16, which
# overrides the config's samples_per_gpu, Q-F11). Adam lr 1e-4, linear warmup 1000 iters from
# 0.001 x lr, x0.1 at epochs 160/180, 200 epochs. Train padding mixup (prob 1, alpha 1), test eqdiv.
# Data: annotations/mp100_all_link_0412.json (the unified file with skeleton links, see
# configs/_base_/datasets/mp100_fmmp.py and docs/annotation_files.md).
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/mp100_fmmp.py',
          '../_base_/schedules/adam_200e.py']

split = 1
num_shots = 1
max_kpt_num = 70
input_size = (256, 256)

model = dict(
    type='FMMP',
    backbone=dict(type='TorchvisionResNet', depth=50, out_indices=(1, 2, 3),
                  # torchvision's ImageNet V1 file (resnet50-0676ba61.pth), what the official
                  # recipe's torchvision://resnet50 loaded; downloaded once into the torch hub
                  # cache. Offline: --cfg-options model.backbone.pretrained=/path/to/that file
                  pretrained='torchvision://resnet50'),
    neck=dict(type='LevelProjectionNeck', num_levels=3, out_channels=256, top_down=True),
    predictor=dict(type='RecurrentFGSAPredictor', num_layers=3, num_heads=8, num_points=4,
                   ffn_dims=256, dropout=0.1, side_heads=8, self_attn=True, embed_init='ref',
                   point_init='cst', ref_feat_aware=False, use_joint_encoder=False,
                   top_down_fuse=False, reuse_layers=False, projector_init='xavier'),
    criterion=dict(type='FMMPCriterion', mix_weight=0.5),
    max_kpt_num=max_kpt_num,
    data_preprocessor=dict(type='CAPEDataPreprocessor'))

_train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='RandomScaleRotation', scale_factor=0.15, rot_factor=15, rot_prob=0.6),
    dict(type='TopdownAffine', input_size=input_size),
    # as officially, invisible keypoints keep their annotation coordinates (structural heads
    # and padding links still point at them; docs/fmmp.md)
    dict(type='KeepInvisibleKeypointsRaw'),
    dict(type='GenerateCAPETarget', heatmap_size=(64, 64), sigma=2, with_heatmap=False),
    dict(type='PackCAPEInstance'),
]
_test_pipeline = [p for p in _train_pipeline if p['type'] != 'RandomScaleRotation']
train_padding = dict(type='KeypointPadding', padding='mixup', num=max_kpt_num, prob=1.0,
                     alpha=1.0)
test_padding = dict(type='KeypointPadding', padding='eqdiv', num=max_kpt_num, prob=1.0,
                    alpha=1.0)
_neighbours = dict(type='StructuralNeighbours', num=16)
# episodes per iteration over all processes (the official 1 GPU x 16): tools/train.py splits it
# over the launched processes, or warns loudly when it cannot (docs/engine.md)
total_batch_size = 16
train_dataloader = dict(
    batch_size=16,  # per process; replaced by total_batch_size / processes unless given
    # on the command line (--cfg-options train_dataloader.batch_size=N)
    dataset=dict(split=split, num_shots=num_shots, max_kpt_num=max_kpt_num,
                 pipeline=_train_pipeline, episode_pipeline=[train_padding, _neighbours]))
val_dataloader = dict(
    dataset=dict(split=split, num_shots=num_shots, max_kpt_num=max_kpt_num,
                 pipeline=_test_pipeline, episode_pipeline=[test_padding, _neighbours]))
test_dataloader = dict(
    dataset=dict(split=split, num_shots=num_shots, max_kpt_num=max_kpt_num,
                 pipeline=_test_pipeline, episode_pipeline=[test_padding, _neighbours]))

optim_wrapper = dict(optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
train_cfg = dict(max_epochs=200, val_interval=10)
default_hooks = dict(checkpoint=dict(interval=50, save_best='mPCK', rule='greater'))
auto_scale_lr = dict(base_batch_size=16)
