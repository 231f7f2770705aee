"""Move an episode batch to the device and normalise its images."""
from typing import Optional, Sequence

import torch
from mmengine.model import BaseDataPreprocessor

from metapoint.registry import MODELS
from metapoint.structures import EpisodeBatch


@MODELS.register_module()
class CAPEDataPreprocessor(BaseDataPreprocessor):
    """Cast ``dict(inputs=EpisodeBatch)`` (:func:`~metapoint.datasets.episode_collate`) to the
    model device and normalise its images.

    Images arrive as uint8 [B, N, 3, H, W] in the loader's channel order (BGR for mmpose's
    ``LoadImage``) and leave as float32 (optionally RGB) ``(img - mean) / std``. Keypoint tensors
    move to the device; metadata stays on the host.

    Args:
        mean / std: per-channel statistics in the *output* channel order (ImageNet RGB default).
        bgr_to_rgb: flip the channel order before normalising.
    """

    def __init__(self, mean: Sequence[float] = (123.675, 116.28, 103.53),
                 std: Sequence[float] = (58.395, 57.12, 57.375), bgr_to_rgb: bool = True,
                 non_blocking: Optional[bool] = False) -> None:
        super().__init__(non_blocking)
        self.register_buffer('mean', torch.tensor(mean, dtype=torch.float32).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.register_buffer('std', torch.tensor(std, dtype=torch.float32).view(1, 1, 3, 1, 1),
                             persistent=False)
        self.bgr_to_rgb = bgr_to_rgb

    def normalize(self, imgs: torch.Tensor) -> torch.Tensor:
        """uint8/float [B, N, 3, H, W] -> normalised float32 [B, N, 3, H, W]."""
        imgs = imgs.float()
        if self.bgr_to_rgb:
            imgs = imgs.flip(2)
        return (imgs - self.mean) / self.std

    def forward(self, data: dict, training: bool = False) -> dict:
        batch = data['inputs']
        if not isinstance(batch, EpisodeBatch):
            raise TypeError(f'CAPEDataPreprocessor expects dict(inputs=EpisodeBatch) as '
                            f'episode_collate makes it, got inputs of type {type(batch).__name__}')
        batch = batch.to(self.device, non_blocking=self._non_blocking)
        return dict(inputs=batch.replace(support_imgs=self.normalize(batch.support_imgs),
                                         query_imgs=self.normalize(batch.query_imgs)))
