"""FMMP's recurrent predictor: support mining and query decoding alternate layer by layer."""
from copy import deepcopy
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metapoint.registry import MODELS
from ..layers.fgsa_mining_layer import FGSAMiningLayer
from ..layers.joint_encoder import JointEncoderLayer
from ..layers.mlp import GeluMLP, TokenDecodeMLP
from ..layers.ms_deform_attn import flatten_multilevel
from ..layers.point_ops import inverse_sigmoid, sample_point_features
from ..layers.positional_encoding import SinePositionalEncoding
from ..layers.shot_fusion import visibility_weighted_shot_mean

__all__ = ['RecurrentFGSAPredictor']


class _JointEncoder(nn.Module):
    """One joint-encoder layer kept under ``layers.0`` (official key layout)."""

    def __init__(self, embed_dims, num_heads, ffn_dims, dropout):
        super().__init__()
        self.layers = nn.ModuleList([JointEncoderLayer(embed_dims, num_heads, ffn_dims, dropout)])

    def forward(self, x, pos, key_padding_mask):
        return self.layers[0](x, pos, key_padding_mask)


@MODELS.register_module()
class RecurrentFGSAPredictor(nn.Module):
    """Keypoint embeddings mined alternately on the supports and on the query.

    See docs/methods.md, FMMP pyramid and initial state / FMMP recurrent mining loop.

    Shapes: B episodes, S shots, Q queries per episode, K slots, C channels, L levels.
    Initial state: embedding ``E`` = visibility-weighted mean over shots of the support pyramid
    sampled at the support keypoints (``embed_init='ref'``) or zeros (``'cst'``); points at the
    crop centre, logit ``z = 0``. For every layer l:

    1. support mining, every shot s on its own image: ``E_s = support_layers[l](E, ...)`` with the
       support points, their position embeddings, BFS table and key mask ``w_s == 0``;
    2. shot fusion ``E = sum_s w_s E_s / max(sum_s w_s, 0.1)``;
    3. query mining ``E = query_layers[l](E, ...)`` at the current points, with the LAST shot's
       BFS table (official quirk Q-F4: the query's own table would need its ground truth);
    4. ``z_l = z_{l-1}.detach() + kpt_branch[l](E)``, points ``sigmoid(z_l)`` (no re-clamping of
       the logit, as officially), detached before the next layer.

    Args:
        num_layers: recurrent layers (3). embed_dims: C (256). num_heads / num_points /
            num_levels / ffn_dims / dropout: mining-layer sizes (8 / 4 / 3 / 256 / 0.1).
        side_heads: structural heads per FGSA attention (8; 0 = plain deformable attention).
        self_attn: self-attention block in every mining layer.
        embed_init: 'ref' | 'cst'. point_init: 'cst' (the only official choice).
        ref_feat_aware: add point features sampled at the reference points (official flag).
        use_joint_encoder: one CapeFormer-style encoder layer per recurrent layer over the
            query's deepest-level tokens + keypoint tokens (its memory replaces that level).
        top_down_fuse: a second query-pyramid fusion ``ReLU(Conv1x1(level + bilinear-upsampled
            coarser fused level))`` before query mining.
        reuse_layers: one support layer and one query layer shared by all recurrent layers.
        projector_init: side-head fusion init, see ``StructuralDeformableAttention``.

    Forward (:meth:`forward`): query_maps list of ``[B*Q, C, h_l, w_l]`` (deepest first),
    support_maps list of ``[B*S, C, h_l, w_l]``, support_points ``[B, S, K, 2]`` normalised crop
    ``(x, y)``, support_weights ``[B, S, K]`` (> 0 = visible), support_neighbours long
    ``[B, S, K, >= side_heads]`` or None, init_points ``[B*Q, K, 2]`` or None (the crop
    centre). Returns a dict with ``points`` (list over layers of
    ``[B*Q, K, 2]``) and intermediates (see the code).
    """

    def __init__(self,
                 num_layers: int = 3,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 num_points: int = 4,
                 num_levels: int = 3,
                 ffn_dims: int = 256,
                 dropout: float = 0.1,
                 side_heads: int = 8,
                 self_attn: bool = True,
                 embed_init: str = 'ref',
                 point_init: str = 'cst',
                 ref_feat_aware: bool = False,
                 use_joint_encoder: bool = False,
                 top_down_fuse: bool = False,
                 reuse_layers: bool = False,
                 projector_init: str = 'xavier',
                 use_cuda_kernel: bool = True) -> None:
        super().__init__()
        if embed_init not in ('ref', 'cst'):
            raise ValueError(f"embed_init must be 'ref' or 'cst', got {embed_init!r}")
        if point_init != 'cst':
            raise ValueError(f"point_init must be 'cst' (the official code implements no other), "
                             f'got {point_init!r}')
        self.num_layers = num_layers
        self.side_heads = side_heads
        self.embed_init = embed_init
        self.ref_feat_aware = ref_feat_aware
        self.use_joint_encoder = use_joint_encoder
        self.top_down_fuse = top_down_fuse
        self.reuse_layers = reuse_layers

        def mining_layer():
            return FGSAMiningLayer(embed_dims, num_heads, num_levels, num_points, ffn_dims,
                                   side_heads, self_attn, dropout, projector_init,
                                   use_cuda_kernel)

        if reuse_layers:
            support, query = mining_layer(), mining_layer()
            self.support_layers = nn.ModuleList([support] * num_layers)
            self.query_layers = nn.ModuleList([query] * num_layers)
        else:
            self.support_layers = nn.ModuleList(mining_layer() for _ in range(num_layers))
            self.query_layers = nn.ModuleList(mining_layer() for _ in range(num_layers))
        self.pos_embed_proj = GeluMLP(embed_dims, embed_dims, embed_dims, 2)
        self.pe = SinePositionalEncoding(num_feats=embed_dims // 2, normalize=True)
        self.kpt_branch = nn.ModuleList(
            deepcopy(TokenDecodeMLP(embed_dims, embed_dims)) for _ in range(num_layers))
        if use_joint_encoder:
            self.joint_encoder_layers = nn.ModuleList(
                _JointEncoder(embed_dims, num_heads, ffn_dims, dropout)
                for _ in range(num_layers))
        if top_down_fuse:
            self.top_down_projs = nn.ModuleList(
                nn.Sequential(nn.Conv2d(embed_dims, embed_dims, kernel_size=1), nn.ReLU())
                for _ in range(num_levels - 1))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Official order: xavier-uniform on every >= 2-D weight, mining layers' own init, then
        zero last layers of the coordinate heads (the first prediction is the crop centre)."""
        for m in self.modules():
            weight = getattr(m, 'weight', None)
            if isinstance(weight, torch.Tensor) and weight.dim() > 1:
                nn.init.xavier_uniform_(weight)
                if getattr(m, 'bias', None) is not None:
                    nn.init.zeros_(m.bias)
        for layer in list(self.support_layers) + list(self.query_layers):
            layer.init_weights()
        for head in self.kpt_branch:
            nn.init.zeros_(head.mlp[-1].weight)
            nn.init.zeros_(head.mlp[-1].bias)

    def position(self, points: torch.Tensor) -> torch.Tensor:
        """Reference-position embedding ``MLP(PE(points))``: ``[..., K, 2]`` -> ``[..., K, C]``."""
        return self.pos_embed_proj(self.pe.forward_coordinates(points))

    def _query_values(self, layer: int, query_maps: List[torch.Tensor], embed: torch.Tensor,
                      order: torch.Tensor, support_visible: torch.Tensor):
        """Values of the query pyramid for one layer (joint encoder / top-down fuse options)."""
        maps = list(query_maps)
        if self.use_joint_encoder:
            n, c, h, w = maps[0].shape
            map_pos = self.pe.map_pe(h, w, n, maps[0].device).flatten(2).transpose(1, 2)
            tokens = torch.cat([maps[0].flatten(2).transpose(1, 2), embed], 1)
            pos = torch.cat([map_pos, order.expand(n, -1, -1)], 1)
            mask = torch.cat([support_visible.new_zeros(n, h * w), ~support_visible], 1)
            out = self.joint_encoder_layers[layer](tokens, pos, mask)
            maps[0] = out[:, :h * w].transpose(1, 2).reshape(n, c, h, w)
            embed = out[:, h * w:]
        if self.top_down_fuse:
            fused = [maps[0]]
            for i, fmap in enumerate(query_maps[1:]):
                up = F.interpolate(fused[-1], size=fmap.shape[-2:], mode='bilinear',
                                   align_corners=True)  # official F.upsample_bilinear
                fused.append(self.top_down_projs[i](fmap + up))
            maps = fused
        return flatten_multilevel(maps)[0], embed

    def forward(self, query_maps: Sequence[torch.Tensor], support_maps: Sequence[torch.Tensor],
                support_points: torch.Tensor, support_weights: torch.Tensor,
                support_neighbours: Optional[torch.Tensor] = None,
                init_points: Optional[torch.Tensor] = None) -> Dict[str, object]:
        b, s, k, _ = support_points.shape
        nq = query_maps[0].shape[0]
        if nq % b:
            raise ValueError(f'{nq} query images do not split into {b} episodes')
        q = nq // b
        values_s, shapes, level_start = flatten_multilevel(list(support_maps))
        values_q, _, _ = flatten_multilevel(list(query_maps))
        vis = (support_weights > 0).to(values_s.dtype)  # [B, S, K]
        points_s = support_points.flatten(0, 1)  # [B*S, K, 2]
        vis_s = vis.flatten(0, 1)
        ref_pos_s = self.position(points_s)
        ref_feat_s = sample_point_features(values_s, points_s, shapes) * vis_s[..., None]
        nbr_s = None if support_neighbours is None else support_neighbours.flatten(0, 1)
        nbr_q = None if support_neighbours is None else \
            support_neighbours[:, -1].repeat_interleave(q, 0)
        # slot-order embedding with an all-false mask (official Q-F3 passes coordinates instead)
        order = self.pe.order_pe(k, 1, support_points.device)
        if self.embed_init == 'ref':
            feats = ref_feat_s.view(b, s, k, -1)
            embed = visibility_weighted_shot_mean(feats, vis, floor=0.1)
        else:
            embed = ref_feat_s.new_zeros(b, k, ref_feat_s.shape[-1])
        init_embed = embed
        embed = embed.repeat_interleave(q, 0)  # [B*Q, K, C]
        if init_points is None:  # official 'cst': the crop centre, logit 0
            logits = torch.zeros(nq, k, 2, dtype=values_s.dtype, device=values_s.device)
        else:  # optional external start [B*Q, K, 2] (FMMP's similarity aid), no gradient
            logits = inverse_sigmoid(init_points.detach())
        points = logits.sigmoid()
        support_feat = ref_feat_s if self.ref_feat_aware else None
        support_mask = vis_s == 0
        # joint encoder key mask: slots no shot sees [B*Q, K]
        support_visible_q = (vis.sum(1) > 0).repeat_interleave(q, 0) \
            if self.use_joint_encoder else None

        all_points, deltas, query_embeds, support_embeds = [], [], [], []
        for lid in range(self.num_layers):
            # 1. every shot mines its own image; the Q queries of an episode share the image.
            # Layer 0's input is the same for every query of an episode: at inference it is
            # mined once per episode and shared (in training each copy draws its own dropout)
            once = lid == 0 and q > 1 and not self.training
            q_in = 1 if once else q
            x = (init_embed if once else embed).view(b, 1, q_in, k, -1).expand(
                b, s, q_in, k, embed.shape[-1])
            x = self.support_layers[lid](x.reshape(b * s, q_in, k, -1), order, ref_pos_s,
                                         points_s, values_s, shapes, level_start, nbr_s,
                                         support_mask, support_feat)
            x = x.view(b, s, q_in, k, -1).expand(b, s, q, k, x.shape[-1])
            support_embeds.append(x)
            # 2. visibility-weighted shot fusion
            embed = visibility_weighted_shot_mean(x, vis[:, :, None, :], floor=0.1).reshape(
                nq, k, -1)
            # 3. query mining at the current points
            values, embed = self._query_values(lid, query_maps, embed, order, support_visible_q) \
                if (self.use_joint_encoder or self.top_down_fuse) else (values_q, embed)
            query_feat = sample_point_features(values, points, shapes) \
                if self.ref_feat_aware else None
            embed = self.query_layers[lid](embed[:, None], order, self.position(points), points,
                                           values, shapes, level_start, nbr_q, None,
                                           query_feat)[:, 0]
            query_embeds.append(embed)
            # 4. logit-space update
            delta = self.kpt_branch[lid](embed)
            z = logits + delta
            pred = z.sigmoid()
            all_points.append(pred)
            deltas.append(delta)
            logits, points = z.detach(), pred.detach()
        return dict(points=all_points, deltas=deltas, query_embeds=query_embeds,
                    support_embeds=support_embeds, init_embed=init_embed, order=order,
                    support_ref_pos=ref_pos_s.view(b, s, k, -1))
