"""Official-checkpoint converters (key tables + safe loading)."""
from .metapoint_official import METAPOINT_RULES, convert_metapoint_official
from .official_checkpoint import (ConversionError, check_against_model, load_official_checkpoint,
                                  rename_keys)

__all__ = ['METAPOINT_RULES', 'convert_metapoint_official', 'ConversionError',
           'check_against_model', 'load_official_checkpoint', 'rename_keys']
