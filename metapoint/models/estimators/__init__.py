from .base import BaseCAPEEstimator
from .support_copy import SupportCopy

__all__ = ['BaseCAPEEstimator', 'SupportCopy']
