# MetaPoint (CVPR'24), ResNet-50, MP-100 split 1, 1-shot: the official s1 recipe.
# Batch: 64 episodes per iteration, the official 4 GPUs x 16 (the official train script passes
# --batch-size 64 over 4 GPUs, overriding the config's samples_per_gpu=24), kept over any GPU count
# by total_batch_size below.
# Adam lr 5e-5, linear warmup 1000 iters, x0.1 at epochs 160/180, 200 epochs.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/mp100.py',
          '../_base_/schedules/adam_200e.py']

split = 1
num_shots = 1
max_kpt_num = 70
input_size = (256, 256)

model = dict(
    type='MetaPoint',
    backbone=dict(type='TorchvisionResNet', depth=50, out_indices=(0, 1, 2, 3),
                  # torchvision's ImageNet V1 file (resnet50-0676ba61.pth), what the official
                  # recipe's torchvision://resnet50 loaded; downloaded once into the torch hub
                  # cache. Offline: --cfg-options model.backbone.pretrained=/path/to/that file
                  pretrained='torchvision://resnet50'),
    meta_cfg=dict(point_num=100, point_dim=256, asm_type='nbipart'),
    arch_cfg=dict(enhance_sk_w_meta='cat-qs', enhance_sk_on_q=True, res_layer_num=3,
                  skfeat_layer_num=1, skfeat_layer_fusion='cat', train_gate_uses_query=True),
    decoder_cfg=dict(n_heads=4, d_ffn=256, n_points=4, ref_feat=True, self_att=True,
                     iden_pos=True, coor_pos=True, dropout=0.1, mask_invalid_keys=False),
    meta_decoder_layers=3,
    ref_decoder_layers=3,
    enhancer_cfg=dict(num_layers=3, num_heads=8, ffn_dims=2048, dropout=0.1),
    criterion=dict(type='MetaPointCriterion', l1=1.0, vp=0.1, vn=0.005, meta=0.1, ref=1.0,
                   aux=0.1),
    max_kpt_num=max_kpt_num,
    data_preprocessor=dict(type='CAPEDataPreprocessor'))

_train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='RandomScaleRotation', scale_factor=0.30, rot_factor=30, rot_prob=0.6),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='GenerateCAPETarget', heatmap_size=(64, 64), sigma=2, with_heatmap=True),
    dict(type='PackCAPEInstance'),
]
_test_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='GenerateCAPETarget', heatmap_size=(64, 64), sigma=2, with_heatmap=True),
    dict(type='PackCAPEInstance'),
]
_episode_pipeline = [dict(type='KeypointPadding', padding='zero', num=max_kpt_num)]
# episodes per iteration over all processes (the official 4 GPUs x 16): tools/train.py splits it
# over the launched processes, or warns loudly when it cannot (docs/engine.md)
total_batch_size = 64
train_dataloader = dict(
    batch_size=16,  # per process; replaced by total_batch_size / processes unless given
    # on the command line (--cfg-options train_dataloader.batch_size=N)
    dataset=dict(split=split, num_shots=num_shots, max_kpt_num=max_kpt_num,
                 pipeline=_train_pipeline, episode_pipeline=_episode_pipeline))
val_dataloader = dict(
    dataset=dict(split=split, num_shots=num_shots, max_kpt_num=max_kpt_num,
                 pipeline=_test_pipeline, episode_pipeline=_episode_pipeline))
test_dataloader = dict(
    dataset=dict(split=split, num_shots=num_shots, max_kpt_num=max_kpt_num,
                 pipeline=_test_pipeline, episode_pipeline=_episode_pipeline))

optim_wrapper = dict(optimizer=dict(type='Adam', lr=5e-5, weight_decay=0.0))
train_cfg = dict(max_epochs=200, val_interval=10)
default_hooks = dict(checkpoint=dict(interval=50, save_best='mPCK', rule='greater'))
auto_scale_lr = dict(base_batch_size=64)
