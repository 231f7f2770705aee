"""A quiet console for the command-line tools; the log file keeps everything.

mmengine's ``Runner`` logs, at INFO level, a dump of the system and runtime environment, the whole
config, the hook table, one line per parameter option of the optimizer constructor, and a few
warnings about mmengine's own internals. On the console this buries the progress (iteration and
epoch lines, checkpoints saved, evaluation results). :func:`quiet_console` adds a filter to the
console handler of an ``MMLogger`` that drops those records; the file handler (the run's
``<work_dir>/<timestamp>/<timestamp>.log``) has no such filter and receives every record.

``tools/train.py`` and ``tools/test.py`` build their runner with :func:`build_runner`, quiet unless
``--verbose`` is given (docs/engine.md, "Console output").
"""
import functools
import logging
from typing import List, Optional, Sequence

from mmengine.logging import MMLogger

#: INFO records kept off the console, by the start of their message, with the mmengine code that
#: logs them
CONSOLE_NOISE_INFO = (
    '\n' + '-' * 60 + '\nSystem environment:',  # Runner._log_env: the environment dump
    'Config:\n',  # Runner._log_env: the whole config (also dumped to the work dir)
    'Hooks will be executed in the following order:',  # Runner.__init__: the hook table
    'paramwise_options -- ',  # DefaultOptimWrapperConstructor: one line per parameter option
    'Distributed training is not used, all SyncBatchNorm',  # Runner.wrap_model on one process
)
#: WARNING records kept off the console: mmengine talking about its own internals, nothing a user
#: of this repository can act on (every other warning is shown)
CONSOLE_NOISE_WARNING = (
    'Failed to search registry with scope ',  # the registry fell back to mmengine's, as intended
    'The prefix is not set in metric class ',  # BaseMetric without default_prefix
    '"FileClient" will be deprecated in future',  # mmengine's checkpoint hook
    '"HardDiskBackend" is the alias of "LocalBackend"',  # mmengine's checkpoint hook
)
#: the end of the optimizer constructor's WARNING for each frozen parameter (one per tensor)
FROZEN_PARAMETER = 'is skipped since its requires_grad=False'
#: the start of the table CAPEMetric logs after an evaluation (coverage line, per-category
#: PCK); tools/test.py prints it again below the summary table, so its console drops this copy
METRIC_TABLE = ('\nEvaluated ', '\nPer-category ')


def _message(record: logging.LogRecord) -> Optional[str]:
    try:
        return record.getMessage()
    except Exception:  # a malformed record is shown as is
        return None


def is_console_noise(record: logging.LogRecord) -> bool:
    """Whether ``record`` is one of the known noise records (never an ERROR or worse)."""
    message = _message(record)
    if message is None or record.levelno > logging.WARNING:
        return False
    if record.levelno <= logging.INFO:
        return message.startswith(CONSOLE_NOISE_INFO)
    return message.startswith(CONSOLE_NOISE_WARNING) or message.endswith(FROZEN_PARAMETER)


class ConsoleNoiseFilter(logging.Filter):
    """Drops the records :func:`is_console_noise` names, and INFO records that start with one of
    ``extra_info``; meant for a console handler only."""

    def __init__(self, extra_info: Sequence[str] = ()) -> None:
        super().__init__()
        self.extra_info = tuple(extra_info)

    def filter(self, record: logging.LogRecord) -> bool:
        if is_console_noise(record):
            return False
        if self.extra_info and record.levelno == logging.INFO:
            message = _message(record)
            return message is None or not message.startswith(self.extra_info)
        return True


def console_handlers(logger: logging.Logger) -> List[logging.Handler]:
    """The handlers of ``logger`` that write to a stream other than a file."""
    return [h for h in logger.handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def quiet_console(logger: Optional[logging.Logger] = None,
                  extra_info: Sequence[str] = ()) -> logging.Logger:
    """Give the console handler(s) of ``logger`` (default: the current ``MMLogger``) one
    :class:`ConsoleNoiseFilter`; ``extra_info``: more INFO message starts to drop (added to those
    of a filter already there). File handlers are left alone. Returns the logger."""
    logger = logger if logger is not None else MMLogger.get_current_instance()
    for handler in console_handlers(logger):
        present = [f for f in handler.filters if isinstance(f, ConsoleNoiseFilter)]
        if present:
            present[0].extra_info = tuple(dict.fromkeys(present[0].extra_info +
                                                        tuple(extra_info)))
        else:
            handler.addFilter(ConsoleNoiseFilter(extra_info))
    return logger


@functools.lru_cache(maxsize=None)
def quiet_runner_class() -> type:
    """``QuietConsoleRunner``: a ``Runner`` whose logger has a quiet console from its first record
    on (the environment and config dumps are logged while the runner is built). Made on first use,
    so that importing ``metapoint.utils`` does not import ``mmengine.runner``."""
    from mmengine.runner import Runner

    class QuietConsoleRunner(Runner):

        def build_logger(self, *args, **kwargs) -> MMLogger:
            return quiet_console(super().build_logger(*args, **kwargs))

    return QuietConsoleRunner


def build_runner(cfg, verbose: bool = False):
    """``Runner.from_cfg(cfg)``; with a quiet console unless ``verbose``.

    The runner logs a few records (registry fall-backs) through the current logger before it has
    its own; that logger's console is made quiet as well.
    """
    from mmengine.runner import Runner
    if verbose:
        return Runner.from_cfg(cfg)
    quiet_console(MMLogger.get_current_instance())
    return quiet_runner_class().from_cfg(cfg)
