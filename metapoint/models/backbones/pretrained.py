"""Pretrained backbone weights: what a ``pretrained`` value means, where the file is, loading it.

The ``pretrained`` argument of :class:`~.TorchvisionResNet` and :class:`~.TimmBackbone` takes:

* ``None``: random init, logged as a warning (the CPU / synthetic configs say so explicitly);
* ``'torchvision://resnet{18,34,50,101,152}'`` (``TorchvisionResNet`` only): torchvision's
  ImageNet file of that depth in its **V1** version (``ResNet50_Weights.IMAGENET1K_V1``,
  ``resnet50-0676ba61.pth``), the meaning mmcv / mmengine gave the prefix and the weights the
  official CAPE recipes trained from;
* a torchvision weights enum name for the backbone's own depth (``TorchvisionResNet`` only):
  ``'IMAGENET1K_V1'``, ``'IMAGENET1K_V2'``, ``'DEFAULT'`` or ``'ResNet50_Weights.IMAGENET1K_V1'``;
* ``True`` (``TimmBackbone`` only): timm's default pretrained weights of the model name (a tag
  such as ``'resnet50.tv_in1k'`` picks others); ``False`` is random init, like ``None``;
* any other string or path: a local checkpoint file (see :func:`read_checkpoint_state_dict`).

Remote weights are handled in two steps. ``describe_*_weights`` is pure: it validates the value
and returns a :class:`WeightsSource` (weights name, URL, expected cache path) without touching the
network or the file. :func:`fetch_weights` then returns a local file: the cached one when it is
there (read as is, no network), else it downloads into the cache of the library that owns the
weights: torch hub (``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch``) for torchvision
files and timm URL weights, the Hugging Face hub cache (``$HF_HUB_CACHE``, default
``~/.cache/huggingface/hub``) for timm hub weights. A torch hub download is checked against the
sha256 prefix in its file name (torch's ``check_hash``); a file already in the cache is not
re-hashed. When the download fails (no network), :class:`PretrainedWeightsUnavailable` names the
URL, the cache path and the ``--cfg-options`` override that gives a local file instead.

The local-file helpers (:func:`read_checkpoint_state_dict`, :func:`select_backbone_state_dict`,
:func:`load_state_dict_checked`) do the strict loading for both backbones and for
``tools/model_converters/make_backbone_checkpoint.py``.
"""
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

PathLike = Union[str, os.PathLike]
#: What a backbone's ``pretrained`` argument accepts (see the module doc).
PretrainedSpec = Union[None, bool, str, os.PathLike]

RESNET_DEPTHS = (18, 34, 50, 101, 152)
TORCHVISION_PREFIX = 'torchvision://'
#: The key the CAPE configs keep the backbone under, for the ``--cfg-options`` hint.
CFG_OPTION = 'model.backbone.pretrained'

# A torchvision weights enum member, optionally qualified: 'IMAGENET1K_V1', 'DEFAULT',
# 'ResNet50_Weights.IMAGENET1K_V1'. Such strings are never taken for file names.
_ENUM_RE = re.compile(r'^(?:(?P<cls>\w+_Weights)\.)?(?P<member>[A-Z][A-Z0-9_]*)$')
# Files timm's hub repos hold, in the order timm itself tries them.
_HUB_FILES = ('model.safetensors', 'pytorch_model.bin')

# --------------------------------------------------------------------------------------------
# Errors and small helpers
# --------------------------------------------------------------------------------------------

#: Wrapper keys under which training frameworks nest the weights (mmengine / timm train:
#: 'state_dict', DeiT-style: 'model'). Tried in this order; the first one holding a mapping wins.
_NESTED_STATE_KEYS = ('state_dict', 'model')
_MAX_LISTED_KEYS = 20


class StateDictMismatchError(RuntimeError):
    """A checkpoint's keys or tensor shapes do not match the backbone (the offenders are named)."""


class PretrainedWeightsUnavailable(RuntimeError):
    """Named remote weights are not in the cache and could not be downloaded."""


def _list_keys(keys: Iterable[str]) -> str:
    """``'a', 'b', ... (+N more)``: a readable, bounded list of keys for error messages."""
    keys = sorted(keys)
    shown = ', '.join(repr(k) for k in keys[:_MAX_LISTED_KEYS])
    if len(keys) > _MAX_LISTED_KEYS:
        shown += f', ... (+{len(keys) - _MAX_LISTED_KEYS} more)'
    return shown


def check_init_cfg(pretrained: PretrainedSpec, init_cfg) -> None:
    """``pretrained`` and ``init_cfg`` exclude each other (init_cfg would overwrite the loaded
    weights in ``init_weights()``)."""
    if pretrained not in (None, False) and init_cfg is not None:
        raise ValueError('give either `pretrained` or `init_cfg`, not both (init_cfg would '
                         'overwrite the pretrained weights in init_weights())')


def warn_random_init(owner: str, spec: PretrainedSpec = None) -> None:
    """The warning logged when a backbone is built without pretrained weights."""
    print_log(f'{owner}: pretrained={spec!r}, the backbone is randomly initialised. '
              'This is expected only when a full model checkpoint is loaded afterwards '
              '(load_from / --checkpoint) or when training from scratch on purpose.',
              logger='current', level=logging.WARNING)


def disable_backbone_pretrained(model_cfg) -> bool:
    """Set ``model_cfg['backbone']['pretrained'] = None`` in place; True when it was set before.

    For evaluation / inference from a full model checkpoint, which replaces the backbone weights
    anyway: building the model then neither reads nor downloads ImageNet weights.
    """
    backbone = model_cfg.get('backbone') if isinstance(model_cfg, Mapping) else None
    if not isinstance(backbone, Mapping) or backbone.get('pretrained') in (None, False):
        return False
    backbone['pretrained'] = None
    return True


# --------------------------------------------------------------------------------------------
# What a `pretrained` value means (no file read, no network)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightsSource:
    """What a ``pretrained`` value resolves to; built by ``describe_*_weights`` without I/O.

    Attributes:
        kind: ``'random'`` (None / False), ``'file'`` (a local path), ``'torchvision'``
            (a torchvision weights enum), ``'timm-hub'`` (a timm Hugging Face hub repo) or
            ``'timm-url'`` (a timm download URL).
        name: ``'ResNet50_Weights.IMAGENET1K_V1'``, ``'timm/resnet18.a1_in1k'``, a timm URL
            file name, or the local path; None for random init.
        url: where a remote file is downloaded from (for the hub: its first candidate file).
        cache_path: the file a torch hub download lands in; for the hub, the repo's cache folder.
        hash_prefix: sha256 prefix a torch hub download is checked against (None: no check).
        hub_repo, hub_revision, hub_files: the hub repo id, its revision (None: default
            branch) and the candidate file names, tried in order.
    """
    kind: str
    name: Optional[str] = None
    url: Optional[str] = None
    cache_path: Optional[str] = None
    hash_prefix: Optional[str] = None
    hub_repo: Optional[str] = None
    hub_revision: Optional[str] = None
    hub_files: Tuple[str, ...] = ()

    @property
    def is_remote(self) -> bool:
        return self.kind in ('torchvision', 'timm-hub', 'timm-url')


def _torch_hub_file(url: str) -> str:
    """Where torch hub keeps the download of ``url``: ``<torch.hub.get_dir()>/checkpoints/<name>``
    (``get_dir`` follows ``$TORCH_HOME`` at call time)."""
    from urllib.parse import urlparse
    return os.path.join(torch.hub.get_dir(), 'checkpoints', os.path.basename(urlparse(url).path))


def _check_local_spec(pretrained, owner: str, accepted: str, url_note: str) -> WeightsSource:
    """A value that is neither None nor a remote name: a local path, or a clear error.

    ``accepted`` lists the values the calling backbone takes (for a bool), ``url_note`` says
    why a ``scheme://`` string is refused.
    """
    if isinstance(pretrained, bool):
        raise ValueError(f'{owner}: pretrained={pretrained!r} is not supported here; use '
                         f'{accepted}')
    if not isinstance(pretrained, (str, os.PathLike)):
        raise TypeError(f'{owner}: pretrained must be None, a weights name or a local file '
                        f'path, got {type(pretrained).__name__}')
    path = os.fspath(pretrained)
    if '://' in path:
        raise ValueError(f'{owner}: pretrained={path!r}: {url_note}; download other URLs '
                         'yourself and pass the local path')
    return WeightsSource(kind='file', name=path)


_RESNET_ACCEPTED = ("'torchvision://resnet<depth>', a torchvision weights name such as "
                    "'IMAGENET1K_V1', a local checkpoint path, or None for random init")
_RESNET_URL_NOTE = 'only the torchvision:// prefix is understood'
_TIMM_ACCEPTED = ("True (timm's pretrained weights of the model name; a tag picks others, e.g. "
                  "'resnet50.tv_in1k' for torchvision's ImageNet V1 ResNet-50 file), False / "
                  'None (random init) or a local checkpoint path')
_TIMM_URL_NOTE = f'TimmBackbone reads no URL (torchvision:// included); it takes {_TIMM_ACCEPTED}'


def describe_resnet_weights(pretrained: PretrainedSpec, depth: int,
                            owner: Optional[str] = None) -> WeightsSource:
    """Resolve a ``TorchvisionResNet`` ``pretrained`` value for a ResNet of ``depth``; no I/O.

    Raises:
        ValueError: a torchvision name for another depth or architecture, an unknown enum
            member, a bool, or a URL with another scheme (the accepted forms are listed).
    """
    owner = owner or f'TorchvisionResNet-{depth}'
    if pretrained is None:
        return WeightsSource(kind='random')
    from torchvision.models import get_model_weights
    weights_cls = get_model_weights(f'resnet{depth}')  # e.g. ResNet50_Weights
    members = ', '.join(repr(m) for m in weights_cls.__members__)
    weights = None
    if isinstance(pretrained, str) and pretrained.startswith(TORCHVISION_PREFIX):
        arch = pretrained[len(TORCHVISION_PREFIX):]
        known = [f'resnet{d}' for d in RESNET_DEPTHS]
        if arch not in known:
            raise ValueError(f'{owner}: pretrained={pretrained!r}: the torchvision:// prefix '
                             f'takes one of {known}')
        if arch != f'resnet{depth}':
            raise ValueError(f'{owner}: pretrained={pretrained!r} holds {arch} weights, but this '
                             f"backbone has depth={depth}; use 'torchvision://resnet{depth}'")
        weights = weights_cls.IMAGENET1K_V1  # mmcv / mmengine's meaning of the prefix
    elif isinstance(pretrained, str) and _ENUM_RE.match(pretrained):
        match = _ENUM_RE.match(pretrained)
        cls_name, member = match.group('cls'), match.group('member')
        if cls_name is not None and cls_name != weights_cls.__name__:
            raise ValueError(f'{owner}: pretrained={pretrained!r} names {cls_name} weights, but '
                             f'this backbone takes {weights_cls.__name__} (members: {members})')
        if member not in weights_cls.__members__:
            raise ValueError(f'{owner}: pretrained={pretrained!r} is not a member of '
                             f'{weights_cls.__name__} (members: {members})')
        weights = weights_cls[member]
    if weights is None:
        return _check_local_spec(pretrained, owner, _RESNET_ACCEPTED, _RESNET_URL_NOTE)
    match = torch.hub.HASH_REGEX.search(os.path.basename(weights.url))
    return WeightsSource(kind='torchvision', name=f'{weights_cls.__name__}.{weights.name}',
                         url=weights.url, cache_path=_torch_hub_file(weights.url),
                         hash_prefix=match.group(1) if match else None)


def describe_timm_weights(pretrained: PretrainedSpec, model_name: str,
                          owner: Optional[str] = None) -> WeightsSource:
    """Resolve a ``TimmBackbone`` ``pretrained`` value for timm model ``model_name``; no I/O.

    ``True`` picks the source timm itself would use: the Hugging Face hub repo of the model's
    pretrained config when it has one, else its download URL.

    Raises:
        ValueError: ``True`` for a model (or tag) without pretrained weights in timm, or a URL.
    """
    owner = owner or f'TimmBackbone({model_name!r})'
    if pretrained is None or pretrained is False:
        return WeightsSource(kind='random')
    if pretrained is not True:
        return _check_local_spec(pretrained, owner, _TIMM_ACCEPTED, _TIMM_URL_NOTE)
    import timm.models
    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as err:  # an unknown pretrained tag
        raise ValueError(f'{owner}: pretrained=True: {err}') from err
    if cfg is None or not (cfg.hf_hub_id or cfg.url):
        raise ValueError(f'{owner}: pretrained=True, but timm has no pretrained weights for '
                         f'{model_name!r}; pass a local checkpoint path or None')
    if cfg.hf_hub_id:
        from huggingface_hub import constants, hf_hub_url
        from huggingface_hub.file_download import repo_folder_name
        repo, _, revision = cfg.hf_hub_id.partition('@')
        files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HUB_FILES
        return WeightsSource(
            kind='timm-hub', name=cfg.hf_hub_id,
            url=hf_hub_url(repo, files[0], revision=revision or None),
            cache_path=os.path.join(constants.HF_HUB_CACHE,
                                    repo_folder_name(repo_id=repo, repo_type='model')),
            hub_repo=repo, hub_revision=revision or None, hub_files=files)
    # timm does not check the hash of its URL weights (not every name carries a sha256 prefix)
    return WeightsSource(kind='timm-url', name=os.path.basename(cfg.url), url=cfg.url,
                         cache_path=_torch_hub_file(cfg.url))


# --------------------------------------------------------------------------------------------
# Getting the file: cache first, else download
# --------------------------------------------------------------------------------------------


def _unavailable(source: WeightsSource, spec: str, owner: str, err: BaseException,
                 local_name: str, cache_note: str) -> PretrainedWeightsUnavailable:
    return PretrainedWeightsUnavailable(
        f'{owner}: pretrained={spec} means the weights {source.name} ({source.url}). They are '
        f'not in the cache ({source.cache_path}) and the download failed: '
        f'{type(err).__name__}: {err}\n'
        f'Offline, either copy the file there ({cache_note}) or give a local copy:\n'
        f'    --cfg-options {CFG_OPTION}=/path/to/{local_name}\n'
        f'({CFG_OPTION}=None trains from random init instead.)')


def _download_to_torch_hub(source: WeightsSource, spec: str, owner: str) -> None:
    """Download ``source.url`` to ``source.cache_path`` (torch hub's downloader: temporary file,
    sha256 prefix check, then rename), or raise :class:`PretrainedWeightsUnavailable`."""
    os.makedirs(os.path.dirname(source.cache_path), exist_ok=True)
    print_log(f'{owner}: downloading {source.name} from {source.url} to {source.cache_path}',
              logger='current', level=logging.INFO)
    try:
        torch.hub.download_url_to_file(source.url, source.cache_path, source.hash_prefix,
                                       progress=True)
    except Exception as err:  # URLError, HTTPError, timeouts, a hash mismatch (RuntimeError)
        raise _unavailable(source, spec, owner, err, os.path.basename(source.cache_path),
                           'the folder is $TORCH_HOME/hub/checkpoints, TORCH_HOME defaults '
                           'to ~/.cache/torch') from err


def _hub_cached_file(source: WeightsSource) -> Optional[str]:
    from huggingface_hub import constants, try_to_load_from_cache
    for name in source.hub_files:
        path = try_to_load_from_cache(source.hub_repo, name, cache_dir=constants.HF_HUB_CACHE,
                                      revision=source.hub_revision)
        if isinstance(path, str):
            return path
    return None


def _hub_entry_errors() -> Tuple[type, type]:
    """``(EntryNotFoundError, LocalEntryNotFoundError)`` of the installed huggingface_hub.

    ``hf_hub_download`` raises an ``EntryNotFoundError`` when the repo lacks the file, and its
    subclass ``LocalEntryNotFoundError`` when the file is not cached and the hub cannot be
    reached; recent versions name the first case ``RemoteEntryNotFoundError``. Both names exist
    in ``huggingface_hub.errors`` (recent versions) or ``huggingface_hub.utils`` (older ones).
    """
    try:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:  # huggingface_hub without the `errors` module
        from huggingface_hub.utils import EntryNotFoundError, LocalEntryNotFoundError
    return EntryNotFoundError, LocalEntryNotFoundError


def _hub_unavailable(source: WeightsSource, spec: str, owner: str,
                     err: BaseException) -> PretrainedWeightsUnavailable:
    return _unavailable(source, spec, owner, err, source.hub_files[0],
                        f'with `huggingface-cli download {source.hub_repo}` on a machine with '
                        'network, then copy the cache folder; HF_HUB_CACHE / HF_HOME choose it')


def _download_from_hub(source: WeightsSource, spec: str, owner: str) -> str:
    """The first of ``source.hub_files`` the repo holds, downloaded into the hub cache."""
    import huggingface_hub
    missing_file, not_cached = _hub_entry_errors()
    print_log(f'{owner}: downloading {source.name} from the Hugging Face hub to '
              f'{source.cache_path}', logger='current', level=logging.INFO)
    for name in source.hub_files:
        try:
            return huggingface_hub.hf_hub_download(
                source.hub_repo, name, revision=source.hub_revision,
                cache_dir=huggingface_hub.constants.HF_HUB_CACHE)
        except Exception as err:
            if isinstance(err, missing_file) and not isinstance(err, not_cached):
                continue  # the repo has no such file: try the next name
            # offline mode (not cached), connection errors, other HTTP errors
            raise _hub_unavailable(source, spec, owner, err) from err
    raise PretrainedWeightsUnavailable(f'{owner}: the hub repo {source.hub_repo} holds none of '
                                       f'{list(source.hub_files)}')


def _is_cached(source: WeightsSource) -> Optional[str]:
    if source.kind == 'timm-hub':
        return _hub_cached_file(source)
    return source.cache_path if os.path.isfile(source.cache_path) else None


def _node_local_rank(rank: int, world_size: int) -> int:
    """This process's rank among the processes on its node, taken from the process group.

    mmengine's local process group when one was set up (``mmengine.dist.init_local_group``);
    otherwise (mmengine's ``init_dist`` creates none) the ranks are grouped by host name with an
    all-gather over the default group, so every rank must call this. The ``LOCAL_RANK``
    variable is not used: ``tools/train.py`` sets it to 0 where the launcher (mpi) does not.
    """
    from mmengine import dist as mm_dist
    try:
        return mm_dist.get_local_rank()
    except RuntimeError:  # 'Local process group is not created'
        pass
    import socket
    hosts = [None] * world_size
    torch.distributed.all_gather_object(hosts, socket.gethostname())
    return hosts[:rank].count(hosts[rank])


def _download(source: WeightsSource, spec: str, owner: str) -> None:
    if source.kind == 'timm-hub':
        _download_from_hub(source, spec, owner)
    else:
        _download_to_torch_hub(source, spec, owner)


def fetch_weights(source: WeightsSource, spec: PretrainedSpec = None,
                  owner: str = 'backbone') -> str:
    """The local file of ``source``: the path itself, the cached file, or a fresh download.

    In a process group of several ranks every rank calls this once and reaches one barrier,
    whatever its cache holds: local rank 0 of each node checks the cache and downloads on a
    miss, the others wait, then all read the cached file. An error of the downloading rank is
    raised there after the barrier; the other ranks then find no file and raise
    :class:`PretrainedWeightsUnavailable`, so that no rank waits forever.

    Raises:
        ValueError: ``source`` is random init (there is no file).
        PretrainedWeightsUnavailable: a remote file that is not cached and cannot be downloaded.
    """
    if source.kind == 'random':
        raise ValueError(f'{owner}: random init has no weights file')
    if source.kind == 'file':
        return os.path.expanduser(source.name)
    spec = repr(spec) if spec is not None else repr(source.name)
    from mmengine import dist as mm_dist
    rank, world_size = mm_dist.get_dist_info()  # (0, 1) without a process group
    if world_size == 1:
        cached = _is_cached(source)
        if cached is not None:
            return cached
        _download(source, spec, owner)
    else:
        error = None
        if _node_local_rank(rank, world_size) == 0:
            try:
                if _is_cached(source) is None:
                    _download(source, spec, owner)
            except Exception as err:  # also OSError / ImportError: raised after the barrier
                error = err
        mm_dist.barrier()
        if error is not None:
            raise error
    cached = _is_cached(source)
    if cached is None:  # the download on local rank 0 of this node failed
        raise PretrainedWeightsUnavailable(
            f'{owner}: pretrained={spec} means the weights {source.name} ({source.url}), which '
            f'are still not in the cache ({source.cache_path}) after local rank 0 of this node '
            f'tried to download them; see its error, or pass a local copy with '
            f'--cfg-options {CFG_OPTION}=/path/to/file')
    return cached


def weights_origin(source: WeightsSource, path: str) -> str:
    """``"'ResNet50_Weights.IMAGENET1K_V1' (<cache path>)"`` or the local path, for messages."""
    return repr(path) if source.kind == 'file' else f'{source.name!r} ({path})'


# --------------------------------------------------------------------------------------------
# Reading and loading local files
# --------------------------------------------------------------------------------------------


def read_checkpoint_state_dict(path: PathLike) -> Dict[str, torch.Tensor]:
    """Read the tensors of a local checkpoint file.

    Accepts a plain state dict (torchvision / timm files), a training checkpoint that nests it
    under ``'state_dict'`` (mmengine, timm train) or ``'model'``, and ``.safetensors`` files. The
    file is read with ``torch.load(..., map_location='cpu', weights_only=True)``.

    Raises:
        FileNotFoundError: ``path`` is not an existing file.
        ValueError: the file holds no mapping of tensors.
    """
    path = os.path.expanduser(os.fspath(path))
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'pretrained checkpoint not found: {path!r}. A `pretrained` value other than None, '
            "'torchvision://resnet<depth>', a torchvision weights name or True (timm) is read "
            'as a local file.')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file
        ckpt = load_file(path, device='cpu')
    else:
        from metapoint.utils.setup_env import allow_mmengine_checkpoint_globals
        allow_mmengine_checkpoint_globals()  # mmengine checkpoints carry a message hub
        try:
            ckpt = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as err:  # UnpicklingError and friends: say which file and why
            raise RuntimeError(
                f'could not read checkpoint {path!r} with torch.load(weights_only=True): '
                f'{err}') from err
    for key in _NESTED_STATE_KEYS:
        if isinstance(ckpt, Mapping) and isinstance(ckpt.get(key), Mapping):
            ckpt = ckpt[key]
            break
    if not isinstance(ckpt, Mapping):
        raise ValueError(f'checkpoint {path!r} holds a {type(ckpt).__name__}, not a state dict')
    state = {k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f'checkpoint {path!r} holds no tensors (keys: {_list_keys(ckpt)})')
    return state


def _strip_common_prefix(state: Dict[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    """Remove ``prefix`` from every key when all keys carry it (e.g. DDP's ``module.``)."""
    if state and all(k.startswith(prefix) for k in state):
        return {k[len(prefix):]: v for k, v in state.items()}
    return state


def select_backbone_state_dict(state: Dict[str, torch.Tensor], source: str = '',
                               prefixes: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """The backbone part of a checkpoint's state dict, with wrapper prefixes removed.

    * a ``module.`` prefix on every key (DDP) is removed;
    * when some keys start with ``backbone.`` (a full detector / CAPE model checkpoint), only
      those are kept, without the prefix; the other keys (heads, necks) are dropped with a note;
    * each of ``prefixes`` (e.g. the attribute a wrapper stores its model under) is then removed
      when every remaining key carries it.
    """
    state = _strip_common_prefix(state, 'module.')
    if any(k.startswith('backbone.') for k in state):
        others = [k for k in state if not k.startswith('backbone.')]
        state = {k[len('backbone.'):]: v for k, v in state.items() if k.startswith('backbone.')}
        if others:
            print_log(f'{source}: using the {len(state)} `backbone.*` tensors of the checkpoint, '
                      f'ignoring {len(others)} other keys ({_list_keys(others)})',
                      logger='current', level=logging.INFO)
        state = _strip_common_prefix(state, 'module.')
    for prefix in prefixes:
        state = _strip_common_prefix(state, prefix)
    return state


def load_state_dict_checked(module: nn.Module, state: Dict[str, torch.Tensor],
                            source: str = 'checkpoint') -> None:
    """Load ``state`` into ``module`` with strict key and shape checks and readable errors.

    Missing BatchNorm ``num_batches_tracked`` buffers (absent from old torchvision files) are
    filled with 0; any other missing or unexpected key, or a shape mismatch, raises.

    Raises:
        StateDictMismatchError: keys missing from ``state`` or not expected by ``module``, or
            tensors whose shape differs from the module's (the keys and shapes are listed).
    """
    expected = module.state_dict()
    state = dict(state)
    for key in expected:
        if key not in state and key.endswith('num_batches_tracked'):
            state[key] = torch.zeros_like(expected[key])
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f'missing keys ({len(missing)}): {_list_keys(missing)}')
        if unexpected:
            parts.append(f'unexpected keys ({len(unexpected)}): {_list_keys(unexpected)}')
        raise StateDictMismatchError(
            f'{source} does not match {type(module).__name__}: ' + '; '.join(parts))
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        listed = ', '.join(f'{k!r}: checkpoint {a} vs model {b}' for k, a, b in wrong[:10])
        more = f' (+{len(wrong) - 10} more)' if len(wrong) > 10 else ''
        raise StateDictMismatchError(f'{source}: shape mismatch for {len(wrong)} tensors of '
                                     f'{type(module).__name__}: {listed}{more}')
    module.load_state_dict(state, strict=True)


def read_fetched_state_dict(source: WeightsSource, path: str) -> Dict[str, torch.Tensor]:
    """:func:`read_checkpoint_state_dict`, with a hint to delete a cached file that is corrupt."""
    try:
        return read_checkpoint_state_dict(path)
    except (RuntimeError, ValueError) as err:
        if not source.is_remote:
            raise
        raise RuntimeError(f'{err}\nThe cached file of {source.name} looks damaged: delete '
                           f'{path!r} to download it again.') from err


__all__ = [
    'CFG_OPTION', 'PathLike', 'PretrainedSpec', 'PretrainedWeightsUnavailable',
    'StateDictMismatchError', 'TORCHVISION_PREFIX', 'WeightsSource', 'check_init_cfg',
    'describe_resnet_weights', 'describe_timm_weights', 'disable_backbone_pretrained',
    'fetch_weights', 'load_state_dict_checked', 'read_checkpoint_state_dict',
    'read_fetched_state_dict', 'select_backbone_state_dict', 'warn_random_init',
    'weights_origin'
]
