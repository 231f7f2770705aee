from .base import BaseCAPEEstimator
from .metapoint import MetaPoint
from .support_copy import SupportCopy

__all__ = ['BaseCAPEEstimator', 'MetaPoint', 'SupportCopy']
