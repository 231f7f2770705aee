"""Key mapping from the official CapeFormer (``TransformerPoseTwoStage``) state dict to
:class:`~metapoint.models.CapeFormer`.

The official detector assigns ONE ResNet to both ``encoder_sample`` and ``encoder_query``
(``share_backbone=True``, the only setting of the official configs), so its state dict lists the
backbone twice, ``encoder_sample.*`` first. ``load_state_dict`` on the official model writes
``encoder_sample.*`` and then ``encoder_query.*`` into the same tensors: the ``encoder_query.*``
entries are the effective weights. The converter takes the backbone from them and drops the
``encoder_sample.*`` copy without comparing the two (they are equal in a saved checkpoint; the
rule-built test fixtures draw them independently on purpose). Checkpoints of a model built with
``share_backbone=False`` (two different backbones) cannot be represented and are not supported.

Official head names are kept where they mean the same thing; the renamed ones:
``keypoint_head.query_proj`` (projects SUPPORT keypoint features) -> ``support_proj``,
``support_embedding`` -> ``order_embedding``, ``input_proj`` and
``transformer.encoder.layers`` -> ``encoder.input_proj`` and ``encoder.layers`` (the shared
:class:`JointEncoder`), decoder layer ``multihead_attn`` / ``choker`` -> ``cross_attn`` /
``cross_attn_proj`` and ``norm1`` / ``norm2`` / ``norm3`` -> ``self_attn_norm`` / ``norm1`` /
``norm2`` (the shared post-norm tail), ``kpt_branch`` -> ``decoder.point_heads``.
"""
from typing import Dict

import torch

from .official_checkpoint import rename_keys

_HEAD = r'keypoint_head\.'
_DEC = _HEAD + r'transformer\.decoder\.'
CAPEFORMER_RULES = [
    (r'encoder_query\.(.+)', r'backbone.\1'),
    (_HEAD + r'input_proj\.(weight|bias)', r'encoder.input_proj.\1'),
    (_HEAD + r'query_proj\.(weight|bias)', r'support_proj.\1'),
    (_HEAD + r'support_embedding\.weight', r'order_embedding.weight'),
    (_HEAD + r'kpt_branch\.(\d+)\.mlp\.(\d+)\.(weight|bias)', r'decoder.point_heads.\1.mlp.\2.\3'),
    (_HEAD + r'transformer\.encoder\.layers\.(\d+)\.(.+)', r'encoder.layers.\1.\2'),
    (_HEAD + r'transformer\.proposal_generator\.(.+)', r'proposal_generator.\1'),
    (_DEC + r'layers\.(\d+)\.multihead_attn\.(.+)', r'decoder.layers.\1.cross_attn.\2'),
    (_DEC + r'layers\.(\d+)\.choker\.(weight|bias)', r'decoder.layers.\1.cross_attn_proj.\2'),
    (_DEC + r'layers\.(\d+)\.norm1\.(weight|bias)', r'decoder.layers.\1.self_attn_norm.\2'),
    (_DEC + r'layers\.(\d+)\.norm2\.(weight|bias)', r'decoder.layers.\1.norm1.\2'),
    (_DEC + r'layers\.(\d+)\.norm3\.(weight|bias)', r'decoder.layers.\1.norm2.\2'),
    (_DEC + r'layers\.(\d+)\.(self_attn\..+|linear\d\.(weight|bias))', r'decoder.layers.\1.\2'),
    (_DEC + r'(norm\.(weight|bias)|ref_point_head\..+)', r'decoder.\1'),
]
#: the duplicate backbone entries (see the module doc)
CAPEFORMER_DROP = [r'encoder_sample\..+']


def convert_capeformer_official(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Rename every official key (no key may be left unmapped); the ``encoder_sample.*``
    duplicate of the backbone is dropped, ``encoder_query.*`` kept. Tensors are not copied."""
    return rename_keys(state, CAPEFORMER_RULES, drop=CAPEFORMER_DROP)
