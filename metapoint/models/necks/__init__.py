from .input_projection import InputProjection
from .top_down_pyramid import TopDownPyramid

__all__ = ['InputProjection', 'TopDownPyramid']
