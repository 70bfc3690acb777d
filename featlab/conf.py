"""Configuration: defaults live next to each component; unknown keys are an error, never ignored.

A component declares ``default_conf`` (a nested dict, a comment per key) and receives only its own section.
:func:`resolve_conf` merges a user section into the defaults with OmegaConf in struct mode, so a typo such as
``max_keypionts`` raises :class:`ConfigError` naming the valid keys, and so does a value of the wrong type (the
type is the default's; a key whose default is None declares its types with :class:`none_or`), and so does a value
outside the range or set of choices a key declares next to its default (:class:`checked`). Experiments are YAML
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


@dataclass(frozen=True)
class checked:  # noqa: N801 - reads as a default value: "sigma": checked(1.6, gt=0)
    """A default with declared valid values, checked by :func:`resolve_conf` after the type check.

    ``"sigma": checked(1.6, gt=0)``, ``"n_layers": checked(4, ge=3)``, ``"dtype": checked("float32",
    choices=("float32", "bfloat16"))``, ``"max_keypoints": checked(2048, ge=1, also=(-1,))`` (-1 is a special
    value outside the range), ``"resize": checked(none_or(int, list), ge=1)`` (null passes; bounds apply to each
    element of a list). ``default`` may be a :class:`none_or` marker; it must itself pass the checks.
    """

    default: Any
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None
    choices: tuple | None = None
    also: tuple = ()

    def __post_init__(self):
        if self.default is None or isinstance(self.default, (checked, Mapping)):
            raise TypeError("checked wraps a plain default or a none_or marker")
        for name in ("choices", "also"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if not isinstance(self.default, none_or) and self.violation(self.default):
            raise TypeError(f"default {self.default!r} violates its own constraint ({self.describe()})")

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        parts = [f"{op} {v:g}" for op, v in ((">", self.gt), (">=", self.ge), ("<", self.lt), ("<=", self.le))
                 if v is not None]
        text = " and ".join(parts)
        return text + "".join(f" (or {v})" for v in self.also)

    def violation(self, value) -> str | None:
        """None when ``value`` is valid, else what it should be (e.g. ``"> 0"``)."""
        if value is None and isinstance(self.default, none_or) or value in self.also:
            return None
        if self.choices is not None:
            return None if value in self.choices else self.describe()
        items = value if isinstance(value, (list, tuple)) else [value]
        for v in items:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                continue  # the type check has already run; bounds only concern numbers
            if (self.gt is not None and not v > self.gt) or (self.ge is not None and not v >= self.ge) or \
                    (self.lt is not None and not v < self.lt) or (self.le is not None and not v <= self.le):
                return self.describe()
        return None


def _unwrap(default):
    """The default behind a :class:`checked` marker (itself possibly a :class:`none_or`)."""
    return default.default if isinstance(default, checked) else default


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
        rule = defaults[key]
        default = _unwrap(rule)
        if isinstance(value, Mapping) and isinstance(default, Mapping) and f"{where}{key}" not in open_keys:
            _check_keys(default, value, f"{where}{key}.", open_keys)
            continue
        if isinstance(default, none_or):
            expected, shown = repr(default), "null"
        else:
            expected, shown = type(default).__name__, repr(default)
        if not _compatible(default, value):
            raise ConfigError(f"bad value for '{where}{key}': expected {expected} (default {shown}), got {value!r}")
        why = rule.violation(value) if isinstance(rule, checked) else None
        if why is not None:
            raise ConfigError(f"bad value for '{where}{key}': must be {why} (default {shown}), got {value!r}")


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
    """``defaults`` with every :class:`checked` marker unwrapped and every :class:`none_or` marker replaced by None
    (what OmegaConf stores)."""
    out = {}
    for k, v in defaults.items():
        v = _unwrap(v)
        out[k] = None if isinstance(v, none_or) else _plain_defaults(v) if isinstance(v, Mapping) else v
    return out


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
