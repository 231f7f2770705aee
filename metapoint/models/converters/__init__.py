"""Official-checkpoint converters (key tables + safe loading)."""
from .capeformer_official import CAPEFORMER_RULES, convert_capeformer_official
from .fmmp_official import FMMP_RULES, convert_fmmp_official
from .metapoint_official import METAPOINT_RULES, convert_metapoint_official
from .official_checkpoint import (ConversionError, check_against_model, load_official_checkpoint,
                                  rename_keys)

__all__ = ['CAPEFORMER_RULES', 'FMMP_RULES', 'METAPOINT_RULES', 'convert_capeformer_official',
           'convert_fmmp_official', 'convert_metapoint_official',
           'ConversionError', 'check_against_model', 'load_official_checkpoint', 'rename_keys']
