"""FMMP end to end on real images: tools/train.py (mixup padding) then tools/test.py (eqdiv).

Uses mp100_mini (real photos, real annotation quirks) and a small FMMP (tests/fixtures/
fmmp_mini.py); a few seconds on 2 CPU cores.
"""
import json
import sys

from tests.helpers import MP100_MINI, skip_without
from tests.test_engine import MINI_ROOT, _load, _run

pytestmark = skip_without(MP100_MINI)
CFG = 'tests/fixtures/fmmp_mini.py'


def test_fmmp_trains_and_evaluates_on_real_images(tmp_path):
    work = tmp_path / 'fmmp'
    _run([sys.executable, 'tools/train.py', CFG, '--work-dir', str(work), '--cfg-options',
          *MINI_ROOT])
    ckpt = _load(work / 'epoch_2.pth')
    assert any(k.startswith('predictor.query_layers.1.deform_attn.attn_layers.1.')
               for k in ckpt['state_dict'])
    out = _run([sys.executable, 'tools/test.py', CFG, str(work / 'epoch_2.pth'),
                '--work-dir', str(work / 'test'), '--cfg-options', *MINI_ROOT])
    assert 'PCK@0.2' in out.stdout + out.stderr
    with open(work / 'test' / 'cape_metrics.json', encoding='utf-8') as f:
        metrics = json.load(f)['metrics']
    assert metrics['num_pairs'] > 0
    assert 0.0 <= metrics['PCK@0.2'] <= 100.0
