# CapeFormer, ResNet-50, MP-100 split 4, 1-shot on the unified-file protocol of the MetaPoint /
# FMMP configs: annotations/unified_ann_file.json restricted to the official split-4 lists
# (metapoint/datasets/mp100_splits.py), categories in that order, so the test episodes are the
# ones MetaPoint and FMMP are evaluated on. Model, schedule and shots as the per-split
# config capeformer_r50_1xb16_mp100-split4_1shot.py.
_base_ = ['./capeformer_r50_1xb16_mp100-split4_1shot.py']

_unified = dict(ann_file='annotations/unified_ann_file.json', split=4)
train_dataloader = dict(dataset=dict(_unified, subset='train'))
val_dataloader = dict(dataset=dict(_unified, subset='val'))
test_dataloader = dict(dataset=dict(_unified, subset='test'))
