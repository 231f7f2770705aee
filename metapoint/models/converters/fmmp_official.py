"""Key mapping from the official FMMP (``ExtLocDetector``) state dict to :class:`FMMP`.

The predictor keeps the official sub-module names, except ``decoder_layers`` (the query mining
layers), called ``query_layers`` here, and the self-attention block of every mining layer
(official ``self_attn``, ``self_norm1``, ``self_linear1``, ``self_linear2``, ``self_norm2``),
one ``self_block`` module here.
"""
from typing import Dict

import torch

from .official_checkpoint import rename_keys


def _mining_layer_rules(official: str, ours: str):
    """Rules of one stack of mining layers (``predictor.<official>.<i>.*``)."""
    src, dst = rf'predictor\.{official}\.(\d+)\.', rf'predictor.{ours}.\1.'
    return [(src + r'self_attn\.(.+)', dst + r'self_block.self_attn.\2'),
            (src + r'self_(norm1|linear1|linear2|norm2)\.(weight|bias)',
             dst + r'self_block.\2.\3'),
            (src + r'(.+)', dst + r'\2')]


FMMP_RULES = [
    (r'backbone\.(.+)', r'backbone.\1'),
    (r'backbone_projs\.(\d+)\.0\.(weight|bias)', r'neck.projs.\1.0.\2'),
    *_mining_layer_rules('decoder_layers', 'query_layers'),
    *_mining_layer_rules('support_layers', 'support_layers'),
    (r'predictor\.(pos_embed_proj\.layers\.\d+\.(weight|bias))', r'predictor.\1'),
    (r'predictor\.(kpt_branch\.\d+\.mlp\.\d+\.(weight|bias))', r'predictor.\1'),
    (r'predictor\.(joint_encoder_layers\.\d+\.layers\.0\..+)', r'predictor.\1'),
    (r'predictor\.(top_down_projs\.\d+\.0\.(weight|bias))', r'predictor.\1'),
]


def convert_fmmp_official(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename every official key (no key may be left unmapped); tensors are not copied."""
    return rename_keys(state, FMMP_RULES)
