"""Key mapping from the official MetaPoint (``MetaPointFormer``) state dict to :class:`MetaPoint`."""
from typing import Dict

import torch

from .official_checkpoint import rename_keys

_DEC = r'(meta|ref)_decoder'
METAPOINT_RULES = [
    (r'backbone\.(.+)', r'backbone.\1'),
    (r'meta_point_embed\.weight', r'meta_embedding.weight'),
    (r'meta_embed_proj\.(.+)', r'meta_embedding_proj.\1'),
    (r'input_proj\.(\d+)\.(\d+)\.(weight|bias)', r'neck.projs.\1.\2.\3'),
    (r'skfeat_layer_proj\.(\d+)\.(weight|bias)', r'support_pooling.proj.\1.\2'),
    (r'enhance_sk_w_meta_proj\.(\d+)\.(weight|bias)', r'meta_fusion_proj.\1.\2'),
    (r'visible_head\.(\d+)\.(weight|bias)', r'visibility_head.\1.\2'),
    (r'qfeatmap_enhancer\.input_proj\.(weight|bias)', r'query_enhancer.input_proj.\1'),
    (r'qfeatmap_enhancer\.encoder\.layers\.(\d+)\.(.+)', r'query_enhancer.layers.\1.\2'),
    (_DEC + r'\.enc_layers\.(\d+)\.self_attn\.(.+)', r'\1_decoder.layers.\2.cross_attn.\3'),
    (_DEC + r'\.enc_layers\.(\d+)\.(norm1|norm2|linear1|linear2)\.(weight|bias)',
     r'\1_decoder.layers.\2.\3.\4'),
    (_DEC + r'\.point_heads\.(\d+)\.mlp\.(.+)', r'\1_decoder.layers.\2.point_head.mlp.\3'),
    (_DEC + r'\.self_att_layers\.(\d+)\.(.+)', r'\1_decoder.layers.\2.self_attn.\3'),
    (_DEC + r'\.self_att_norms\.(\d+)\.(weight|bias)', r'\1_decoder.layers.\2.self_attn_norm.\3'),
]


def convert_metapoint_official(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename every official key (no key may be left unmapped); tensors are not copied."""
    return rename_keys(state, METAPOINT_RULES)
