"""Sine positional encodings of maps, slots and points (DETR style, CapeFormer flavour).

One axis value ``u`` becomes ``PE1(u) in R^num_feats``: for ``j = 0 .. num_feats - 1``,
``t_j = temperature ** (2 * (j // 2) / num_feats)`` and ``PE1(u)[j] = sin(u / t_j)`` for even
``j``, ``cos(u / t_j)`` for odd ``j`` (sin and cos interleaved). Every encoding is the
concatenation ``[PE1(y-part); PE1(x-part)]`` (y first) of length ``2 * num_feats``.
"""
import math

import torch
from torch import nn

__all__ = ['SinePositionalEncoding']


class SinePositionalEncoding(nn.Module):
    """Parameter-free sine encoding reproducing the CapeFormer class used by MetaPoint and FMMP.

    Args:
        num_feats: features per axis; outputs have ``2 * num_feats`` channels.
        temperature: base of the frequency ladder.
        normalize: divide the cumulative positions of :meth:`forward` by the last one (+ eps),
            then multiply by ``scale``.
        scale: factor applied to normalised positions and to coordinates.
        eps: added to the normaliser.
        offset: added to the cumulative positions before normalising.
    """

    def __init__(self,
                 num_feats: int = 128,
                 temperature: float = 10000,
                 normalize: bool = True,
                 scale: float = 2 * math.pi,
                 eps: float = 1e-6,
                 offset: float = 0.0) -> None:
        super().__init__()
        if normalize and not isinstance(scale, (float, int)):
            raise TypeError(f'scale must be a number when normalize=True, got {type(scale)}')
        self.num_feats = num_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale
        self.eps = eps
        self.offset = offset

    def _dim_t(self, device) -> torch.Tensor:
        j = torch.arange(self.num_feats, dtype=torch.float32, device=device)
        return self.temperature**(2 * (j // 2) / self.num_feats)

    @staticmethod
    def _interleave(pos: torch.Tensor) -> torch.Tensor:
        """``[..., F]`` phases -> ``[..., F]`` as sin(even), cos(odd), interleaved."""
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), dim=-1).flatten(-2)

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        """Encode the positions of a (possibly padded) grid.

        Args:
            mask: ``[B, H, W]`` bool, True = padded position. Positions count the unpadded cells
                1, 2, ... along each axis (``cumsum``), normalised by the last count.

                Quirk reproduction (FMMP, F3): a non-bool mask is cast with ``.to(torch.int)``
                (truncation toward zero) as the official code does, so float values in (-1, 1)
                act as "not padded" and anything else shifts the counts. FMMP passes the float
                x-coordinates of support shot 0 as its order "mask"; passing them here reproduces
                its order embedding exactly. Use bool masks for anything else.
        Returns:
            ``[B, 2 * num_feats, H, W]``: y-part channels first, then x-part.
        """
        not_mask = 1 - mask.to(torch.int)
        y_embed = not_mask.cumsum(1, dtype=torch.float32)
        x_embed = not_mask.cumsum(2, dtype=torch.float32)
        if self.normalize:
            y_embed = (y_embed + self.offset) / (y_embed[:, -1:, :] + self.eps) * self.scale
            x_embed = (x_embed + self.offset) / (x_embed[:, :, -1:] + self.eps) * self.scale
        dim_t = self._dim_t(mask.device)
        pos_x = self._interleave(x_embed[..., None] / dim_t)
        pos_y = self._interleave(y_embed[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)

    def forward_coordinates(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode points: coords ``[B, N, 2]`` normalised ``(x, y)`` -> ``[B, N, 2 * num_feats]``.

        ``[PE1(scale * y); PE1(scale * x)]``: the coordinates are multiplied by ``scale`` and not
        renormalised (``normalize`` is ignored here).
        """
        x_embed = coords[..., 0] * self.scale
        y_embed = coords[..., 1] * self.scale
        dim_t = self._dim_t(coords.device)
        pos_x = self._interleave(x_embed[..., None] / dim_t)
        pos_y = self._interleave(y_embed[..., None] / dim_t)
        return torch.cat((pos_y, pos_x), dim=-1)

    def map_pe(self, height: int, width: int, batch: int, device=None) -> torch.Tensor:
        """Encoding of an unpadded ``height x width`` map: ``[batch, 2 * num_feats, H, W]``.

        Cell (i, j) (1-based) gets ``[PE1(scale*i/(H+eps)); PE1(scale*j/(W+eps))]``.
        """
        return self(torch.zeros(batch, height, width, dtype=torch.bool, device=device))

    def order_pe(self, num_slots: int, batch: int, device=None) -> torch.Tensor:
        """Order ("identity") embedding of slots 1..K: ``[batch, K, 2 * num_feats]``.

        The forward of an all-false ``[batch, 1, K]`` mask, so slot k gets
        ``[PE1(scale/(1+eps)); PE1(scale*k/(K+eps))]``: it depends on K.
        """
        mask = torch.zeros(batch, 1, num_slots, dtype=torch.bool, device=device)
        return self(mask).flatten(2).transpose(1, 2)

    def extra_repr(self) -> str:
        return (f'num_feats={self.num_feats}, temperature={self.temperature}, '
                f'normalize={self.normalize}, scale={self.scale}, eps={self.eps}')
