# The schedule shared by the official MetaPoint / FMMP / CapeFormer recipes
# (docs/methods.md, official training recipes):
# Adam, linear warmup over 1000 iterations from 0.001 x lr, x0.1 at epochs 160 and 180, 200 epochs.
# Models override optim_wrapper.optimizer.lr (MetaPoint 5e-5, FMMP 1e-4, CapeFormer 1e-5).
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=200, val_interval=10)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=1e-4, weight_decay=0.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', by_epoch=True, begin=0, end=200, milestones=[160, 180], gamma=0.1),
]
# the batch the learning rates were tuned for (total over GPUs); see tools/train.py --auto-scale-lr
auto_scale_lr = dict(enable=False, base_batch_size=64)
