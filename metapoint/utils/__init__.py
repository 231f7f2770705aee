from .config_checks import (UnknownConfigKeyError, check_model_config, merge_options)
from .geometry import crop_to_image, crop_warp_matrix, image_to_crop
from .quiet_logging import ConsoleNoiseFilter, build_runner, is_console_noise, quiet_console
from .setup_env import (allow_mmengine_checkpoint_globals, keep_total_batch, launch_world_size,
                        register_all_modules, setup_cpu_distributed, share_episode_seed,
                        teardown_distributed)

__all__ = ['UnknownConfigKeyError', 'check_model_config', 'merge_options',
           'crop_to_image', 'crop_warp_matrix', 'image_to_crop',
           'ConsoleNoiseFilter', 'build_runner', 'is_console_noise', 'quiet_console',
           'allow_mmengine_checkpoint_globals', 'keep_total_batch', 'launch_world_size',
           'register_all_modules', 'setup_cpu_distributed', 'share_episode_seed',
           'teardown_distributed']
