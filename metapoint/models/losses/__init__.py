"""Loss criteria (registered, one per model) and the loss functions they are made of."""
from .fmmp_criterion import FMMPCriterion
from .metapoint_criterion import MetaPointCriterion
from .similarity_heatmap import keypoint_target_maps, similarity_heatmap_loss
from .slacked_l1 import layer_slacks, meta_point_losses, refine_losses

__all__ = ['FMMPCriterion', 'MetaPointCriterion', 'keypoint_target_maps',
           'similarity_heatmap_loss', 'layer_slacks', 'meta_point_losses', 'refine_losses']
