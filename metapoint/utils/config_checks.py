"""Config keys are checked, never silently ignored.

* :func:`merge_options` fills an option group (``decoder_cfg``, ``loss_cfg``, ...) from its
  defaults and rejects keys the group does not define.
* :func:`check_init_keys` compares a registry config (``dict(type=..., **kwargs)``) with the
  constructor of the class it names; :func:`build_model_checked` is the ``build_func`` of our
  model registry, so every module built from a config inside a model (backbone, neck, predictor)
  is checked before it is constructed.

Both raise :class:`UnknownConfigKeyError` (a ``KeyError``) naming the config, the unknown keys,
the closest valid spelling and the full list of valid keys.
"""
import difflib
import inspect
from typing import Iterable, Mapping, Optional

from mmengine.registry import build_model_from_cfg


class UnknownConfigKeyError(KeyError, ValueError):
    """A config holds keys that its consumer does not define."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def _unknown_key_message(owner: str, unknown: Iterable[str], valid: Iterable[str]) -> str:
    valid = sorted(valid)
    parts = []
    for key in sorted(unknown):
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
        parts.append(f'{key!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
    return f'{owner}: unknown key(s) {", ".join(parts)}; valid keys: {", ".join(valid)}'


def merge_options(owner: str, defaults: Mapping, given: Optional[Mapping]) -> dict:
    """``defaults`` updated with ``given``; a key of ``given`` absent from ``defaults`` raises.

    Args:
        owner: how the group is named in the error, e.g. ``'MetaPoint decoder_cfg'``.
        defaults: every valid key with its default value.
        given: the user's values (None = all defaults).
    """
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise UnknownConfigKeyError(_unknown_key_message(owner, unknown, defaults))
    return {**defaults, **given}


def init_arguments(cls) -> Optional[set]:
    """Keyword names ``cls(...)`` accepts, or None when it takes ``**kwargs`` (anything goes)."""
    params = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)}


def check_init_keys(cfg: Mapping, registry, default_args: Optional[Mapping] = None) -> None:
    """Raise when ``cfg`` (``type`` + constructor arguments) has keys the class cannot take."""
    obj_type = cfg.get('type')
    if not isinstance(obj_type, str) and not inspect.isclass(obj_type):
        return  # functions and pre-built objects are left to the registry
    cls = registry.get(obj_type) if isinstance(obj_type, str) else obj_type
    if cls is None or not inspect.isclass(cls):
        return  # the registry reports unknown types itself
    valid = init_arguments(cls)
    if valid is None:
        return
    given = set(cfg) - {'type', '_scope_'}
    given |= set(default_args or {})
    unknown = given - valid
    if unknown:
        raise UnknownConfigKeyError(_unknown_key_message(
            f'{cls.__name__} config (type={cls.__name__!r})', unknown, valid))


def build_model_checked(cfg, registry, default_args=None):
    """mmengine's model builder, after :func:`check_init_keys` on every dict config."""
    if isinstance(cfg, Mapping):
        check_init_keys(cfg, registry, default_args)
    elif isinstance(cfg, (list, tuple)):
        for item in cfg:
            if isinstance(item, Mapping):
                check_init_keys(item, registry, default_args)
    return build_model_from_cfg(cfg, registry, default_args)


def check_model_config(cfg) -> None:
    """Check the top-level ``cfg.model`` of a full config against its estimator's constructor.

    mmengine's Runner builds the top-level model through the root registry; the nested modules
    are checked by :func:`build_model_checked` as the estimator builds them.
    """
    from metapoint.registry import MODELS
    if isinstance(cfg.get('model'), Mapping):
        check_init_keys(cfg.model, MODELS)
