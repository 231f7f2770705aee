#!/usr/bin/env python
"""Write the backbone-only state dict that ``TorchvisionResNet`` / ``TimmBackbone`` load.

The input goes through the backbone's own ``pretrained`` argument: a local file (read with
``torch.load(weights_only=True)``, or ``.safetensors``) or, with ``--resnet``, a torchvision name
such as ``torchvision://resnet50`` (taken from the torch hub cache, downloaded there if absent;
docs/backbones.md). It is loaded with the strict key / shape checks, and the backbone's own state
dict is written (classifier / head keys removed).

Examples::

    # torchvision ImageNet file (downloaded beforehand) -> torchvision keys without fc.*
    python tools/model_converters/make_backbone_checkpoint.py resnet50-0676ba61.pth \
        weights/resnet50_backbone.pth --resnet 50
    # the ResNet of an mmengine / mmpose CAPE checkpoint (``backbone.*`` keys)
    python tools/model_converters/make_backbone_checkpoint.py metapoint_split1.pth \
        weights/resnet50_backbone.pth --resnet 50
    # a full timm model file (e.g. the hub's pytorch_model.bin / model.safetensors)
    python tools/model_converters/make_backbone_checkpoint.py model.safetensors \
        weights/convnext_tiny_features.pth --timm convnext_tiny --out-indices 0 1 2 3

Use the output as ``backbone=dict(type='TorchvisionResNet', depth=50, pretrained='weights/...')``
or ``backbone=dict(type='TimmBackbone', model_name='convnext_tiny', pretrained='weights/...')``.
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.abspath(osp.join(osp.dirname(__file__), '..', '..')))

import torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('src', help='input checkpoint (torchvision / timm / mmengine), local file; '
                   "with --resnet also a torchvision name, e.g. 'torchvision://resnet50'")
    p.add_argument('dst', help='output .pth file (a plain state dict of tensors)')
    kind = p.add_mutually_exclusive_group(required=True)
    kind.add_argument('--resnet', type=int, metavar='DEPTH', choices=[18, 34, 50, 101, 152],
                      help='TorchvisionResNet of this depth')
    kind.add_argument('--timm', metavar='MODEL_NAME', help='TimmBackbone of this timm model')
    p.add_argument('--out-indices', type=int, nargs='+', default=None,
                   help='TimmBackbone only: feature levels the output must serve (default: '
                   "timm's default); modules after the last level are not written")
    p.add_argument('--force', action='store_true', help='overwrite dst if it exists')
    return p.parse_args(argv)


def convert(src, dst, resnet=None, timm_name=None, out_indices=None, force=False):
    """Load ``src`` into the chosen backbone (strict) and save its state dict to ``dst``."""
    from metapoint.models.backbones import TimmBackbone, TorchvisionResNet
    if osp.exists(dst) and not force:
        raise FileExistsError(f'{dst!r} exists; pass --force to overwrite it')
    if (resnet is None) == (timm_name is None):
        raise ValueError('choose exactly one of resnet (depth) and timm_name')
    if resnet is not None:
        backbone = TorchvisionResNet(depth=resnet, pretrained=src)
        state = backbone.state_dict()  # torchvision keys without fc.*
    else:
        backbone = TimmBackbone(timm_name, out_indices=out_indices, pretrained=src)
        state = backbone.timm_model.state_dict()  # the timm features_only model's keys
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}
    os.makedirs(osp.dirname(osp.abspath(dst)), exist_ok=True)
    torch.save(state, dst)
    return state


def main(argv=None):
    args = parse_args(argv)
    if args.out_indices is not None and args.resnet is not None:
        raise SystemExit('--out-indices applies to --timm only')
    state = convert(args.src, args.dst, resnet=args.resnet, timm_name=args.timm,
                    out_indices=args.out_indices, force=args.force)
    print(f'wrote {len(state)} tensors to {args.dst}')


if __name__ == '__main__':
    main()
