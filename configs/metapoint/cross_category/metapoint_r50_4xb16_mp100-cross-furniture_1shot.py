# MetaPoint, ResNet-50, MP-100 cross-super-category split "furniture", 1-shot: train on every
# MP-100 category outside the furniture super-category, validate and test on its categories
# (1 shot, 15 queries). Category lists and episode counts:
# configs/_base_/datasets/mp100_cross_category.py (docs/cross_category.md).
# Everything else as the split-1 1-shot official recipe; the unified annotation file is read
# for the listed ids, in list order.
_base_ = [
    '../metapoint_r50_4xb16_mp100-split1_1shot.py',
    '../../_base_/datasets/mp100_cross_category.py',
]

train_dataloader = dict(dataset={{_base_.mp100_cross_category.furniture.train_dataset}})
val_dataloader = dict(dataset={{_base_.mp100_cross_category.furniture.val_dataset}})
test_dataloader = dict(dataset={{_base_.mp100_cross_category.furniture.test_dataset}})
