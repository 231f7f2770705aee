"""Mixed-precision training on any device: bfloat16 autocast on CPU or CUDA.

mmengine's ``AmpOptimWrapper`` refuses to start without a GPU (it is built around a
``GradScaler``). :class:`AutocastOptimWrapper` runs the forward and the loss of
``train_step`` under ``torch.autocast(device_type, dtype)`` with the device taken from the
model's parameters; the backward and the optimiser step are those of a plain ``OptimWrapper``.
bfloat16 keeps float32's exponent range, so no loss scaling is needed. float16 needs a
``GradScaler``: that is mmengine's ``AmpOptimWrapper`` (CUDA only), which ``tools/train.py
--amp --amp-dtype float16`` picks.

Inside the autocast region the models keep their deformable sampling and their losses in
float32 (:mod:`metapoint.models.layers.precision`).
"""
from contextlib import contextmanager

import torch
from mmengine.optim import OptimWrapper

from metapoint.registry import OPTIM_WRAPPERS

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16,
           'float16': torch.float16, 'fp16': torch.float16}


def parse_amp_dtype(dtype) -> torch.dtype:
    """``'bfloat16'``/``'bf16'``/``'float16'``/``'fp16'`` or a torch dtype -> the torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in (torch.bfloat16, torch.float16):
        return dtype
    if isinstance(dtype, str) and dtype in _DTYPES:
        return _DTYPES[dtype]
    raise ValueError(f'mixed precision dtype must be one of {sorted(_DTYPES)}, got {dtype!r}')


@OPTIM_WRAPPERS.register_module()
class AutocastOptimWrapper(OptimWrapper):
    """An ``OptimWrapper`` whose ``optim_context`` also enters ``torch.autocast``.

    Args:
        dtype: ``'bfloat16'`` (default; CPU and CUDA) or ``'float16'`` (CUDA only, and only
            without loss scaling: prefer ``AmpOptimWrapper`` for float16).
        **kwargs: the ``OptimWrapper`` arguments (optimizer, clip_grad, accumulative_counts).
    """

    def __init__(self, dtype='bfloat16', **kwargs) -> None:
        super().__init__(**kwargs)
        self.cast_dtype = parse_amp_dtype(dtype)

    @contextmanager
    def optim_context(self, model: torch.nn.Module):
        device = next((p.device for p in model.parameters()), torch.device('cpu'))
        if self.cast_dtype == torch.float16 and device.type != 'cuda':
            raise ValueError(f'AutocastOptimWrapper: float16 autocast needs a CUDA device, the '
                             f'model is on {device.type}; use dtype=bfloat16')
        with super().optim_context(model), torch.autocast(device_type=device.type,
                                                          dtype=self.cast_dtype):
            yield
