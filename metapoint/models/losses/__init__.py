from .slacked_l1 import layer_slacks, meta_point_losses, refine_losses

__all__ = ['layer_slacks', 'meta_point_losses', 'refine_losses']
