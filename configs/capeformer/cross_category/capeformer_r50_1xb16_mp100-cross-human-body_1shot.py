# CapeFormer, ResNet-50, MP-100 cross-super-category split "human body", 1-shot: train on every
# MP-100 category outside the human body super-category, validate and test on its categories
# (1 shot, 15 queries). Category lists and episode counts:
# configs/_base_/datasets/mp100_cross_category.py (docs/cross_category.md).
# Everything else as the unified-file variant of the split-1 1-shot official recipe; the
# unified annotation file is read for the listed ids, in list order.
_base_ = [
    '../capeformer_r50_1xb16_mp100-split1_1shot_unified.py',
    '../../_base_/datasets/mp100_cross_category.py',
]

train_dataloader = dict(dataset={{_base_.mp100_cross_category.human_body.train_dataset}})
val_dataloader = dict(dataset={{_base_.mp100_cross_category.human_body.val_dataset}})
test_dataloader = dict(dataset={{_base_.mp100_cross_category.human_body.test_dataset}})
# the official cross-category configs validate (on the test categories) every 10 epochs
train_cfg = dict(val_interval=10)
