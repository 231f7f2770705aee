"""The estimator template: the steps every CAPE model goes through, in one place."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from mmengine.model import BaseModel

from metapoint.models.layers.precision import float32_region
from metapoint.registry import MODELS
from metapoint.structures import EpisodeBatch
from metapoint.utils.geometry import crop_to_image

Features = Optional[List[torch.Tensor]]


#: ``torch.compile`` arguments a ``compile`` dict may carry, besides ``parts``
COMPILE_KEYS = ('parts', 'backend', 'mode', 'dynamic', 'fullgraph', 'options', 'disable')


def parse_compile_cfg(compile: Union[bool, dict, None]) -> Optional[dict]:
    """``False``/``None`` -> None; ``True`` -> ``{}``; a dict is checked against
    :data:`COMPILE_KEYS` (a typo raises, naming the valid keys)."""
    if compile is None or compile is False:
        return None
    if compile is True:
        return {}
    if not isinstance(compile, dict):
        raise TypeError(f'model compile must be a bool or a dict, got {type(compile).__name__}')
    unknown = sorted(set(compile) - set(COMPILE_KEYS))
    if unknown:
        raise ValueError(f'model compile: unknown keys {unknown}; valid: {list(COMPILE_KEYS)}')
    return dict(compile)


class BaseCAPEEstimator(BaseModel):
    """A CAPE model: given supports with keypoints, predict the same keypoints on the queries.

    One batch item is one episode (:class:`~metapoint.structures.EpisodeBatch`: B episodes, S
    shots, Q queries, K slots). :meth:`run_episode` fixes the steps; a model overrides only its
    own:

    1. :meth:`check_keypoint_count`: K matches the model's ``max_kpt_num`` (when it has one).
    2. :meth:`extract_features`: image features of the supports ``[B*S, ...]`` and the queries
       ``[B*Q, ...]`` (default: :meth:`image_features` in one call on all images).
    3. :meth:`encode_support`: everything that depends on the supports only, computed ONCE per
       episode whatever Q (tokens, fused shots, assignments).
    4. :meth:`decode_queries`: the queries of all episodes in one batch ``[B*Q, ...]``; support
       tensors are repeated per query with :meth:`EpisodeBatch.per_query`. Returns a dict of
       outputs whose ``'points'`` entry is a list over decoder layers of ``[B*Q, K, 2]``.

    Then ``'predict'`` / ``'tensor'`` take :meth:`output_points` (the last layer by default),
    reshaped to ``[B, Q, K, 2]``, and ``'loss'`` hands the outputs to the registered
    ``criterion`` (one loss dict with named weights) plus the optional ``similarity_aid``.

    Coordinates are normalised crop (x, y) in [0, 1] everywhere; ``'predict'`` maps them back to
    original image pixels for :class:`~metapoint.evaluation.CAPEMetric`.

    Args:
        criterion: config of the model's loss (registered in ``MODELS``); None: not trainable.
        similarity_aid: optional :class:`~metapoint.models.SimilarityAid` config (a training
            aid for backbones trained from scratch, not part of any paper method).
        channels_last: run the image backbone in the channels-last memory format (weights and
            input images); same results up to float rounding, faster convolutions on some
            devices (docs/benchmarks.md).
        compile: ``torch.compile`` model parts in place (``nn.Module.compile``: state-dict keys
            and checkpoints are unchanged). ``True`` compiles every top-level part with
            parameters except the criterion and the similarity aid; a dict may name
            ``parts`` (e.g. ``['backbone']``) and carries ``torch.compile`` arguments
            (``backend``, ``mode``, ``dynamic``, ``fullgraph``, ``options``).

    Both take effect at the first forward, or when :meth:`apply_runtime_options` is called (the
    DDP wrapper does so before wrapping).
    """

    #: padded slot count the model was built for (None: any K)
    max_kpt_num: Optional[int] = None
    #: image calls in training: False = one backbone call on all supports and queries (BatchNorm
    #: statistics shared by the whole batch, FMMP); True = one call per image slot (each shot,
    #: each query index) of batch B, as the official MetaPoint and CapeFormer code does
    image_call_per_slot: bool = False

    def __init__(self, criterion: Optional[dict] = None, similarity_aid: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None, channels_last: bool = False,
                 compile: Union[bool, dict] = False) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.criterion = MODELS.build(criterion) if criterion is not None else None
        self.similarity_aid = MODELS.build(similarity_aid) if similarity_aid is not None \
            else None
        self.channels_last = bool(channels_last)
        self.compile_cfg = parse_compile_cfg(compile)
        self._runtime_options_applied = False

    def apply_runtime_options(self) -> None:
        """Apply ``channels_last`` and ``compile`` (once; class doc)."""
        if self._runtime_options_applied:
            return
        self._runtime_options_applied = True
        if self.channels_last:
            backbone = getattr(self, 'backbone', None)
            if backbone is None:
                raise ValueError(f'{type(self).__name__}: channels_last=True needs a backbone')
            backbone.to(memory_format=torch.channels_last)
        if self.compile_cfg is not None:
            options = dict(self.compile_cfg)
            parts = options.pop('parts', None)
            for name in self.compile_parts(parts):
                getattr(self, name).compile(**options)

    def compile_parts(self, parts: Optional[Sequence[str]] = None) -> List[str]:
        """Names of the top-level parts ``compile`` compiles (checked against the model)."""
        children = dict(self.named_children())
        skip = ('criterion', 'similarity_aid', 'data_preprocessor')
        if parts is None:
            return [n for n, m in children.items()
                    if n not in skip and any(True for _ in m.parameters())]
        unknown = [p for p in parts if p not in children or p in skip]
        if unknown:
            valid = [n for n in children if n not in skip]
            raise ValueError(f'{type(self).__name__}: compile parts {unknown} are not parts of '
                             f'the model; valid: {valid}')
        return list(parts)

    # ------------------------------------------------------------------ mmengine entry
    def forward(self, inputs: EpisodeBatch, data_samples=None, mode: str = 'tensor'
                ) -> Union[Dict[str, torch.Tensor], list, torch.Tensor]:
        """``'loss'``: dict of loss tensors; ``'tensor'``: points ``[B, Q, K, 2]`` normalised
        crop coordinates; ``'predict'``: one metric input dict per episode (image pixels)."""
        if not isinstance(inputs, EpisodeBatch):
            raise TypeError(f'{type(self).__name__} takes an EpisodeBatch (episode_collate + '
                            f'CAPEDataPreprocessor), got {type(inputs).__name__}')
        if not self._runtime_options_applied:
            self.apply_runtime_options()
        if mode == 'loss':
            return self.loss(inputs)
        if mode == 'predict':
            return self.pack_predictions(self.predict_points(inputs), inputs)
        if mode == 'tensor':
            return self.predict_points(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    # ------------------------------------------------------------------ the fixed steps
    def run_episode(self, batch: EpisodeBatch) -> dict:
        """Steps 1-4 (class doc). With a similarity aid, its support features (and, when it
        proposes them, initial points ``[B*Q, K, 2]`` handed to :meth:`decode_queries`) are
        added; the aid's inputs are kept under ``outputs['similarity_aid']`` for its loss."""
        self.check_keypoint_count(batch)
        support_feats, query_feats = self.extract_features(batch)
        support = self.encode_support(support_feats, batch)
        aid_state, init_points = None, None
        if self.similarity_aid is not None:
            aid_state = self.similarity_aid.prepare(support_feats, query_feats, batch)
            init_points = aid_state.get('init_points')
        outputs = self.decode_queries(query_feats, support, batch, init_points=init_points)
        outputs['similarity_aid'] = aid_state
        return outputs

    def check_keypoint_count(self, batch: EpisodeBatch) -> None:
        """K of the batch must be the model's ``max_kpt_num`` (order embeddings depend on it)."""
        if self.max_kpt_num is not None and batch.num_slots != self.max_kpt_num:
            raise ValueError(
                f'{type(self).__name__} was built for max_kpt_num={self.max_kpt_num} but the '
                f'batch has {batch.num_slots} keypoint slots: set the dataset max_kpt_num and '
                'the model max_kpt_num to the same value')

    def image_features(self, imgs: torch.Tensor) -> List[torch.Tensor]:
        """imgs ``[N, 3, H, W]`` -> feature levels ``[N, C, h_l, w_l]`` (backbone, then the
        neck when the model has one)."""
        if self.channels_last:
            imgs = imgs.contiguous(memory_format=torch.channels_last)
        feats = self.backbone(imgs)
        return self.neck(feats) if getattr(self, 'neck', None) is not None else list(feats)

    def extract_features(self, batch: EpisodeBatch) -> Tuple[Features, Features]:
        """Support levels ``[B*S, ...]`` and query levels ``[B*Q, ...]`` (episode-major).

        With ``image_call_per_slot`` False: ONE call on all images (in training, BatchNorm
        statistics are shared by supports and queries). With it True: supports and queries are
        separate calls, and in training every image slot (shot s, query q) is its own call of
        batch B, so BatchNorm statistics are per call as in the official code; at test time
        (running statistics) each role goes through in one call.
        """
        if self.image_call_per_slot:
            return self.slot_features(batch.support_imgs), self.slot_features(batch.query_imgs)
        n_support = batch.num_episodes * batch.num_shots
        feats = self.image_features(torch.cat([batch.support_imgs.flatten(0, 1),
                                               batch.query_imgs.flatten(0, 1)]))
        return [lv[:n_support] for lv in feats], [lv[n_support:] for lv in feats]

    def slot_features(self, imgs: torch.Tensor) -> List[torch.Tensor]:
        """imgs ``[B, N, 3, H, W]`` -> levels ``[B*N, C, h_l, w_l]`` (episode-major); in
        training one :meth:`image_features` call per slot n (batch B), else one call."""
        n = imgs.shape[1]
        if self.training and n > 1:
            per_slot = [self.image_features(imgs[:, i]) for i in range(n)]
            return [torch.stack([lv[i] for lv in per_slot], 1).flatten(0, 1)
                    for i in range(len(per_slot[0]))]
        return list(self.image_features(imgs.flatten(0, 1)))

    def encode_support(self, support_feats: Features, batch: EpisodeBatch) -> dict:
        """Support-only work, once per episode (default: nothing)."""
        return {}

    def decode_queries(self, query_feats: Features, support: dict, batch: EpisodeBatch,
                       init_points: Optional[torch.Tensor] = None) -> dict:
        """All queries at once -> outputs with ``'points'``: list of ``[B*Q, K, 2]``."""
        raise NotImplementedError

    def output_points(self, outputs: dict, batch: EpisodeBatch) -> torch.Tensor:
        """The prediction ``[B*Q, K, 2]`` among the outputs (default: the last layer)."""
        return outputs['points'][-1]

    # ------------------------------------------------------------------ predictions / losses
    def predict_points(self, batch: EpisodeBatch) -> torch.Tensor:
        """Predicted query keypoints ``[B, Q, K, 2]``, normalised crop coordinates (x, y)."""
        points = self.output_points(self.run_episode(batch), batch)
        return points.reshape(batch.num_episodes, batch.num_queries, *points.shape[1:])

    def loss(self, batch: EpisodeBatch) -> Dict[str, torch.Tensor]:
        """The criterion's named, weighted loss terms (plus the similarity aid's)."""
        if self.criterion is None:
            raise NotImplementedError(f'{type(self).__name__} has no criterion: not trainable')
        outputs = self.run_episode(batch)
        # under autocast (mixed precision) the losses are computed in float32
        losses = float32_region(self.criterion)(outputs, batch)
        if self.similarity_aid is not None:
            losses.update(float32_region(self.similarity_aid.loss)(outputs['similarity_aid'],
                                                                   batch))
        return losses

    @staticmethod
    def pack_predictions(points: torch.Tensor, batch: EpisodeBatch) -> List[dict]:
        """Map ``[B, Q, K, 2]`` crop predictions to image pixels; one metric input per episode."""
        points = points.detach().float().cpu().numpy()
        outputs = []
        for b, metas in enumerate(batch.query_metas):
            warp = np.stack([m['warp_mat'] for m in metas]).astype(np.float64)
            pred = crop_to_image(points[b], warp, metas[0]['input_size'])
            outputs.append(dict(
                category_id=int(batch.category_id[b]),
                num_kpts=int(batch.num_kpts[b]),
                query_ann_ids=[int(m['ann_id']) for m in metas],
                pred_kpts=pred.astype(np.float32),
                gt_kpts=np.stack([m['gt_keypoints'] for m in metas]),
                query_vis=batch.query_keypoints_visible[b].cpu().numpy(),
                support_vis=batch.support_keypoints_visible[b].cpu().numpy(),
                bbox_size=np.array([m['bbox_size'] for m in metas], dtype=np.float32)))
        return outputs
