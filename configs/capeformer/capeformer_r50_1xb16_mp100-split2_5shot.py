# CapeFormer, ResNet-50, MP-100 split 2, 5-shot (train, val and test use 5 shot(s), as
# the official configs); everything else as the split-1 1-shot official recipe: the per-split
# files annotations/mp100_split2_{train,val,test}.json, categories in file order.
_base_ = ['./capeformer_r50_1xb16_mp100-split1_1shot.py']

num_shots = 5
train_dataloader = dict(
    dataset=dict(ann_file='annotations/mp100_split2_train.json', num_shots=5))
val_dataloader = dict(
    dataset=dict(ann_file='annotations/mp100_split2_val.json', num_shots=5))
test_dataloader = dict(
    dataset=dict(ann_file='annotations/mp100_split2_test.json', num_shots=5))
