"""Data structures passed between the data pipeline, the models and the metric."""
from .episode_batch import EpisodeBatch, make_episode_batch

__all__ = ['EpisodeBatch', 'make_episode_batch']
