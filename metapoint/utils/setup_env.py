"""Process-level setup shared by the tools: registries, default scope, distributed init, resume."""
import datetime
import os
import warnings

import numpy as np
import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.registry import DefaultScope


def register_all_modules(init_default_scope: bool = True) -> None:
    """Import every module that registers something, and set the ``metapoint`` default scope."""
    import metapoint.datasets  # noqa: F401
    import metapoint.engine  # noqa: F401
    import metapoint.evaluation  # noqa: F401
    import metapoint.models  # noqa: F401
    import metapoint.visualization  # noqa: F401
    allow_mmengine_checkpoint_globals()
    if init_default_scope:
        never_created = (DefaultScope.get_current_instance() is None
                         or not DefaultScope.check_instance_created('metapoint'))
        if never_created:
            DefaultScope.get_instance('metapoint', scope_name='metapoint')
            return
        current = DefaultScope.get_current_instance()
        if current.scope_name != 'metapoint':
            warnings.warn(f'The current default scope "{current.scope_name}" is not '
                          '"metapoint"; switching to it.')
            new_name = f'metapoint-{datetime.datetime.now()}'
            DefaultScope.get_instance(new_name, scope_name='metapoint')


def allow_mmengine_checkpoint_globals() -> None:
    """Let ``torch.load(weights_only=True)`` read mmengine checkpoints (torch >= 2.6).

    mmengine 0.10.7 saves its message hub (``HistoryBuffer`` objects holding numpy arrays) and numpy
    scalars in the checkpoint; torch's safe unpickler refuses those classes. We allow-list exactly
    these data-only classes instead of turning ``weights_only`` off.

    ``HistoryBuffer.__getstate__`` also pickles its statistic *functions* (``min``, ``mean``, ...)
    through ``builtins.getattr``, which we do not allow-list (it would let a file reach attributes of
    allowed classes). Those functions are class-level defaults re-created on load anyway, so
    checkpoints written here store the buffer's data only.
    """
    if not hasattr(torch.serialization, 'add_safe_globals'):
        return
    from mmengine.logging import HistoryBuffer
    multiarray = getattr(np, '_core', None) or np.core
    safe = [HistoryBuffer, np.ndarray, np.dtype, multiarray.multiarray._reconstruct,
            multiarray.multiarray.scalar]
    safe += [type(np.dtype(t)) for t in ('float64', 'float32', 'float16', 'int64', 'int32',
                                         'int16', 'int8', 'uint8', 'bool')]
    torch.serialization.add_safe_globals(safe)
    if not getattr(HistoryBuffer, '_metapoint_data_only_state', False):
        HistoryBuffer.__getstate__ = _history_buffer_data_state
        HistoryBuffer._metapoint_data_only_state = True


def _history_buffer_data_state(self) -> dict:
    """Pickled state of an mmengine ``HistoryBuffer`` without its statistic functions."""
    return {k: v for k, v in self.__dict__.items() if k != 'statistics_methods'}


def setup_cpu_distributed(cfg: Config, launcher: str) -> None:
    """Make ``--launcher pytorch|slurm`` work without CUDA, using the gloo backend.

    mmengine's ``init_dist`` calls ``torch.cuda.set_device`` unconditionally; on a CPU-only
    machine we initialise the process group ourselves (mmengine then skips its own init) and make
    the model wrapper accept CPU modules. On CUDA machines the config's backend (nccl) is used.
    """
    if launcher == 'none':
        return
    cfg.setdefault('model_wrapper_cfg', dict(type='metapoint.CAPEDistributedDataParallel'))
    if torch.cuda.is_available():
        return
    env_cfg = cfg.setdefault('env_cfg', {})
    env_cfg.setdefault('dist_cfg', {})['backend'] = 'gloo'
    if torch_dist.is_available() and torch_dist.is_initialized():
        return
    if launcher == 'slurm':
        _slurm_env_to_torch_env()
    elif launcher != 'pytorch':
        raise ValueError(f'launcher {launcher!r} without CUDA: use pytorch (torchrun) or slurm')
    timeout = env_cfg.get('dist_cfg', {}).get('timeout', 1800)
    torch_dist.init_process_group(backend='gloo', timeout=datetime.timedelta(seconds=timeout))


def teardown_distributed() -> None:
    """Wait for every rank, then destroy the process group before the interpreter exits.

    Left to interpreter shutdown, a gloo process group can be torn down while its worker threads
    are still joinable, which aborts a rank ("terminate called without an active exception")
    after the job itself has finished. No-op when no process group is initialised.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


def _slurm_env_to_torch_env() -> None:
    """Translate SLURM variables into the env:// rendezvous variables torch expects."""
    import subprocess
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ.get('SLURM_LOCALID', '0'))
    if 'MASTER_ADDR' not in os.environ:
        node_list = os.environ['SLURM_NODELIST']
        os.environ['MASTER_ADDR'] = subprocess.getoutput(
            f'scontrol show hostname {node_list} | head -n1')
    os.environ.setdefault('MASTER_PORT', '29500')
