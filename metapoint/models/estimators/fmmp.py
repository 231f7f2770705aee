"""FMMP (CVPR'25): recurrent fine-grained, structure-aware (FGSA) keypoint feature mining."""
from typing import Dict, List, Optional

import torch

from metapoint.registry import MODELS
from metapoint.utils.config_checks import merge_options
from ..layers.point_ops import sample_point_features
from ..losses import shot_mean_per_query, similarity_heatmap_loss, similarity_peak_points
from .base import BaseCAPEEstimator


@MODELS.register_module()
class FMMP(BaseCAPEEstimator):
    """FMMP estimator (docs/methods.md, FMMP).

    1. Backbone (stages 2-4) + :class:`TopDownPyramid` -> 3 levels, deepest first.
    2. :class:`RecurrentFGSAPredictor` alternates support mining and query decoding; every layer
       predicts all K slots (real keypoints and padded ones, see ``KeypointPadding``).
    3. Prediction: last layer. Loss (training): per-layer L1 on real slots + ``mix_weight`` x L1 on
       padded slots (:meth:`loss`).

    Images: one backbone call on every support and query of the batch, as the official code does
    (in training the BatchNorm statistics are shared by supports and queries). Supports are
    encoded once per episode whatever the number of queries Q; their values are projected and
    sampled once for all Q queries.

    Args:
        backbone: backbone config returning the stages the neck uses (ResNet ``out_indices``
            ``(1, 2, 3)``).
        neck: :class:`TopDownPyramid` config (``in_channels`` filled from the backbone).
        predictor: :class:`RecurrentFGSAPredictor` config.
        loss_cfg: ``mix_weight`` (0.5), the weight of the padded-slot L1 term.
        max_kpt_num: K, the padded slot count of the data.
        aux_heatmap_cfg: None (default: the paper method) or a dict enabling an optional
            CPU-budget aid that is NOT part of FMMP (docs/fmmp.md, learning check): the support
            keypoint features sampled from pyramid level ``level`` (default -1, the finest) are
            matched by cosine similarity against that level of the query map, and
            ``loss_sim`` (x ``weight``, 1.0) is the cross-entropy of softmax(similarity /
            ``temperature`` (0.1)) against a Gaussian (``sigma`` cells, 1.0) at the query
            keypoint, on real keypoints visible in the support and the query. With
            ``init_points=True`` the predictor also starts every keypoint at the similarity peak
            (local soft-argmax within ``init_radius`` cells, 1) instead of the crop centre, in
            training and at test time.
    """

    def __init__(self,
                 backbone: dict,
                 neck: Optional[dict] = None,
                 predictor: Optional[dict] = None,
                 loss_cfg: Optional[dict] = None,
                 max_kpt_num: int = 70,
                 aux_heatmap_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.aux_heatmap_cfg = None
        if aux_heatmap_cfg is not None:
            self.aux_heatmap_cfg = merge_options('FMMP aux_heatmap_cfg', dict(
                level=-1, temperature=0.1, sigma=1.0, weight=1.0, init_points=False,
                init_radius=1), aux_heatmap_cfg)
        self.backbone = MODELS.build(backbone)
        neck = dict(dict(type='TopDownPyramid', num_levels=3, out_channels=256), **(neck or {}))
        neck.setdefault('in_channels', self.backbone.out_channels)
        self.neck = MODELS.build(neck)
        predictor = dict(dict(type='RecurrentFGSAPredictor'), **(predictor or {}))
        predictor.setdefault('num_levels', neck['num_levels'])
        predictor.setdefault('embed_dims', neck['out_channels'])
        self.predictor = MODELS.build(predictor)
        self.loss_cfg = merge_options('FMMP loss_cfg', dict(mix_weight=0.5), loss_cfg)
        self.max_kpt_num = max_kpt_num

    def extract_maps(self, imgs: torch.Tensor) -> List[torch.Tensor]:
        """imgs ``[N, 3, H, W]`` -> pyramid levels ``[N, C, h_l, w_l]``, deepest first."""
        return self.neck(self.backbone(imgs))

    def forward_episode(self, inputs: Dict[str, torch.Tensor], data_samples: dict) -> dict:
        """Run the model on a batch of episodes; returns the predictor's outputs."""
        s_imgs, q_imgs = inputs['support_imgs'], inputs['query_imgs']
        b, s = s_imgs.shape[:2]
        s_kpts = data_samples['support_keypoints']  # [B, S, K, 2]
        if s_kpts.shape[2] != self.max_kpt_num:
            raise ValueError(f'FMMP built for max_kpt_num={self.max_kpt_num} got '
                             f'{s_kpts.shape[2]} slots')
        neighbours = data_samples.get('support_neighbour_idx')
        if neighbours is None and self.predictor.side_heads > 1:
            raise KeyError('FMMP with side_heads > 1 needs data_samples["support_neighbour_idx"]; '
                           'add StructuralNeighbours to the episode pipeline')
        maps = self.extract_maps(torch.cat([s_imgs.flatten(0, 1), q_imgs.flatten(0, 1)]))
        s_maps = [lv[:b * s] for lv in maps]
        q_maps = [lv[b * s:] for lv in maps]
        s_w = data_samples['support_keypoint_weights']
        init_points, match_feats = None, None
        if self.aux_heatmap_cfg is not None:
            ac = self.aux_heatmap_cfg
            match_feats = self.support_match_features(s_maps[ac['level']], s_kpts, s_w,
                                                      q_imgs.shape[1])
            if ac['init_points']:
                init_points = similarity_peak_points(match_feats, q_maps[ac['level']],
                                                     temperature=ac['temperature'],
                                                     radius=ac['init_radius'])
        out = self.predictor(q_maps, s_maps, s_kpts, s_w, neighbours, init_points=init_points)
        out.update(query_maps=q_maps, match_features=match_feats)
        return out

    @staticmethod
    def support_match_features(support_map: torch.Tensor, support_points: torch.Tensor,
                               support_weights: torch.Tensor, num_queries: int) -> torch.Tensor:
        """Support keypoint features of one level for the optional similarity aid.

        support_map ``[B*S, C, h, w]``, support_points ``[B, S, K, 2]``, support_weights
        ``[B, S, K]`` -> ``[B*Q, K, C]``: bilinear samples at the support keypoints, averaged over
        the shots where the keypoint is visible, repeated for the Q queries of each episode.
        """
        b, s, k, _ = support_points.shape
        f = sample_point_features([support_map], support_points.flatten(0, 1)).view(b, s, k, -1)
        return shot_mean_per_query(f, support_weights, num_queries)

    def predict_points(self, inputs, data_samples) -> torch.Tensor:
        out = self.forward_episode(inputs, data_samples)
        b, q = inputs['query_imgs'].shape[:2]
        return out['points'][-1].view(b, q, *out['points'][-1].shape[1:])

    def loss(self, inputs, data_samples) -> Dict[str, torch.Tensor]:
        """``l1_loss_real`` / ``l1_loss_mix`` (docs/methods.md, FMMP loss): for every query,
        ``sum_l sum_k w_k r_k |p^l_k - y_k|_1 / max(sum_k w_k r_k, 0.1)`` averaged over queries,
        with r_k = [k < K_c] (real) or 1 - r_k (padded, times ``mix_weight``); w = the query's
        keypoint weights after padding (query visibility only, official Q-F15)."""
        out = self.forward_episode(inputs, data_samples)
        q = inputs['query_imgs'].shape[1]
        pred = torch.stack(out['points'], 1)  # [B*Q, L, K, 2]
        gt = data_samples['query_keypoints'].flatten(0, 1)  # [B*Q, K, 2]
        w = data_samples['query_keypoint_weights'].flatten(0, 1).to(pred.dtype)
        num_kpts = data_samples['num_kpts'].to(pred.device).repeat_interleave(q)
        slots = torch.arange(gt.shape[1], device=pred.device)
        real = (slots[None] < num_kpts[:, None]).to(pred.dtype)
        err = (pred - gt[:, None]).abs().sum(-1)  # [B*Q, L, K]

        def term(mask):
            m = (w * mask)[:, None]
            return ((err * m).sum(-1) / m.sum(-1).clamp(min=0.1)).sum(-1).mean()

        losses = dict(l1_loss_real=term(real),
                      l1_loss_mix=self.loss_cfg['mix_weight'] * term(1 - real))
        if self.aux_heatmap_cfg is not None:
            ac = self.aux_heatmap_cfg
            s_vis = data_samples['support_keypoint_weights'].amax(1).repeat_interleave(q, 0) > 0
            mask = s_vis & (w > 0) & (real > 0)
            losses['loss_sim'] = ac['weight'] * similarity_heatmap_loss(
                out['match_features'], out['query_maps'][ac['level']], gt, mask,
                temperature=ac['temperature'], sigma=ac['sigma'])
        return losses
