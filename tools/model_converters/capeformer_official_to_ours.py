"""Convert an official CapeFormer checkpoint to this codebase.

    python tools/model_converters/capeformer_official_to_ours.py IN.pth OUT.pth \
        [--config configs/capeformer/capeformer_r50_1xb16_mp100-split1_1shot.py] [--trust-pickle]

The official file (mmcv 1.x) is first read with ``torch.load(weights_only=True)``; its pickled
``meta`` usually needs ``--trust-pickle`` (only for files from a source you trust). The shared
backbone is stored twice in official checkpoints (``encoder_sample.*`` and ``encoder_query.*``);
the ``encoder_query.*`` copy is taken, the other dropped. Every other official key must map, and
the result must have exactly the keys and shapes of the model built from ``--config``; anything
else is an error. OUT holds ``{'state_dict': ..., 'meta': {...}}`` and loads with
``weights_only=True`` (``tools/test.py CONFIG OUT``).
"""
import os.path as osp
import sys

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
sys.path.insert(0, REPO)

from metapoint.models.converters import convert_capeformer_official  # noqa: E402
from metapoint.models.converters.cli import run_converter  # noqa: E402

DEFAULT_CONFIG = osp.join(REPO, 'configs', 'capeformer',
                          'capeformer_r50_1xb16_mp100-split1_1shot.py')

if __name__ == '__main__':
    run_converter(convert_capeformer_official, DEFAULT_CONFIG, __doc__.splitlines()[1])
