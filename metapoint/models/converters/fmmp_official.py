"""Key mapping from the official FMMP (``ExtLocDetector``) state dict to :class:`FMMP`.

The predictor keeps the official sub-module names, except ``decoder_layers`` (the query mining
layers), called ``query_layers`` here.
"""
from typing import Dict

import torch

from .official_checkpoint import rename_keys

FMMP_RULES = [
    (r'backbone\.(.+)', r'backbone.\1'),
    (r'backbone_projs\.(\d+)\.0\.(weight|bias)', r'neck.projs.\1.0.\2'),
    (r'predictor\.decoder_layers\.(\d+)\.(.+)', r'predictor.query_layers.\1.\2'),
    (r'predictor\.(support_layers\.\d+\..+)', r'predictor.\1'),
    (r'predictor\.(pos_embed_proj\.layers\.\d+\.(weight|bias))', r'predictor.\1'),
    (r'predictor\.(kpt_branch\.\d+\.mlp\.\d+\.(weight|bias))', r'predictor.\1'),
    (r'predictor\.(joint_encoder_layers\.\d+\.layers\.0\..+)', r'predictor.\1'),
    (r'predictor\.(top_down_projs\.\d+\.0\.(weight|bias))', r'predictor.\1'),
]


def convert_fmmp_official(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename every official key (no key may be left unmapped); tensors are not copied."""
    return rename_keys(state, FMMP_RULES)
