"""A progress bar over evaluation episodes (validation and test loops), on rank 0 only."""
from typing import Optional

from mmengine.dist import get_rank
from mmengine.hooks import Hook
from tqdm import tqdm

from metapoint.registry import HOOKS


@HOOKS.register_module()
class EvalProgressBarHook(Hook):
    """Show a tqdm bar while a ``ValLoop`` / ``TestLoop`` runs (one step per batch of episodes).

    Args:
        enabled: switch the bar off (e.g. ``--cfg-options custom_hooks.0.enabled=False``).
        mininterval: minimum seconds between redraws (keeps non-interactive logs short).
    """

    priority = 'VERY_LOW'

    def __init__(self, enabled: bool = True, mininterval: float = 5.0) -> None:
        self.enabled = enabled
        self.mininterval = mininterval
        self._bar: Optional[tqdm] = None

    def _open(self, runner, loop_name: str) -> None:
        if not self.enabled or get_rank() != 0:
            return
        loop = getattr(runner, f'{loop_name}_loop')
        self._bar = tqdm(total=len(loop.dataloader), desc=f'{loop_name} episodes', unit='batch',
                         mininterval=self.mininterval, dynamic_ncols=True, leave=False)

    def _step(self) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def _close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def before_val_epoch(self, runner) -> None:
        self._open(runner, 'val')

    def before_test_epoch(self, runner) -> None:
        self._open(runner, 'test')

    def after_val_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step()

    def after_test_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._step()

    def after_val_epoch(self, runner, metrics=None) -> None:
        self._close()

    def after_test_epoch(self, runner, metrics=None) -> None:
        self._close()
