"""FMMP (CVPR'25): recurrent fine-grained, structure-aware (FGSA) keypoint feature mining."""
from typing import List, Optional, Union

import torch

from metapoint.registry import MODELS
from metapoint.structures import EpisodeBatch
from .base import BaseCAPEEstimator


@MODELS.register_module()
class FMMP(BaseCAPEEstimator):
    """FMMP estimator (docs/methods.md, FMMP).

    1. Backbone (stages 2-4) + :class:`LevelProjectionNeck` (top-down) -> 3 levels, deepest first.
    2. :class:`RecurrentFGSAPredictor` alternates support mining and query decoding; every layer
       predicts all K slots (real keypoints and padded ones, see ``KeypointPadding``).
    3. Prediction: last layer. Loss (training, :class:`FMMPCriterion`): per-layer L1 on real
       slots + ``mix_weight`` x L1 on padded slots.

    Images: one backbone call on every support and query of the batch, as the official code does
    (in training the BatchNorm statistics are shared by supports and queries). Supports are
    encoded once per episode whatever the number of queries Q; their values are projected and
    sampled once for all Q queries.

    Args:
        backbone: backbone config returning the stages the neck uses (ResNet ``out_indices``
            ``(1, 2, 3)``).
        neck: :class:`LevelProjectionNeck` config (``in_channels`` filled from the backbone).
        predictor: :class:`RecurrentFGSAPredictor` config.
        criterion: the loss, :class:`FMMPCriterion` (``mix_weight`` 0.5, the weight of the
            padded-slot L1 term).
        max_kpt_num: K, the padded slot count of the data.
        similarity_aid: None (default: the paper method) or a :class:`SimilarityAid` config, a
            CPU-budget aid that is NOT part of FMMP (docs/fmmp.md, learning check); the FMMP
            CPU recipe samples support features at the keypoints (``support_features='point'``).
            With ``init_points`` the predictor starts every keypoint at the similarity peak
            instead of the crop centre, in training and at test time.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 predictor: Optional[dict] = None,
                 criterion: Optional[dict] = None,
                 max_kpt_num: int = 70,
                 similarity_aid: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 channels_last: bool = False,
                 compile: Union[bool, dict] = False) -> None:
        criterion = dict(dict(type='FMMPCriterion'), **(criterion or {}))
        super().__init__(criterion=criterion, similarity_aid=similarity_aid,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg,
                         channels_last=channels_last, compile=compile)
        self.backbone = MODELS.build(backbone)
        neck = dict(dict(type='LevelProjectionNeck', num_levels=3, out_channels=256, top_down=True),
                    **(neck or {}))
        neck.setdefault('in_channels', self.backbone.out_channels)
        self.neck = MODELS.build(neck)
        predictor = dict(dict(type='RecurrentFGSAPredictor'), **(predictor or {}))
        predictor.setdefault('num_levels', neck['num_levels'])
        predictor.setdefault('embed_dims', neck['out_channels'])
        self.predictor = MODELS.build(predictor)
        self.max_kpt_num = max_kpt_num

    def encode_support(self, support_feats: List[torch.Tensor], batch: EpisodeBatch) -> dict:
        """The support pyramid; the predictor interleaves support mining with query decoding,
        so its support work happens inside :meth:`decode_queries` (once per episode there)."""
        return dict(maps=support_feats)

    def decode_queries(self, query_feats: List[torch.Tensor], support: dict,
                       batch: EpisodeBatch, init_points: Optional[torch.Tensor] = None) -> dict:
        """The recurrent predictor on all queries ``[B*Q, ...]`` (it mines the supports itself,
        once per episode); ``points``: list over layers of ``[B*Q, K, 2]``."""
        neighbours = batch.support_neighbour_idx
        if neighbours is None and self.predictor.side_heads > 1:
            raise KeyError('FMMP with side_heads > 1 needs the support neighbour table '
                           '(EpisodeBatch.support_neighbour_idx); add StructuralNeighbours to '
                           'the episode pipeline')
        out = self.predictor(query_feats, support['maps'], batch.support_keypoints,
                             batch.support_keypoint_weights, neighbours, init_points=init_points)
        out['query_maps'] = query_feats
        return out
