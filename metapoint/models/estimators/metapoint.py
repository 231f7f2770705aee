"""MetaPoint (CVPR'24): meta-points without support, assigned to keypoints, then refined."""
from typing import List, Optional, Union

import torch
from torch import nn

from metapoint.registry import MODELS
from metapoint.structures import EpisodeBatch
from metapoint.utils.config_checks import merge_options
from ..heads import HeatmapKeypointPooling
from ..layers.joint_encoder import JointEncoder
from ..layers.point_decoder import ProgressivePointDecoder
from ..layers.positional_encoding import SinePositionalEncoding
from ..layers.shot_fusion import visibility_weighted_shot_mean
from ..necks import LevelProjectionNeck
from ..task_modules import MetaPointAssigner, gather_by_assignment
from .base import BaseCAPEEstimator

ENHANCE_TYPES = ('off', 'add', 'cat')


def parse_enhance(spec: str):
    """'cat-qs' -> ('cat', 'qs'); 'off' -> ('off', '')."""
    kind, _, sources = spec.partition('-')
    if kind not in ENHANCE_TYPES or (kind != 'off' and (not sources or set(sources) - set('qs'))):
        raise ValueError(f"enhance_sk_w_meta must be 'off' or '{{add,cat}}-{{q,s,qs}}', "
                         f'got {spec!r}')
    return kind, sources if kind != 'off' else ''


@MODELS.register_module()
class MetaPoint(BaseCAPEEstimator):
    """MetaPoint estimator (docs/methods.md, MetaPoint).

    Pipeline per episode (B episodes, S shots, Q queries, K slots, M meta-points, L layers):

    1. Backbone + :class:`LevelProjectionNeck` (GroupNorm) -> 3 levels (8x8, 16x16, 32x32 for a
       256 input).
    2. Meta decoder: M learnable meta embeddings decoded on EVERY image (supports and queries)
       into meta-points [L, M, 2] and a visibility (2-way softmax, clamped to [0.01, 0.99]).
    3. :class:`MetaPointAssigner` matches the supports' meta-points to the support keypoints
       (once per episode) -> slot k takes meta-point m(k).
    4. Support keypoint tokens pooled from heatmaps, fused over shots, refined jointly with the
       query map (:class:`JointEncoder`), fused with the assigned query / support meta
       embeddings ('cat-qs').
    5. Refine decoder starts from the query's assigned last-layer meta-points; its last layer is
       the prediction.

    Args (grouped like the official config; see docs/metapoint.md for the official key names):
        backbone: backbone config (``TorchvisionResNet`` / ``TimmBackbone``), all 4 stages.
        meta_cfg: ``point_num`` (M), ``point_dim``, ``asm_type`` ('nbipart' | 'bipart').
        arch_cfg: ``enhance_sk_w_meta`` ('off', 'add-q', 'cat-qs', ...), ``enhance_sk_on_q``,
            ``res_layer_num`` (pyramid levels), ``skfeat_layer_num``, ``skfeat_layer_fusion``,
            ``train_gate_uses_query`` (official train/test asymmetry Q-M8, default True).
        decoder_cfg: shared decoder settings (``n_heads``, ``d_ffn``, ``n_points``, ``ref_feat``,
            ``self_att``, ``iden_pos``, ``coor_pos``, ``dropout``, ``mask_invalid_keys``).
        meta_decoder_layers / ref_decoder_layers: L of each decoder.
        enhancer_cfg: ``num_layers``, ``num_heads``, ``ffn_dims``, ``dropout``.
        criterion: the loss, :class:`MetaPointCriterion` (weights ``l1``, ``vp``, ``vn``,
            ``meta``, ``ref`` and the slack delta ``aux``; the assigner's cost uses the same).
        max_kpt_num: K, the padded slot count (order embeddings depend on it).
        similarity_aid: None (default, the paper method) or a :class:`SimilarityAid` config
            (NOT part of MetaPoint; a CPU-budget aid for backbones trained from scratch, see
            docs/metapoint.md). With its ``init_points``, the refine decoder starts (train and
            test) from the similarity peak on the gated slots instead of the assigned query
            meta-point.
    """

    def __init__(self,
                 backbone: dict,
                 meta_cfg: Optional[dict] = None,
                 arch_cfg: Optional[dict] = None,
                 decoder_cfg: Optional[dict] = None,
                 meta_decoder_layers: int = 3,
                 ref_decoder_layers: int = 3,
                 enhancer_cfg: Optional[dict] = None,
                 criterion: Optional[dict] = None,
                 max_kpt_num: int = 70,
                 embed_dims: int = 256,
                 similarity_aid: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None,
                 channels_last: bool = False,
                 compile: Union[bool, dict] = False) -> None:
        criterion = dict(dict(type='MetaPointCriterion'), **(criterion or {}))
        super().__init__(criterion=criterion, similarity_aid=similarity_aid,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg,
                         channels_last=channels_last, compile=compile)
        meta_cfg = merge_options('MetaPoint meta_cfg', dict(
            point_num=100, point_dim=256, asm_type='nbipart'), meta_cfg)
        arch_cfg = merge_options('MetaPoint arch_cfg', dict(
            enhance_sk_w_meta='cat-qs', enhance_sk_on_q=True, res_layer_num=3,
            skfeat_layer_num=1, skfeat_layer_fusion='cat', train_gate_uses_query=True), arch_cfg)
        decoder_cfg = merge_options('MetaPoint decoder_cfg', dict(
            n_heads=4, d_ffn=256, n_points=4, ref_feat=True, self_att=True, iden_pos=True,
            coor_pos=True, dropout=0.1, mask_invalid_keys=False), decoder_cfg)
        enhancer_cfg = merge_options('MetaPoint enhancer_cfg', dict(
            num_layers=3, num_heads=8, ffn_dims=2048, dropout=0.1), enhancer_cfg)
        self.max_kpt_num = max_kpt_num
        self.train_gate_uses_query = arch_cfg['train_gate_uses_query']
        if arch_cfg['skfeat_layer_num'] > arch_cfg['res_layer_num']:
            raise ValueError('skfeat_layer_num cannot exceed res_layer_num')
        if meta_cfg['asm_type'] == 'nbipart' and meta_cfg['point_num'] < max_kpt_num:
            raise ValueError(f"asm_type 'nbipart' assigns all {max_kpt_num} slots: point_num "
                             f"({meta_cfg['point_num']}) must be >= max_kpt_num")

        self.backbone = MODELS.build(backbone)
        self.neck = LevelProjectionNeck(self.backbone.out_channels, arch_cfg['res_layer_num'],
                                        embed_dims, norm='gn')
        pe = SinePositionalEncoding(num_feats=embed_dims // 2, normalize=True)
        self.meta_embedding = nn.Embedding(meta_cfg['point_num'], meta_cfg['point_dim'])
        self.meta_embedding_proj = nn.Sequential()
        if meta_cfg['point_dim'] != embed_dims:
            self.meta_embedding_proj.add_module('l1', nn.Linear(meta_cfg['point_dim'], embed_dims))
            self.meta_embedding_proj.add_module('a1', nn.ReLU())

        def decoder(num_layers):
            return ProgressivePointDecoder(
                pe, num_layers=num_layers, embed_dims=embed_dims,
                num_heads=decoder_cfg['n_heads'], num_levels=arch_cfg['res_layer_num'],
                num_points=decoder_cfg['n_points'], ffn_dims=decoder_cfg['d_ffn'],
                dropout=decoder_cfg['dropout'], self_attn=decoder_cfg['self_att'],
                ref_feat=decoder_cfg['ref_feat'], order_pos=decoder_cfg['iden_pos'],
                coord_pos=decoder_cfg['coor_pos'],
                mask_invalid_keys=decoder_cfg['mask_invalid_keys'])

        self.meta_decoder = decoder(meta_decoder_layers)
        self.ref_decoder = decoder(ref_decoder_layers)
        self.visibility_head = nn.Sequential(nn.ReLU(), nn.Linear(embed_dims, embed_dims),
                                             nn.ReLU(), nn.Linear(embed_dims, 2))
        self.support_pooling = HeatmapKeypointPooling(embed_dims, arch_cfg['skfeat_layer_num'],
                                                      arch_cfg['skfeat_layer_fusion'])
        self.query_enhancer = JointEncoder(
            pe, embed_dims, enhancer_cfg['num_heads'], enhancer_cfg['num_layers'],
            enhancer_cfg['ffn_dims'], enhancer_cfg['dropout']) \
            if arch_cfg['enhance_sk_on_q'] else None
        self.enhance_type, self.enhance_sources = parse_enhance(arch_cfg['enhance_sk_w_meta'])
        if self.enhance_type == 'cat':
            width = embed_dims * (1 + len(self.enhance_sources))
            self.meta_fusion_proj = nn.Sequential(nn.Linear(width, embed_dims), nn.ReLU(),
                                                  nn.Linear(embed_dims, embed_dims), nn.ReLU())
        c = self.criterion
        self.assigner = MetaPointAssigner(c.l1, c.vp, c.vn, c.aux,
                                          mode=meta_cfg['asm_type'])

    # ------------------------------------------------------------------ template steps
    image_call_per_slot = True  # official: one backbone call per shot / query in training

    def decode_meta_points(self, maps: List[torch.Tensor]):
        """Meta decoder on N images -> embeddings [N, M, C], points [N, L, M, 2], vis [N, M]."""
        n = maps[0].shape[0]
        embed = self.meta_embedding_proj(self.meta_embedding.weight)[None].expand(n, -1, -1)
        embed, points = self.meta_decoder(embed, maps)
        vis = torch.softmax(self.visibility_head(embed), -1)[..., 1].clamp(0.01, 0.99)
        return embed, points, vis

    def encode_support(self, support_feats: List[torch.Tensor], batch: EpisodeBatch) -> dict:
        """Once per episode: support meta-points, pooled keypoint features fused over shots,
        co-visibility and the meta-point -> keypoint assignment (all ``[B, ...]``)."""
        b, s, k = batch.num_episodes, batch.num_shots, batch.num_slots
        s_kpts, s_w = batch.support_keypoints, batch.support_keypoint_weights  # [B, S, K(, 2)]
        s_embed, s_points, s_vis = self.decode_meta_points(support_feats)
        m = s_embed.shape[1]
        s_embed = s_embed.view(b, s, m, -1)
        s_points = s_points.view(b, s, *s_points.shape[1:])
        s_vis = s_vis.view(b, s, m)
        sk_feats = self.support_pooling(support_feats, batch.support_heatmaps.flatten(0, 1),
                                        s_w.flatten(0, 1)).view(b, s, k, -1)
        sk_feats = visibility_weighted_shot_mean(sk_feats, s_w > 0, floor=1)  # [B, K, C]
        s_covis = s_w.min(1).values > 0  # [B, K] support co-visible
        meta_to_kp, assigned = self.assigner(s_points, s_vis, s_kpts, s_w,
                                             assign_mask=s_covis)
        return dict(meta_embed=s_embed, meta_points=s_points, meta_visible=s_vis,
                    keypoint_feats=sk_feats, covisible=s_covis, meta_to_kp=meta_to_kp,
                    assigned=assigned)

    def decode_queries(self, query_feats: List[torch.Tensor], support: dict,
                       batch: EpisodeBatch, init_points: Optional[torch.Tensor] = None) -> dict:
        """Queries batched ``[B*Q, ...]``: query meta-points, support tokens refined with the
        query map and fused with the assigned meta embeddings, then the refine decoder from the
        assigned query meta-points (or the similarity aid's ``init_points`` on gated slots).
        Returns every intermediate needed by the criterion, the predictions and the tests."""
        q_maps = query_feats
        q_embed, q_points, q_vis = self.decode_meta_points(q_maps)  # [B*Q, ...]
        rep = batch.per_query
        s_covis = support['covisible']
        if self.training and self.train_gate_uses_query:
            gate = rep(s_covis) & (batch.flat_queries(batch.query_keypoint_weights) > 0)
        else:
            gate = rep(s_covis)
        m2k, assigned_q = rep(support['meta_to_kp']), rep(support['assigned'])

        sk_q = rep(support['keypoint_feats'])
        sk_mask = ~rep(s_covis)
        if self.query_enhancer is not None:
            sk_q = self.query_enhancer(q_maps[0], sk_q, sk_mask)['keypoint_tokens']
        parts = [sk_q]
        if 'q' in self.enhance_sources:
            parts.append(gather_by_assignment(q_embed, m2k, gate))
        if 's' in self.enhance_sources:
            parts.append(gather_by_assignment(rep(support['meta_embed'].mean(1)), m2k, gate))
        if self.enhance_type == 'cat':
            tokens = self.meta_fusion_proj(torch.cat(parts, -1))
        else:
            tokens = torch.stack(parts).sum(0)
        ref_init = gather_by_assignment(q_points[:, -1], m2k, gate)
        if init_points is not None:
            ref_init = torch.where(gate[..., None], init_points, ref_init)
        valid = ~sk_mask
        tokens = tokens * valid[..., None].to(tokens.dtype)
        ref_embed, ref_points = self.ref_decoder(tokens, q_maps, init_points=ref_init,
                                                 valid=valid)
        return dict(points=list(ref_points.unbind(1)), meta_to_kp=m2k, assigned=assigned_q,
                    gate=gate, support_covisible=rep(s_covis),
                    support_meta_points=support['meta_points'],
                    support_meta_visible=support['meta_visible'],
                    support_meta_embed=support['meta_embed'], query_meta_points=q_points,
                    query_meta_visible=q_vis, query_meta_embed=q_embed, support_tokens=sk_q,
                    ref_tokens=tokens, ref_init_points=ref_init, ref_embed=ref_embed,
                    ref_points=ref_points, query_maps=q_maps)

    def output_points(self, outputs: dict, batch: EpisodeBatch) -> torch.Tensor:
        """Last refine layer ``[B*Q, K, 2]``; slots the supports do not all see are not
        predicted (the metric masks them) and sit at the crop centre, as officially."""
        pts = outputs['ref_points'][:, -1]
        return torch.where(outputs['support_covisible'][..., None], pts,
                           torch.full_like(pts, 0.5))
