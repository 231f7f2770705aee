# MP-100 episodes for FMMP: the unified layout of mp100.py, read from FMMP's annotation file with
# skeleton links for the categories whose MP-100 skeleton is empty (mixup / eqdiv padding and the
# structural heads follow the links). Obtain or build it: docs/annotation_files.md.
_base_ = ['./mp100.py']

ann_file = 'annotations/mp100_all_link_0412.json'

train_dataloader = dict(dataset=dict(ann_file=ann_file))
val_dataloader = dict(dataset=dict(ann_file=ann_file))
test_dataloader = dict(dataset=dict(ann_file=ann_file))
