from .base import BaseCAPEEstimator
from .capeformer import CapeFormer
from .fmmp import FMMP
from .metapoint import MetaPoint
from .support_copy import SupportCopy

__all__ = ['BaseCAPEEstimator', 'CapeFormer', 'FMMP', 'MetaPoint', 'SupportCopy']
