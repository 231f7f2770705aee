from .similarity_heatmap import (aux_heatmap_losses, keypoint_target_maps,
                                 pool_keypoint_features, similarity_heatmap_loss,
                                 shot_mean_per_query, similarity_peak_points,
                                 support_level_features)
from .slacked_l1 import layer_slacks, meta_point_losses, refine_losses

__all__ = ['layer_slacks', 'meta_point_losses', 'refine_losses', 'aux_heatmap_losses',
           'keypoint_target_maps', 'pool_keypoint_features', 'similarity_heatmap_loss',
           'shot_mean_per_query', 'similarity_peak_points', 'support_level_features']
