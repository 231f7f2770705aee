# SupportCopy on mp100_mini (real photos; 12 test categories with 2-10 instances, so episodes use
# as many queries as a category has: insufficient_instances='reduce').
# data_root must hold annotations/mp100_mini.json, images/ and splits.json. For a copy elsewhere:
#   python tools/test.py configs/support_copy/supportcopy_mini_1shot.py \
#       --cfg-options test_dataloader.dataset.data_root=PATH/TO/mp100_mini
_base_ = ['./supportcopy_mp100-split1_1shot.py']

data_root = 'data/mp100_mini'
_dataset = dict(data_root=data_root, ann_file='annotations/mp100_mini.json',
                data_prefix=dict(img='images'), split=None, subset='test',
                split_file='splits.json', num_episodes=20, insufficient_instances='reduce')
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=_dataset)
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=_dataset)
