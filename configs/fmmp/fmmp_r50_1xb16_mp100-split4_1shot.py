# FMMP, ResNet-50, MP-100 split 4, 1-shot (train and test use 1 shot(s)); everything else as
# the split-1 1-shot official recipe. Validation uses split 4's own val categories.
_base_ = ['./fmmp_r50_1xb16_mp100-split1_1shot.py']

_data = dict(split=4, num_shots=1)
train_dataloader = dict(dataset=_data)
val_dataloader = dict(dataset=_data)
test_dataloader = dict(dataset=_data)
