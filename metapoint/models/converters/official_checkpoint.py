"""Read official (mmcv 1.x) checkpoints and rename their keys by a table of regex rules."""
import os.path as osp
import pickle
import re
from typing import Dict, Iterable, Optional, Sequence, Tuple

import torch

Rule = Tuple[str, str]


class ConversionError(RuntimeError):
    """A checkpoint that does not map exactly onto the model (keys or shapes)."""


def load_official_checkpoint(path: str, trust_pickle: bool = False) -> Dict[str, torch.Tensor]:
    """The ``state_dict`` of an official checkpoint.

    ``torch.load(weights_only=True)`` is tried first. mmcv 1.x checkpoints also pickle their
    ``meta`` (mmcv / numpy objects), which the safe loader refuses; only with ``trust_pickle=True``
    (the converter's ``--trust-pickle``) is the file then loaded as a full pickle. Only do that
    for files from a source you trust: unpickling can run code.
    """
    if not osp.isfile(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
        if not trust_pickle:
            raise ConversionError(
                f'{path} cannot be read with weights_only=True ({str(e).splitlines()[-1]}). '
                'If you trust its source, pass --trust-pickle to load it as a full pickle.') from e
        ckpt = torch.load(path, map_location='cpu', weights_only=False)
    state = ckpt.get('state_dict', ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ConversionError(f'{path}: no tensor state_dict found')
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in state.items()}


def rename_keys(state: Dict[str, torch.Tensor], rules: Sequence[Rule],
                drop: Iterable[str] = ()) -> Dict[str, torch.Tensor]:
    """Apply the first matching (pattern, replacement) rule to every key; unmapped keys raise."""
    compiled = [(re.compile(p), r) for p, r in rules]
    dropped = [re.compile(p) for p in drop]
    out, unmapped = {}, []
    for key, value in state.items():
        if any(d.fullmatch(key) for d in dropped):
            continue
        for pattern, repl in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(repl, key)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        raise ConversionError(f'{len(unmapped)} official key(s) have no mapping: {unmapped[:10]}')
    return out


def check_against_model(state: Dict[str, torch.Tensor], reference: Dict[str, torch.Tensor],
                        name: Optional[str] = None) -> None:
    """Raise unless ``state`` has exactly the keys and shapes of ``reference``."""
    missing = sorted(set(reference) - set(state))
    unexpected = sorted(set(state) - set(reference))
    shapes = [(k, tuple(state[k].shape), tuple(reference[k].shape)) for k in reference
              if k in state and state[k].shape != reference[k].shape]
    problems = []
    if missing:
        problems.append(f'missing {len(missing)}: {missing[:10]}')
    if unexpected:
        problems.append(f'unexpected {len(unexpected)}: {unexpected[:10]}')
    if shapes:
        problems.append(f'shape mismatch {len(shapes)}: {shapes[:10]}')
    if problems:
        raise ConversionError(f'{name or "converted checkpoint"} does not match the model: '
                              + '; '.join(problems))
