from .level_projection import LevelProjectionNeck

__all__ = ['LevelProjectionNeck']
