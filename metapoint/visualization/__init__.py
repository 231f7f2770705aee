"""Visualisation helpers (OpenCV; never ``mmpose.visualization``, which needs mmcv ops)."""
from .keypoint_drawing import crop_box, draw_keypoints, keypoint_colors, tile_images

__all__ = ['crop_box', 'draw_keypoints', 'keypoint_colors', 'tile_images']
