"""Convert an official MetaPoint checkpoint to this codebase.

    python tools/model_converters/metapoint_official_to_ours.py IN.pth OUT.pth \
        [--config configs/metapoint/metapoint_r50_4xb16_mp100-split1_1shot.py] [--trust-pickle]

The official file (mmcv 1.x) is first read with ``torch.load(weights_only=True)``; its pickled
``meta`` usually needs ``--trust-pickle`` (only for files from a source you trust). Every official
key must map, and the result must have exactly the keys and shapes of the model built from
``--config``; anything else is an error. OUT holds ``{'state_dict': ..., 'meta': {...}}`` and loads
with ``weights_only=True`` (``tools/test.py CONFIG OUT``).
"""
import argparse
import os
import os.path as osp
import sys

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

import torch  # noqa: E402
from mmengine.config import Config  # noqa: E402

from metapoint.models.converters import (check_against_model, convert_metapoint_official,  # noqa
                                         load_official_checkpoint)
from metapoint.registry import MODELS  # noqa: E402
from metapoint.utils import register_all_modules  # noqa: E402

DEFAULT_CONFIG = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                          'configs', 'metapoint', 'metapoint_r50_4xb16_mp100-split1_1shot.py')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument('src', help='official checkpoint')
    parser.add_argument('dst', help='output path')
    parser.add_argument('--config', default=DEFAULT_CONFIG,
                        help='config whose model the checkpoint must fit exactly')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='allow a full (unsafe) pickle load when weights_only fails')
    args = parser.parse_args(argv)

    state = load_official_checkpoint(args.src, trust_pickle=args.trust_pickle)
    converted = convert_metapoint_official(state)
    register_all_modules()
    cfg = Config.fromfile(args.config)
    cfg.model.backbone.pretrained = None
    model = MODELS.build(cfg.model)
    check_against_model(converted, model.state_dict(), name=args.src)
    os.makedirs(osp.dirname(osp.abspath(args.dst)), exist_ok=True)
    torch.save(dict(state_dict=converted,
                    meta=dict(converted_from=osp.basename(args.src), config=args.config)),
               args.dst)
    print(f'converted {len(converted)} tensors: {args.src} -> {args.dst}')


if __name__ == '__main__':
    main()
