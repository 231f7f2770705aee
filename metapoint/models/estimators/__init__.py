from .base import BaseCAPEEstimator
from .fmmp import FMMP
from .metapoint import MetaPoint
from .support_copy import SupportCopy

__all__ = ['BaseCAPEEstimator', 'FMMP', 'MetaPoint', 'SupportCopy']
