# SupportCopy (non-learned floor) on MP-100 split 1, 1-shot, official protocol:
# 200 episodes x 15 queries per test category, PCK normalised by the query box.
_base_ = ['../_base_/default_runtime.py', '../_base_/datasets/mp100.py']

model = dict(type='SupportCopy', data_preprocessor=dict(type='CAPEDataPreprocessor'))
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# evaluation only: SupportCopy has nothing to train
train_dataloader = None
