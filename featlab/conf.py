"""Configuration: defaults live next to each component; unknown keys are an error, never ignored.

A component declares ``default_conf`` (a nested dict, a comment per key) and receives only its own section.
:func:`resolve_conf` merges a user section into the defaults with OmegaConf in struct mode, so a typo such as
``max_keypionts`` raises :class:`ConfigError` naming the valid keys. Experiments are YAML files plus
``key.sub=value`` command-line overrides (:func:`load_yaml_with_overrides`); the resolved config is saved beside
every output (:func:`save_conf`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from .errors import ConfigError


def _check_keys(defaults: Mapping, user: Mapping, where: str, open_keys=()):
    for key, value in user.items():
        if key not in defaults:
            valid = ", ".join(sorted(map(str, defaults.keys()))) or "(none)"
            raise ConfigError(f"unknown config key '{where}{key}'; valid keys: {valid}")
        default = defaults[key]
        if isinstance(value, Mapping) and isinstance(default, Mapping) and f"{where}{key}" not in open_keys:
            _check_keys(default, value, f"{where}{key}.", open_keys)
        elif not _compatible(default, value):
            raise ConfigError(f"bad value for '{where}{key}': expected {type(default).__name__} "
                              f"(default {default!r}), got {value!r}")


def _compatible(default, value) -> bool:
    """Type check against the default: None defaults accept anything; ints are accepted for floats."""
    if default is None:
        return True
    if isinstance(default, bool):
        return isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(default, str):
        return isinstance(value, str)
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple)) or value is None
    if isinstance(default, Mapping):
        return isinstance(value, Mapping) or value is None
    return True


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
    base = OmegaConf.create(dict(defaults))
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
