# MetaPoint, ResNet-50, MP-100 split 1, 5-shot (train and test use 5 shot(s); the official
# s*_n5 configs leave the test at 1 shot, Q-M10). Validation uses split 1's own val categories.
_base_ = ['./metapoint_r50_4xb16_mp100-split1_1shot.py']

_data = dict(split=1, num_shots=5)
train_dataloader = dict(dataset=_data)
val_dataloader = dict(dataset=_data)
test_dataloader = dict(dataset=_data)
