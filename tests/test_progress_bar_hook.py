"""The evaluation progress bar counts one step per evaluated batch and closes after the loop."""
from types import SimpleNamespace

from metapoint.engine import EvalProgressBarHook


def test_progress_bar_counts_batches_and_closes():
    runner = SimpleNamespace(test_loop=SimpleNamespace(dataloader=[0] * 7))
    hook = EvalProgressBarHook(mininterval=0)
    hook.before_test_epoch(runner)
    bar = hook._bar
    for i in range(7):
        hook.after_test_iter(runner, i)
    assert bar.n == 7 and bar.total == 7
    hook.after_test_epoch(runner)
    assert hook._bar is None


def test_progress_bar_can_be_disabled():
    runner = SimpleNamespace(val_loop=SimpleNamespace(dataloader=[0] * 3))
    hook = EvalProgressBarHook(enabled=False)
    hook.before_val_epoch(runner)
    hook.after_val_iter(runner, 0)
    assert hook._bar is None
