"""MetaPoint: a config-driven codebase for category-agnostic pose estimation (CAPE) on MP-100."""
__version__ = '0.1.0'
