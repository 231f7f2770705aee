"""CAPE evaluation: the MP-100 PCK protocol (functional numpy API) and the mmengine metric."""
from .functional import *  # noqa: F401,F403
from .functional import __all__ as _functional_all
from .metrics import CAPEMetric, format_pck_table

__all__ = ['CAPEMetric', 'format_pck_table'] + list(_functional_all)
