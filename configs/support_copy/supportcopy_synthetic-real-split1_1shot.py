# SupportCopy on the synthetic set rendered from the real MP-100 poses and skeletons
# (`bash scripts.sh synthetic-real`): official split-1 category lists, official episode count
# (200 episodes x 15 queries per test category).
_base_ = ['./supportcopy_synthetic-split1_1shot.py']

_dataset = dict(data_root='data/synthetic_mp100_real', num_episodes=200)
val_dataloader = dict(dataset=_dataset)
test_dataloader = dict(dataset=_dataset)
