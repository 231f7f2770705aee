"""MP-100 data: annotation parsing, episodes, the dataset, sampler, collate and transforms."""
from .annotation_parsing import AnnotationError, CategoryRecord, sanitise_bbox
from .collate import episode_collate
from .episodes import Episode, EpisodeError, draw_train_episodes, make_eval_episodes
from .mp100_dataset import ImageLoadError, MP100Dataset, build_pipeline
from .mp100_splits import MP100_SPLITS
from .samplers import EpisodeSampler
from .transforms import *  # noqa: F401,F403

__all__ = ['AnnotationError', 'CategoryRecord', 'sanitise_bbox', 'episode_collate', 'Episode',
           'EpisodeError', 'draw_train_episodes', 'make_eval_episodes', 'ImageLoadError',
           'MP100Dataset', 'build_pipeline', 'MP100_SPLITS', 'EpisodeSampler']
