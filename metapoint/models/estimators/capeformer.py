"""CapeFormer (CVPR'23): support keypoint tokens matched to the query map, then refined."""
from typing import List, Optional, Union

import torch
from torch import nn

from metapoint.registry import MODELS
from metapoint.structures import EpisodeBatch
from metapoint.utils.config_checks import merge_options
from ..layers.joint_encoder import JointEncoder
from ..layers.keypoint_pooling import heatmap_pool
from ..layers.positional_encoding import SinePositionalEncoding
from ..layers.refine_decoder import RefineDecoder
from ..layers.shot_fusion import visibility_weighted_shot_mean
from ..layers.similarity_proposal import SimilarityProposalGenerator
from .base import BaseCAPEEstimator

ORDER_EMBEDDINGS = ('fixed', 'learned')


@MODELS.register_module()
class CapeFormer(BaseCAPEEstimator):
    """CapeFormer estimator (docs/methods.md, CapeFormer; official ``TransformerPoseTwoStage`` +
    ``TwoStageHead``).

    Shapes: B episodes, S shots, Q queries, K slots (``max_kpt_num``), C = ``embed_dims``,
    h x w the C5 grid (8 x 8 for 256 input), L decoder layers; N = B*Q. Points are normalised
    crop ``(x, y)``.

    1. Backbone: one C5 map per image (``[.., 2048, h, w]``; the deepest returned level is used).
       Official: one backbone call per support shot and one for the queries (BatchNorm
       statistics per call in training), shared weights.
    2. Support (once per episode): raw C5 heatmap-pooled per keypoint (:func:`heatmap_pool`),
       averaged over the shots (:func:`visibility_weighted_shot_mean`), times the support mask
       ``m_k = prod_s w^s_k`` (co-visibility, CF2), then ``support_proj`` (Linear 2048 -> C):
       tokens ``[B, K, C]`` (masked slots hold the bias).
    3. Queries (all N at once): :class:`JointEncoder` (Conv1x1 2048 -> C of the query C5, then
       joint self-attention with positions added to every layer's input) over
       ``[map tokens (h*w); support tokens (K)]`` with positions ``[map PE; order PE]``, masked
       slots ignored as keys.
    4. :class:`SimilarityProposalGenerator`: similarity map and global / local soft-argmax
       proposals.
    5. :class:`RefineDecoder` from the local proposal; prediction = its last layer's reported
       points.

    Args:
        backbone: backbone config (``TorchvisionResNet`` depth 50, ``out_indices=(3,)``).
        embed_dims: C.
        encoder_cfg: ``num_layers``, ``num_heads``, ``ffn_dims``, ``dropout``.
        decoder_cfg: ``num_layers``, ``num_heads``, ``ffn_dims``, ``dropout``.
        proposal_cfg: ``dynamic_dims`` (hidden width of the dynamic projection), ``window``
            (local soft-argmax window side).
        order_embedding: ``'fixed'`` (sine order PE of slots 1..K; depends on K) or
            ``'learned'`` (``nn.Embedding(max_kpt_num, C)``).
        criterion: the loss, :class:`CapeFormerCriterion` (``heatmap_weight`` 2.0,
            ``proposal_weight`` 1.0, ``layer_weight`` 1.0).
        max_kpt_num: K, the padded slot count (official 100).
        similarity_aid: None (the paper method) or a :class:`SimilarityAid` config (not part of
            CapeFormer); with its ``init_points`` the decoder starts from them on the support
            co-visible slots instead of the local proposal.
    Init: xavier-uniform (bias 0) on every head weight with >= 2 dims, the learned order
    embedding included, and zero last layers of the coordinate heads, as the official
    ``init_weights``; the backbone keeps its own (pretrained) weights.
    """

    image_call_per_slot = True  # official: one backbone call per support shot and per query

    def __init__(self,
                 backbone: dict,
                 embed_dims: int = 256,
                 encoder_cfg: Optional[dict] = None,
                 decoder_cfg: Optional[dict] = None,
                 proposal_cfg: Optional[dict] = None,
                 order_embedding: str = 'fixed',
                 criterion: Optional[dict] = None,
                 max_kpt_num: int = 100,
                 similarity_aid: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 channels_last: bool = False,
                 compile: Union[bool, dict] = False) -> None:
        criterion = dict(dict(type='CapeFormerCriterion'), **(criterion or {}))
        super().__init__(criterion=criterion, similarity_aid=similarity_aid,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg,
                         channels_last=channels_last, compile=compile)
        layer_defaults = dict(num_layers=3, num_heads=8, ffn_dims=2048, dropout=0.1)
        encoder_cfg = merge_options('CapeFormer encoder_cfg', layer_defaults, encoder_cfg)
        decoder_cfg = merge_options('CapeFormer decoder_cfg', layer_defaults, decoder_cfg)
        proposal_cfg = merge_options('CapeFormer proposal_cfg',
                                     dict(dynamic_dims=128, window=3), proposal_cfg)
        if order_embedding not in ORDER_EMBEDDINGS:
            raise ValueError(f'CapeFormer order_embedding must be one of {ORDER_EMBEDDINGS}, '
                             f'got {order_embedding!r}')
        if embed_dims % 2:
            raise ValueError(f'CapeFormer embed_dims must be even (sine encodings), got '
                             f'{embed_dims}')
        self.max_kpt_num = max_kpt_num
        self.backbone = MODELS.build(backbone)
        in_channels = self.backbone.out_channels[-1]
        self.pe = SinePositionalEncoding(num_feats=embed_dims // 2, normalize=True)
        self.encoder = JointEncoder(self.pe, embed_dims, in_channels=in_channels, **encoder_cfg)
        self.support_proj = nn.Linear(in_channels, embed_dims)
        self.order_embedding = nn.Embedding(max_kpt_num, embed_dims) \
            if order_embedding == 'learned' else None
        self.proposal_generator = SimilarityProposalGenerator(embed_dims, **proposal_cfg)
        self.decoder = RefineDecoder(self.pe, **decoder_cfg, embed_dims=embed_dims)
        self.init_head_weights()

    @torch.no_grad()
    def init_head_weights(self) -> None:
        """Official head init: xavier-uniform weight and zero bias for every module (backbone
        excepted) with a >= 2-D ``weight`` (attention in-projections keep PyTorch's xavier init),
        then zero last layers of the coordinate heads (each layer starts where the previous
        one ended)."""
        for name, m in self.named_modules():
            weight = getattr(m, 'weight', None)
            if name.startswith('backbone') or not isinstance(weight, torch.Tensor) \
                    or weight.dim() < 2:
                continue
            nn.init.xavier_uniform_(weight)
            if getattr(m, 'bias', None) is not None:
                nn.init.zeros_(m.bias)
        for head in self.decoder.point_heads:
            nn.init.zeros_(head.mlp[-1].weight)
            nn.init.zeros_(head.mlp[-1].bias)

    # ------------------------------------------------------------------ template steps
    def order_pe(self, num_slots: int, batch: int, device) -> Optional[torch.Tensor]:
        """Order embedding of the K slots ``[batch, K, C]``: learned, or None for the fixed
        sine order PE (the encoder's default)."""
        if self.order_embedding is None:
            return None
        return self.order_embedding.weight[:num_slots][None].expand(batch, -1, -1)

    def encode_support(self, support_feats: List[torch.Tensor], batch: EpisodeBatch) -> dict:
        """Once per episode: ``pooled`` ``[B, K, 2048]`` (shot mean of the heatmap-pooled C5
        times the mask), ``tokens`` ``[B, K, C]``, ``mask`` ``[B, K]`` float (product of the
        shots' target weights)."""
        if batch.support_heatmaps is None:
            raise KeyError('CapeFormer pools support keypoint features with the support '
                           'heatmaps, but EpisodeBatch.support_heatmaps is None: add '
                           'GenerateCAPETarget (with_heatmap=True) to the pipeline')
        b, s, k = batch.support_keypoint_weights.shape
        weights = batch.support_keypoint_weights
        pooled = heatmap_pool(support_feats[-1], batch.support_heatmaps.flatten(0, 1))
        mask = weights.prod(1).to(pooled.dtype)  # [B, K]
        # official: the plain shot mean times the mask; with 0/1 weights the visibility-weighted
        # mean is the same wherever the mask is 1
        pooled = visibility_weighted_shot_mean(pooled.view(b, s, k, -1), weights > 0, floor=1) \
            * mask[..., None]
        return dict(pooled=pooled, tokens=self.support_proj(pooled), mask=mask)

    def decode_queries(self, query_feats: List[torch.Tensor], support: dict,
                       batch: EpisodeBatch, init_points: Optional[torch.Tensor] = None) -> dict:
        """All queries ``[N = B*Q, ...]``: joint encoder, proposals, refine decoder.

        Returns ``points`` (list over layers of ``[N, K, 2]``, reported predictions),
        ``ref_points`` / ``delta_ref`` / ``delta_out`` ``[N, L, K, 2]``, ``decoder_layer_out``
        ``[N, L, K, C]``, ``proposals_local`` / ``proposals_global`` ``[N, K, 2]``,
        ``similarity_map`` ``[N, K, h, w]``, ``encoder_layer_out`` ``[N, L_enc, h*w + K, C]``
        (map tokens first), ``query_feat_proj`` ``[N, C, h, w]``, ``support_tokens`` ``[N, K, C]``
        (encoder input), ``support_pooled`` ``[N, K, 2048]``, ``support_mask`` ``[N, K]`` float,
        ``support_covisible`` ``[N, K]`` bool, ``order_pe`` ``[N, K, C]``, ``map_pe``
        ``[N, h*w, C]`` and ``query_maps`` (the backbone levels).
        """
        rep = batch.per_query
        mask = rep(support['mask'])
        covisible = mask > 0
        tokens = rep(support['tokens'])
        n, k = tokens.shape[:2]
        enc = self.encoder(query_feats[-1], tokens, ~covisible,
                           order_pos=self.order_pe(k, n, tokens.device))
        memory, refined = enc['map_tokens'], enc['keypoint_tokens']
        feat, map_pe, order_pe = enc['projected_map'], enc['map_pos'], enc['order_pos']
        proposals = self.proposal_generator(memory, refined, feat.shape[-2:])
        start = proposals['proposals_local']
        if init_points is not None:
            start = torch.where(covisible[..., None], init_points.to(start.dtype), start)
        dec = self.decoder(refined, memory, map_pe, order_pe, start, ~covisible)
        return dict(points=dec['points'], ref_points=dec['ref_points'],
                    delta_ref=dec['delta_ref'], delta_out=dec['delta_out'],
                    decoder_layer_out=dec['layer_out'],
                    proposals_local=proposals['proposals_local'],
                    proposals_global=proposals['proposals_global'],
                    similarity_map=proposals['similarity'],
                    encoder_layer_out=enc['layer_outputs'], query_feat_proj=feat,
                    support_tokens=tokens, support_pooled=rep(support['pooled']),
                    support_mask=mask, support_covisible=covisible, order_pe=order_pe,
                    map_pe=map_pe, query_maps=query_feats)
