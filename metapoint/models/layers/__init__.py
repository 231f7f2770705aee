"""Shared model layers: deformable attention, positional encodings, point ops, MLP heads."""
from .mlp import TokenDecodeMLP
from .ms_deform_attn import (MSDA_CUDA_AVAILABLE, MultiScaleDeformableAttention,
                             cuda_kernel_applicable, flatten_multilevel, level_start_index,
                             multi_scale_deformable_attn, multi_scale_deformable_attn_pytorch)
from .point_ops import inverse_sigmoid, sample_point_features
from .positional_encoding import SinePositionalEncoding
from .refine_decoder import RefineDecoder, RefineDecoderLayer
from .shot_fusion import visibility_weighted_shot_mean
from .similarity_proposal import SimilarityProposalGenerator

__all__ = [
    'MSDA_CUDA_AVAILABLE', 'MultiScaleDeformableAttention', 'cuda_kernel_applicable',
    'flatten_multilevel', 'level_start_index', 'multi_scale_deformable_attn',
    'multi_scale_deformable_attn_pytorch', 'inverse_sigmoid', 'sample_point_features',
    'SinePositionalEncoding', 'TokenDecodeMLP', 'visibility_weighted_shot_mean',
    'RefineDecoder', 'RefineDecoderLayer', 'SimilarityProposalGenerator'
]
