"""Runner-side pieces: model wrapper for CPU / parameter-free DDP."""
from .model_wrapper import CAPEDistributedDataParallel

__all__ = ['CAPEDistributedDataParallel']
