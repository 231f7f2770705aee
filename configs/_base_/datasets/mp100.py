# MP-100 episodes: unified annotation file + official split category lists
# (docs/methods.md, MP-100 protocol).
dataset_type = 'MP100Dataset'
data_root = 'data/mp100'
ann_file = 'annotations/unified_ann_file.json'
img_prefix = 'mp100_images_cc'
split = 1
num_shots = 1
max_kpt_num = 70
input_size = (256, 256)

train_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='RandomScaleRotation', scale_factor=0.15, rot_factor=15, rot_prob=0.6),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='GenerateCAPETarget', heatmap_size=(64, 64), sigma=2, with_heatmap=False),
    dict(type='PackCAPEInstance'),
]
test_pipeline = [
    dict(type='LoadImage'),
    dict(type='GetBBoxCenterScale', padding=1.25),
    dict(type='TopdownAffine', input_size=input_size),
    dict(type='GenerateCAPETarget', heatmap_size=(64, 64), sigma=2, with_heatmap=False),
    dict(type='PackCAPEInstance'),
]
episode_pipeline = [dict(type='KeypointPadding', num=max_kpt_num)]

train_dataloader = dict(
    batch_size=16,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='EpisodeSampler'),
    collate_fn=dict(type='metapoint.episode_collate'),
    dataset=dict(
        type=dataset_type, data_root=data_root, ann_file=ann_file,
        data_prefix=dict(img=img_prefix), split=split, subset='train',
        max_kpt_num=max_kpt_num, num_shots=num_shots, pipeline=train_pipeline,
        episode_pipeline=episode_pipeline, test_mode=False))
_eval_loader = dict(
    batch_size=1,  # one item = one episode: S supports + Q queries
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False, round_up=True),
    collate_fn=dict(type='metapoint.episode_collate'))
_eval_dataset = dict(
    type=dataset_type, data_root=data_root, ann_file=ann_file, data_prefix=dict(img=img_prefix),
    split=split, max_kpt_num=max_kpt_num, num_shots=num_shots, num_queries=15,
    pipeline=test_pipeline, episode_pipeline=episode_pipeline, test_mode=True)
val_dataloader = dict(_eval_loader, dataset=dict(_eval_dataset, subset='val', num_episodes=100))
test_dataloader = dict(_eval_loader, dataset=dict(_eval_dataset, subset='test', num_episodes=200))

val_evaluator = dict(type='CAPEMetric')
test_evaluator = val_evaluator
