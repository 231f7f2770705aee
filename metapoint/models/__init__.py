"""Models: data preprocessor and CAPE estimators."""
from .data_preprocessors import *  # noqa: F401,F403
from .estimators import *  # noqa: F401,F403
