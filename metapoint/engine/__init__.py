"""Runner-side pieces: model wrapper for CPU / parameter-free DDP, evaluation progress bar,
episode pictures during validation / test."""
from .mixed_precision import AutocastOptimWrapper
from .model_wrapper import CAPEDistributedDataParallel
from .progress_bar_hook import EvalProgressBarHook
from .visualization_hook import CAPEVisualizationHook

__all__ = ['AutocastOptimWrapper', 'CAPEDistributedDataParallel', 'EvalProgressBarHook',
           'CAPEVisualizationHook']
