"""Shared pytest fixtures: repository paths, a tiny MP-100-style COCO factory, log capture."""
import logging
import sys
from pathlib import Path

import pytest

_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:  # `import metapoint` / `tests.helpers` under any pytest import mode
    sys.path.insert(0, _REPO)

from tests.helpers import MISSING_DATA, REPO, SHARED, write_tiny_coco  # noqa: E402

__all__ = ['REPO', 'SHARED']


@pytest.fixture
def tiny_coco(tmp_path):
    """Factory: ``tiny_coco(mutate=None)`` writes the tiny set under a fresh folder of tmp_path.

    Returns a :class:`tests.helpers.TinyCoco` (paths, the written COCO dict, annotation -> image
    path). ``mutate(data)`` edits the COCO dict before it is written, so a test changes one thing.
    """
    counter = [0]

    def make(mutate=None, seed=0):
        counter[0] += 1
        return write_tiny_coco(tmp_path / f'tiny{counter[0]}', mutate=mutate, seed=seed)

    return make


@pytest.fixture
def mm_logs():
    """Records logged through mmengine's current MMLogger during the test (``print_log``)."""
    from mmengine.logging import MMLogger
    logger = MMLogger.get_current_instance()
    records = []

    class _Collect(logging.Handler):

        def emit(self, record):
            records.append(record)

    handler = _Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


# ------------------------------------------------------------- skips for missing optional data
def pytest_addoption(parser):
    group = parser.getgroup('metapoint')
    group.addoption('--expect-data-skips', type=int, default=None,
                    help='fail the run unless exactly this many tests skip for missing '
                    'optional test data (bash scripts.sh test passes the number in '
                    'docs/testing.md)')
    group.addoption('--data-skips-out', default=None,
                    help='write the ids of the tests skipped for missing optional data here')


_DATA_SKIPS = []


def pytest_runtest_logreport(report):
    if report.skipped and MISSING_DATA in str(report.longrepr):
        _DATA_SKIPS.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    out = config.getoption('--data-skips-out')
    if out:
        Path(out).write_text(''.join(f'{n}\n' for n in sorted(set(_DATA_SKIPS))))
    expected = config.getoption('--expect-data-skips')
    if expected is not None and len(set(_DATA_SKIPS)) != expected:
        print(f'\n{len(set(_DATA_SKIPS))} tests skipped for missing optional test data, '
              f'docs/testing.md says {expected}: update one or the other')
        session.exitstatus = 1
