"""Process-level setup shared by the tools: registries, default scope, distributed init, resume."""
import datetime
import logging
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


def launch_world_size(launcher: str) -> int:
    """Number of training processes the launcher starts (before the process group exists)."""
    if launcher == 'none':
        return 1
    if 'WORLD_SIZE' in os.environ:
        return int(os.environ['WORLD_SIZE'])
    # set by the launcher before mmengine's init_dist derives WORLD_SIZE from it
    fallback = {'slurm': 'SLURM_NTASKS', 'mpi': 'OMPI_COMM_WORLD_SIZE'}.get(launcher)
    if fallback is None or fallback not in os.environ:
        raise RuntimeError(f'--launcher {launcher}: the number of processes is unknown (neither '
                           f'WORLD_SIZE nor {fallback or "a launcher variable"} is set)')
    return int(os.environ[fallback])


def keep_total_batch(cfg: Config, world_size: int, batch_size_given: bool = False) -> str:
    """Split ``cfg.total_batch_size`` (episodes per iteration over all processes, the official
    recipe's value) over ``world_size`` processes, or say loudly why the run's total differs.

    * ``total_batch_size`` None or absent: ``train_dataloader.batch_size`` is used per process.
    * ``batch_size_given`` (the user set ``train_dataloader.batch_size`` on the command line):
      that per-process batch is kept.
    * otherwise the per-process batch becomes ``total_batch_size / world_size``; a total that
      does not divide is rounded to the nearest per-process batch (at least 1).

    Returns the log line; a total that differs from ``total_batch_size`` is logged as a warning.
    Records the effective total as ``cfg.effective_total_batch_size``.
    """
    from mmengine.logging import print_log
    loader = cfg.get('train_dataloader')
    total = cfg.get('total_batch_size')
    if not loader or total is None:
        return ''
    total = int(total)
    if not batch_size_given:
        loader['batch_size'] = max(1, round(total / world_size))
    per_process = int(loader['batch_size'])
    cfg['effective_total_batch_size'] = effective = per_process * world_size
    if effective == total:
        msg = (f'total batch {total} episodes = {world_size} process(es) x {per_process} '
               '(the recipe\'s total batch)')
        print_log(msg, logger='current')
        return msg
    why = ('train_dataloader.batch_size was set on the command line' if batch_size_given
           else f'{total} does not divide over {world_size} processes')
    msg = (f'TOTAL BATCH DIFFERS FROM THE RECIPE: {world_size} process(es) x {per_process} = '
           f'{effective} episodes per iteration, the recipe (total_batch_size) is {total} '
           f'({why}). Learning rate and schedule were tuned for {total}; pass --auto-scale-lr '
           'to scale the learning rate, or use a process count that divides it.')
    print_log('!' * 80 + '\n' + msg + '\n' + '!' * 80, logger='current', level=logging.WARNING)
    return msg


def share_episode_seed(cfg: Config) -> None:
    """Give the training sampler the run seed also under ``randomness.diff_rank_seed``.

    With ``diff_rank_seed`` mmengine seeds each rank differently (dropout, workers: different
    random streams per rank, as the official multi-GPU runs had) and passes no seed to samplers.
    :class:`~metapoint.datasets.samplers.EpisodeSampler` needs one seed on every rank to draw the
    same episode list and shard it, so the configured seed is set on the sampler here.
    """
    randomness = cfg.get('randomness') or {}
    loader = cfg.get('train_dataloader')
    if not loader or not randomness.get('diff_rank_seed') or randomness.get('seed') is None:
        return
    sampler = loader.get('sampler')
    if isinstance(sampler, dict) and sampler.get('seed') is None:
        sampler['seed'] = int(randomness['seed'])
