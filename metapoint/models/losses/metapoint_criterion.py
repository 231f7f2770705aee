"""MetaPoint's loss: slacked L1 on meta-points and refined points, meta-point visibility."""
from typing import Dict

import torch
from torch import nn

from metapoint.registry import MODELS
from .slacked_l1 import meta_point_losses, refine_losses


@MODELS.register_module()
class MetaPointCriterion(nn.Module):
    """``loss_m{l}``, ``loss_vp``, ``loss_vn`` (meta decoder) and ``loss_r{l}`` (refine decoder).

    Args (the official ``loss_cfg`` names; the assigner's matching cost uses the same weights):
        l1: weight of every L1 term; vp / vn: visible / invisible meta-point terms;
        meta: factor of all meta-point terms; ref: factor of the refine terms;
        aux: the slack step delta (layer l of L gets ``(L - 1 - l) * aux``).
    Inputs: the outputs of :meth:`MetaPoint.decode_queries` and the batch.
    """

    def __init__(self, l1: float = 1.0, vp: float = 0.1, vn: float = 0.005, meta: float = 0.1,
                 ref: float = 1.0, aux: float = 0.1) -> None:
        super().__init__()
        self.l1, self.vp, self.vn, self.meta, self.ref, self.aux = l1, vp, vn, meta, ref, aux

    def forward(self, outputs: dict, batch) -> Dict[str, torch.Tensor]:
        q_kpts = batch.flat_queries(batch.query_keypoints)
        q_w = batch.flat_queries(batch.query_keypoint_weights)
        covis = outputs['support_covisible'] & (q_w > 0)
        losses = meta_point_losses(outputs['query_meta_points'], outputs['query_meta_visible'],
                                   outputs['meta_to_kp'], outputs['assigned'], q_kpts, q_w,
                                   l1_weight=self.l1, vp_weight=self.vp, vn_weight=self.vn,
                                   meta_weight=self.meta, slack=self.aux)
        losses.update(refine_losses(outputs['ref_points'], q_kpts, covis, l1_weight=self.l1,
                                    ref_weight=self.ref, slack=self.aux))
        return losses
