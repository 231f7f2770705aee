"""Mixed precision: the regions that stay in float32 under autocast.

Under ``torch.autocast`` (bfloat16 on CPU or CUDA, float16 on CUDA) the matrix products of the
models run in the low precision. Some steps must not:

* deformable sampling: the sampling locations are normalised crop coordinates in [0, 1]; in
  bfloat16 (8 significant bits) a location near 1 is only known to about 0.004, i.e. a quarter of
  a pixel of a 64-pixel map, and the bilinear weights that follow lose as much again;
* the losses (L1 distances of points to targets, heatmap cross-entropy, the Hungarian costs of
  the matcher): small differences of large numbers, reduced over many terms.

:func:`float32_region` runs a function with autocast switched off for the device of its tensor
arguments and with every floating tensor argument (also inside lists, tuples and dicts) cast to
float32; outside autocast it is a plain call (no casts, no cost). The models use it on their
sampling functions and the estimator template on the criterion.
"""
import functools
from typing import Any, Callable, Optional

import torch


def _first_device(obj: Any) -> Optional[torch.device]:
    if isinstance(obj, torch.Tensor):
        return obj.device
    if isinstance(obj, (list, tuple)):
        for item in obj:
            device = _first_device(item)
            if device is not None:
                return device
    if isinstance(obj, dict):
        return _first_device(list(obj.values()))
    return None


def to_float32(obj: Any) -> Any:
    """``obj`` with every floating tensor in it (nested lists, tuples, dicts) as float32."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float32 else obj
    if isinstance(obj, list):
        return [to_float32(x) for x in obj]
    if isinstance(obj, tuple) and not hasattr(obj, '_fields'):
        return tuple(to_float32(x) for x in obj)
    if isinstance(obj, dict):
        return type(obj)((k, to_float32(v)) for k, v in obj.items())
    return obj


def autocast_active(device: Optional[torch.device]) -> bool:
    """Whether autocast is on for ``device``'s type (False for ``None``)."""
    return device is not None and torch.is_autocast_enabled(device.type)


def float32_region(fn: Callable) -> Callable:
    """Decorator: run ``fn`` in float32 when autocast is active (module doc)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        device = _first_device(list(args) + list(kwargs.values()))
        if not autocast_active(device):
            return fn(*args, **kwargs)
        with torch.autocast(device_type=device.type, enabled=False):
            return fn(*to_float32(args), **to_float32(kwargs))

    return wrapper
