"""Runner-side pieces: model wrapper for CPU / parameter-free DDP, evaluation progress bar."""
from .model_wrapper import CAPEDistributedDataParallel
from .progress_bar_hook import EvalProgressBarHook

__all__ = ['CAPEDistributedDataParallel', 'EvalProgressBarHook']
