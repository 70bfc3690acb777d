"""Configuration: defaults live next to each component; unknown keys are an error, never ignored.

A component declares ``default_conf`` (a nested dict, a comment per key) and receives only its own section.
:func:`resolve_conf` merges a user section into the defaults with OmegaConf in struct mode, so a typo such as
``max_keypionts`` raises :class:`ConfigError` naming the valid keys, and so does a value of the wrong type (the
type is the default's; a key whose default is None declares its types with :class:`none_or`). Experiments are YAML
files plus ``key.sub=value`` command-line overrides (:func:`load_yaml_with_overrides`); the resolved config is saved
beside every output (:func:`save_conf`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from .errors import ConfigError


@dataclass(frozen=True)
class none_or:  # noqa: N801 - reads as a default value: "ratio": none_or(float)
    """A default of None (null in YAML) for a key that otherwise takes one of ``types``.

    ``"ratio": none_or(float)`` defaults to None and accepts null or a float (ints too, as for float defaults);
    ``"resize": none_or(int, list)`` an int or a list. Types: bool, int, float, str, list (lists and tuples),
    dict (mappings, with any keys), pathlib.Path. :func:`resolve_conf` replaces the marker by None.
    """

    types: tuple

    def __init__(self, *types: type):
        if not types or not all(isinstance(t, type) for t in types):
            raise TypeError(f"none_or takes one or more types, got {types!r}")
        object.__setattr__(self, "types", tuple(types))

    def __repr__(self) -> str:
        return " or ".join(t.__name__ for t in self.types) + " or null"


def _is_instance(value, kind: type) -> bool:
    """isinstance for config values: bools are not numbers, ints are floats, tuples are lists."""
    if kind is bool:
        return isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is list:
        return isinstance(value, (list, tuple))
    if kind is dict:
        return isinstance(value, Mapping)
    return isinstance(value, kind)


def _check_keys(defaults: Mapping, user: Mapping, where: str, open_keys=()):
    for key, value in user.items():
        if key not in defaults:
            valid = ", ".join(sorted(map(str, defaults.keys()))) or "(none)"
            raise ConfigError(f"unknown config key '{where}{key}'; valid keys: {valid}")
        default = defaults[key]
        if isinstance(value, Mapping) and isinstance(default, Mapping) and f"{where}{key}" not in open_keys:
            _check_keys(default, value, f"{where}{key}.", open_keys)
        elif not _compatible(default, value):
            if isinstance(default, none_or):
                expected, shown = repr(default), "null"
            else:
                expected, shown = type(default).__name__, repr(default)
            raise ConfigError(f"bad value for '{where}{key}': expected {expected} (default {shown}), got {value!r}")


def _compatible(default, value) -> bool:
    """Type check against the default (lists and mappings also accept null). A plain None default accepts
    anything: declare its types with :class:`none_or` (every default in featlab does, tests/test_core.py)."""
    if default is None:
        return True
    if isinstance(default, none_or):
        return value is None or any(_is_instance(value, t) for t in default.types)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple)) or value is None
    if isinstance(default, Mapping):
        return isinstance(value, Mapping) or value is None
    if isinstance(default, (bool, int, float, str)):
        return _is_instance(value, type(default))
    return True


def _plain_defaults(defaults: Mapping) -> dict:
    """``defaults`` with every :class:`none_or` marker replaced by None (what OmegaConf stores)."""
    return {k: (None if isinstance(v, none_or) else _plain_defaults(v) if isinstance(v, Mapping) else v)
            for k, v in defaults.items()}


def resolve_conf(defaults: Mapping, user: Mapping | DictConfig | None = None, name: str = "") -> DictConfig:
    """Merge ``user`` into ``defaults``; raise :class:`ConfigError` on an unknown key or a type mismatch.

    Returns a read-only, struct-mode ``DictConfig`` (attribute access: ``conf.max_keypoints``).
    """
    if user is None:
        user = {}
    if isinstance(user, DictConfig):
        user = OmegaConf.to_container(user, resolve=True)
    prefix = f"{name}." if name else ""
    _check_keys(defaults, user, prefix)
    base = OmegaConf.create(_plain_defaults(defaults))
    OmegaConf.set_struct(base, True)
    try:
        merged = OmegaConf.merge(base, OmegaConf.create(dict(user)))
    except (ConfigKeyError, ConfigAttributeError) as e:  # pragma: no cover - _check_keys catches these first
        raise ConfigError(f"unknown config key in {name or 'config'}: {e}") from None
    except ValidationError as e:
        raise ConfigError(f"bad value in {name or 'config'} config: {e.msg}") from None
    OmegaConf.set_readonly(merged, True)
    return merged


def parse_overrides(overrides: list[str] | None) -> dict:
    """``["a.b=1", "c=x"]`` -> nested dict with YAML-typed values."""
    if not overrides:
        return {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key=value (e.g. train.lr=1e-4)")
    try:
        return OmegaConf.to_container(OmegaConf.from_dotlist(list(overrides)), resolve=True)
    except Exception as e:  # noqa: BLE001 - OmegaConf raises several grammar errors
        raise ConfigError(f"cannot parse overrides {overrides}: {e}") from None


def deep_update(base: dict, update: Mapping) -> dict:
    """Recursive dict update returning a new dict (no key checking: that is :func:`resolve_conf`'s job)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_update(dict(out[k]), v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(f"cannot parse config file {path}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def load_yaml_with_overrides(path: str | Path | None, overrides: list[str] | None = None) -> dict:
    data = load_yaml(path) if path else {}
    return deep_update(data, parse_overrides(overrides))


def to_container(conf: Any) -> Any:
    if isinstance(conf, DictConfig):
        return OmegaConf.to_container(conf, resolve=True)
    return conf


def save_conf(conf: Any, path: str | Path) -> Path:
    """Write a resolved config as YAML, atomically."""
    from .io.atomic import atomic_write_text

    return atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(to_container(conf))))
