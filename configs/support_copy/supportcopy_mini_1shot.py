# SupportCopy on ../shared/data/mp100_mini (real photos; 12 test categories with 2-10 instances,
# so episodes use as many queries as a category has: insufficient_instances='reduce').
_base_ = ['./supportcopy_mp100-split1_1shot.py']

data_root = '../shared/data/mp100_mini'
_dataset = dict(data_root=data_root, ann_file='annotations/mp100_mini.json',
                data_prefix=dict(img='images'), split=None, subset='test',
                split_file='splits.json', num_episodes=20, insufficient_instances='reduce')
val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=_dataset)
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=_dataset)
