from .input_projection import InputProjection

__all__ = ['InputProjection']
