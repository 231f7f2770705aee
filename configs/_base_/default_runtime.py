# Runtime shared by every config: scope, hooks, logging, environment.
default_scope = 'metapoint'

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', interval=10, save_best='mPCK', rule='greater',
                    max_keep_ckpts=3),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    # pictures of evaluation episodes (supports | query GT | prediction), off by default:
    # tools/test.py --show-dir DIR switches it on (docs/visualization.md)
    visualization=dict(type='CAPEVisualizationHook', enable=False, interval=50),
)

env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'),  # tools switch to gloo when CUDA is absent
)

vis_backends = [dict(type='LocalVisBackend')]
# the runner's visualizer (name and save_dir are filled in by the runner); add e.g.
# dict(type='TensorboardVisBackend') to vis_backends to get the episode pictures there too
visualizer = dict(type='CAPEVisualizer', vis_backends=vis_backends)
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=True, num_digits=6)
log_level = 'INFO'
load_from = None
resume = False
# diff_rank_seed: each rank its own random stream (dropout, workers), as the official multi-GPU
# runs had; episodes and augmentations are drawn from the run seed (tools/train.py)
randomness = dict(seed=0, diff_rank_seed=True)

# a progress bar over evaluation episodes (rank 0)
custom_hooks = [dict(type='EvalProgressBarHook')]
