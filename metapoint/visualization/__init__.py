"""Visualisation helpers (OpenCV; never ``mmpose.visualization``, which needs mmcv ops).

* :mod:`.keypoint_drawing`: keypoints / skeletons on one image, tiling;
* :mod:`.episode_drawing`: whole episodes in the model-input crops (predictions vs ground truth,
  pipeline outputs with padding and heatmaps);
* :class:`CAPEVisualizer`: the mmengine visualizer (registered) that draws episodes and sends
  them to the visualisation backends (used by :class:`~metapoint.engine.CAPEVisualizationHook`).
"""
from .cape_visualizer import CAPEVisualizer, publish_image
from .episode_drawing import (EpisodeView, episode_view, heatmap_overlay, padded_slots_in_use,
                              render_episode_inputs, render_prediction)
from .keypoint_drawing import (crop_box, draw_keypoints, keypoint_colors, resize_to_height,
                               tile_images)

__all__ = [
    'CAPEVisualizer', 'publish_image', 'EpisodeView', 'episode_view', 'heatmap_overlay',
    'padded_slots_in_use', 'render_episode_inputs', 'render_prediction', 'crop_box',
    'draw_keypoints', 'keypoint_colors', 'resize_to_height', 'tile_images'
]
