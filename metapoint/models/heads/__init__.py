from .support_keypoint_features import HeatmapKeypointPooling

__all__ = ['HeatmapKeypointPooling']
