"""Shared command line of the official-checkpoint converters (``tools/model_converters``)."""
import argparse
import os
import os.path as osp
from typing import Callable, Dict, Optional, Sequence

import torch

from .official_checkpoint import check_against_model, load_official_checkpoint

Converter = Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]]


def run_converter(convert: Converter, default_config: str, description: str,
                  argv: Optional[Sequence[str]] = None) -> str:
    """Parse ``SRC DST [--config C] [--trust-pickle]``, convert, check, save; returns DST.

    SRC is read with ``weights_only=True`` first (see :func:`load_official_checkpoint`); every
    official key must map, and the result must have exactly the keys and shapes of the model
    built from ``--config`` (backbone ``pretrained`` ignored). DST holds
    ``{'state_dict': ..., 'meta': {...}}`` and loads with ``weights_only=True``.
    """
    from mmengine.config import Config

    from metapoint.models.backbones import disable_backbone_pretrained
    from metapoint.registry import MODELS
    from metapoint.utils import register_all_modules

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--config', default=default_config,
                        help='config whose model the checkpoint must fit exactly')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='allow a full (unsafe) pickle load when weights_only fails')
    args = parser.parse_args(argv)

    state = load_official_checkpoint(args.src, trust_pickle=args.trust_pickle)
    converted = convert(state)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    disable_backbone_pretrained(cfg.model)  # structure only: no ImageNet weights needed
    model = MODELS.build(cfg.model)
    check_against_model(converted, model.state_dict(), name=args.src)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(dict(state_dict=converted,
                    meta=dict(converted_from=osp.basename(args.src), config=args.config)),
               args.dst)
    print(f'converted {len(converted)} tensors: {args.src} -> {args.dst}')
    return args.dst
