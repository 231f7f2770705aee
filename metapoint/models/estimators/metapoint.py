"""MetaPoint (CVPR'24): meta-points without support, assigned to keypoints, then refined."""
from typing import Dict, List, Optional

import torch
from torch import nn

from metapoint.registry import MODELS
from metapoint.utils.config_checks import merge_options
from ..heads import HeatmapKeypointPooling
from ..layers.joint_encoder import QueryMapEnhancer
from ..layers.point_decoder import ProgressivePointDecoder
from ..layers.positional_encoding import SinePositionalEncoding
from ..layers.shot_fusion import visibility_weighted_shot_mean
from ..losses import (aux_heatmap_losses, meta_point_losses, refine_losses,
                      similarity_peak_points, support_level_features)
from ..necks import InputProjection
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

    1. Backbone + :class:`InputProjection` -> 3 levels (8x8, 16x16, 32x32 for 256 input).
    2. Meta decoder: M learnable meta embeddings decoded on EVERY image (supports and queries)
       into meta-points [L, M, 2] and a visibility (2-way softmax, clamped to [0.01, 0.99]).
    3. :class:`MetaPointAssigner` matches the supports' meta-points to the support keypoints
       (once per episode) -> slot k takes meta-point m(k).
    4. Support keypoint tokens pooled from heatmaps, fused over shots, refined jointly with the
       query map (:class:`QueryMapEnhancer`), fused with the assigned query / support meta
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
        loss_cfg: ``l1``, ``vp``, ``vn``, ``meta``, ``ref``, ``aux`` (the slack delta).
        max_kpt_num: K, the padded slot count (order embeddings depend on it).
        aux_heatmap_cfg: None (default, the paper method) or a dict enabling the optional
            auxiliary similarity-heatmap loss (NOT part of MetaPoint; a CPU-budget aid for
            backbones trained from scratch, see docs/metapoint.md): ``levels`` (indices into
            the deepest-first pyramid, default ``(-1,)``, the finest), ``temperature`` (0.1),
            ``sigma`` (target Gaussian width in cells of each level, 1.0), ``weight`` (1.0).
            Adds ``loss_sim{i}`` in training; no parameters, predictions are unchanged unless
            ``init_refine`` (False) is set: then the refine decoder starts (train and test)
            from the peak of the similarity map of ``levels[0]`` (local soft-argmax within
            ``init_radius`` cells, default 1) instead of the assigned query meta-point.
    """

    def __init__(self,
                 backbone: dict,
                 meta_cfg: Optional[dict] = None,
                 arch_cfg: Optional[dict] = None,
                 decoder_cfg: Optional[dict] = None,
                 meta_decoder_layers: int = 3,
                 ref_decoder_layers: int = 3,
                 enhancer_cfg: Optional[dict] = None,
                 loss_cfg: Optional[dict] = None,
                 max_kpt_num: int = 70,
                 embed_dims: int = 256,
                 aux_heatmap_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
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
        self.loss_cfg = merge_options('MetaPoint loss_cfg', dict(
            l1=1.0, vp=0.1, vn=0.005, meta=0.1, ref=1.0, aux=0.1), loss_cfg)
        self.max_kpt_num = max_kpt_num
        self.aux_heatmap_cfg = None
        if aux_heatmap_cfg is not None:
            self.aux_heatmap_cfg = merge_options('MetaPoint aux_heatmap_cfg', dict(
                levels=(-1,), temperature=0.1, sigma=1.0, weight=1.0, init_refine=False,
                init_radius=1), aux_heatmap_cfg)
            for lvl in self.aux_heatmap_cfg['levels']:
                if not -arch_cfg['res_layer_num'] <= lvl < arch_cfg['res_layer_num']:
                    raise ValueError(f'aux_heatmap_cfg level {lvl} outside the '
                                     f"{arch_cfg['res_layer_num']} pyramid levels")
        self.train_gate_uses_query = arch_cfg['train_gate_uses_query']
        if arch_cfg['skfeat_layer_num'] > arch_cfg['res_layer_num']:
            raise ValueError('skfeat_layer_num cannot exceed res_layer_num')
        if meta_cfg['asm_type'] == 'nbipart' and meta_cfg['point_num'] < max_kpt_num:
            raise ValueError(f"asm_type 'nbipart' assigns all {max_kpt_num} slots: point_num "
                             f"({meta_cfg['point_num']}) must be >= max_kpt_num")

        self.backbone = MODELS.build(backbone)
        self.input_projs = InputProjection(self.backbone.out_channels,
                                           arch_cfg['res_layer_num'], embed_dims)
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
        self.query_enhancer = QueryMapEnhancer(
            pe, embed_dims, enhancer_cfg['num_heads'], enhancer_cfg['num_layers'],
            enhancer_cfg['ffn_dims'], enhancer_cfg['dropout']) \
            if arch_cfg['enhance_sk_on_q'] else None
        self.enhance_type, self.enhance_sources = parse_enhance(arch_cfg['enhance_sk_w_meta'])
        if self.enhance_type == 'cat':
            width = embed_dims * (1 + len(self.enhance_sources))
            self.meta_fusion_proj = nn.Sequential(nn.Linear(width, embed_dims), nn.ReLU(),
                                                  nn.Linear(embed_dims, embed_dims), nn.ReLU())
        lc = self.loss_cfg
        self.assigner = MetaPointAssigner(lc['l1'], lc['vp'], lc['vn'], lc['aux'],
                                          mode=meta_cfg['asm_type'])

    # ------------------------------------------------------------------ building blocks
    def extract_maps(self, imgs: torch.Tensor) -> List[torch.Tensor]:
        """imgs [B, N, 3, H, W] -> levels [B*N, C, H_l, W_l] (image-major order).

        In training every image slot (shot / query) is its own backbone call of batch B, so
        BatchNorm statistics are per call as in the official code; at test time (running stats)
        all images go through in one call.
        """
        b, n = imgs.shape[:2]
        if self.training and n > 1:
            per_slot = [self.input_projs(self.backbone(imgs[:, i])) for i in range(n)]
            return [torch.stack([lv[i] for lv in per_slot], 1).flatten(0, 1)
                    for i in range(len(per_slot[0]))]
        return self.input_projs(self.backbone(imgs.flatten(0, 1)))

    def decode_meta_points(self, maps: List[torch.Tensor]):
        """Meta decoder on N images -> embeddings [N, M, C], points [N, L, M, 2], vis [N, M]."""
        n = maps[0].shape[0]
        embed = self.meta_embedding_proj(self.meta_embedding.weight)[None].expand(n, -1, -1)
        embed, points = self.meta_decoder(embed, maps)
        vis = torch.softmax(self.visibility_head(embed), -1)[..., 1].clamp(0.01, 0.99)
        return embed, points, vis

    def forward_episode(self, inputs: Dict[str, torch.Tensor], data_samples: dict) -> dict:
        """Run the model; returns every intermediate needed for losses, predictions and tests."""
        s_imgs, q_imgs = inputs['support_imgs'], inputs['query_imgs']
        b, s = s_imgs.shape[:2]
        q = q_imgs.shape[1]
        s_kpts = data_samples['support_keypoints']  # [B, S, K, 2]
        s_w = data_samples['support_keypoint_weights']  # [B, S, K]
        k = s_kpts.shape[2]
        if k != self.max_kpt_num:
            raise ValueError(f'MetaPoint built for max_kpt_num={self.max_kpt_num} got {k} slots')

        # supports: once per episode
        s_maps = self.extract_maps(s_imgs)
        s_embed, s_points, s_vis = self.decode_meta_points(s_maps)
        m = s_embed.shape[1]
        s_embed = s_embed.view(b, s, m, -1)
        s_points = s_points.view(b, s, *s_points.shape[1:])
        s_vis = s_vis.view(b, s, m)
        sk_feats = self.support_pooling([lv for lv in s_maps],
                                        data_samples['support_heatmaps'].flatten(0, 1),
                                        s_w.flatten(0, 1)).view(b, s, k, -1)
        sk_feats = visibility_weighted_shot_mean(sk_feats, s_w > 0, floor=1)  # [B, K, C]
        s_covis = s_w.min(1).values > 0  # [B, K] support co-visible

        # queries: batched; support-side tensors repeated per query
        q_maps = self.extract_maps(q_imgs)
        q_embed, q_points, q_vis = self.decode_meta_points(q_maps)  # [B*Q, ...]
        q_w = data_samples.get('query_keypoint_weights')
        rep = (lambda t: t.repeat_interleave(q, 0))
        if self.training and self.train_gate_uses_query:
            gate = rep(s_covis) & (q_w.flatten(0, 1) > 0)
        else:
            gate = rep(s_covis)
        meta_to_kp, assigned = self.assigner(s_points, s_vis, s_kpts, s_w,
                                             assign_mask=s_covis)
        m2k, assigned_q = rep(meta_to_kp), rep(assigned)

        sk_q = rep(sk_feats)
        sk_mask = ~rep(s_covis)
        if self.query_enhancer is not None:
            sk_q = self.query_enhancer(q_maps[0], sk_q, sk_mask)[0]
        parts = [sk_q]
        if 'q' in self.enhance_sources:
            parts.append(gather_by_assignment(q_embed, m2k, gate))
        if 's' in self.enhance_sources:
            parts.append(gather_by_assignment(rep(s_embed.mean(1)), m2k, gate))
        if self.enhance_type == 'cat':
            tokens = self.meta_fusion_proj(torch.cat(parts, -1))
        else:
            tokens = torch.stack(parts).sum(0)
        ref_init = gather_by_assignment(q_points[:, -1], m2k, gate)
        if self.aux_heatmap_cfg is not None and self.aux_heatmap_cfg['init_refine']:
            ac = self.aux_heatmap_cfg
            lvl = ac['levels'][0]
            peaks = similarity_peak_points(
                support_level_features(s_maps[lvl], data_samples['support_heatmaps'], s_w, q),
                q_maps[lvl], temperature=ac['temperature'], radius=ac['init_radius'])
            ref_init = torch.where(gate[..., None], peaks, ref_init)
        valid = ~sk_mask
        tokens = tokens * valid[..., None].to(tokens.dtype)
        ref_embed, ref_points = self.ref_decoder(tokens, q_maps, init_points=ref_init,
                                                 valid=valid)
        return dict(meta_to_kp=m2k, assigned=assigned_q, gate=gate, support_covisible=s_covis,
                    support_meta_points=s_points, support_meta_visible=s_vis,
                    support_meta_embed=s_embed, query_meta_points=q_points,
                    query_meta_visible=q_vis, query_meta_embed=q_embed, support_tokens=sk_q,
                    ref_tokens=tokens, ref_init_points=ref_init, ref_embed=ref_embed,
                    ref_points=ref_points, support_maps=s_maps, query_maps=q_maps)

    # ------------------------------------------------------------------ estimator API
    def predict_points(self, inputs, data_samples) -> torch.Tensor:
        out = self.forward_episode(inputs, data_samples)
        b, q = inputs['query_imgs'].shape[:2]
        pts = out['ref_points'][:, -1]
        # slots the supports do not see are not predicted (masked by the metric); put them at the
        # crop centre as the official decoder does
        pts = torch.where(out['support_covisible'].repeat_interleave(q, 0)[..., None], pts,
                          torch.full_like(pts, 0.5))
        return pts.view(b, q, *pts.shape[1:])

    def loss(self, inputs, data_samples) -> Dict[str, torch.Tensor]:
        out = self.forward_episode(inputs, data_samples)
        lc = self.loss_cfg
        q_kpts = data_samples['query_keypoints'].flatten(0, 1)
        q_w = data_samples['query_keypoint_weights'].flatten(0, 1)
        covis = out['support_covisible'].repeat_interleave(
            inputs['query_imgs'].shape[1], 0) & (q_w > 0)
        losses = meta_point_losses(out['query_meta_points'], out['query_meta_visible'],
                                   out['meta_to_kp'], out['assigned'], q_kpts, q_w,
                                   l1_weight=lc['l1'], vp_weight=lc['vp'], vn_weight=lc['vn'],
                                   meta_weight=lc['meta'], slack=lc['aux'])
        losses.update(refine_losses(out['ref_points'], q_kpts, covis, l1_weight=lc['l1'],
                                    ref_weight=lc['ref'], slack=lc['aux']))
        if self.aux_heatmap_cfg is not None:
            ac = self.aux_heatmap_cfg
            losses.update(aux_heatmap_losses(
                out['support_maps'], out['query_maps'], data_samples['support_heatmaps'],
                data_samples['support_keypoint_weights'], q_kpts, covis,
                inputs['query_imgs'].shape[1], levels=tuple(ac['levels']),
                temperature=ac['temperature'], sigma=ac['sigma'], weight=ac['weight']))
        return losses
