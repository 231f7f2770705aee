"""Loss criteria (registered, one per model) and the loss functions they are made of."""
from .capeformer_criterion import CapeFormerCriterion
from .fmmp_criterion import FMMPCriterion
from .metapoint_criterion import MetaPointCriterion
from .similarity_heatmap import keypoint_target_maps, similarity_heatmap_loss
from .slacked_l1 import layer_slacks, meta_point_losses, refine_losses

__all__ = ['CapeFormerCriterion', 'FMMPCriterion', 'MetaPointCriterion', 'keypoint_target_maps',
           'similarity_heatmap_loss', 'layer_slacks', 'meta_point_losses', 'refine_losses']
