# FMMP, ResNet-50, MP-100 cross-super-category split "human body", 1-shot: train on every
# MP-100 category outside the human body super-category, validate and test on its categories
# (1 shot, 15 queries). Category lists and episode counts:
# configs/_base_/datasets/mp100_cross_category.py (docs/cross_category.md).
# Everything else as the split-1 1-shot official recipe; FMMP's linked annotation file
# (annotations/mp100_all_link_0412.json) is read for the listed ids, in list order.
_base_ = [
    '../fmmp_r50_1xb16_mp100-split1_1shot.py',
    '../../_base_/datasets/mp100_cross_category.py',
]

train_dataloader = dict(dataset={{_base_.mp100_cross_category.human_body.train_dataset}})
val_dataloader = dict(dataset={{_base_.mp100_cross_category.human_body.val_dataset}})
test_dataloader = dict(dataset={{_base_.mp100_cross_category.human_body.test_dataset}})
