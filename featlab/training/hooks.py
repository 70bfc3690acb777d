"""CLI hooks that several training methods share (the module protocol of :mod:`featlab.commands.train`).

A method module picks its data flags from :data:`PATH_ARGUMENTS` and builds its export hooks from its weight loader:

    def add_arguments(parser):
        hooks.add_path_arguments(parser, ("data", "val_data"))
    apply_arguments = hooks.apply_path_arguments
    check_export = hooks.export_name_check("caps-resnet18")
    export_weights = hooks.weights_exporter(load_caps_weights, "caps-resnet18")
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import ConfigError
from ..io import weights as weights_io
from ..io.weights import check_export_name, copy_weights

# flag (argparse dest) -> (config key it sets, repeatable, help)
PATH_ARGUMENTS = {
    "data": ("data.root", False, "posed RGB-D sequence (7-Scenes or TUM layout) for training pairs"),
    "colmap": ("data.colmap", True, "COLMAP project with posed images (images/ + sparse/), repeatable"),
    "val_data": ("val.root", False, "sequence for validation pairs (default: --data, frames val.frame_range)"),
    "photos": ("data.photos", True, "folder of training photos (repeatable)"),
    "val_photos": ("val.photos", False, "folder of held-out photos for validation"),
}


def add_path_arguments(parser, names, extra_help: dict | None = None) -> None:
    """Add the data flags ``names`` (keys of :data:`PATH_ARGUMENTS`); ``extra_help`` appends to a flag's help."""
    for name in names:
        key, repeat, text = PATH_ARGUMENTS[name]
        text = f"{text}; sets {key}" + (f"; {extra_help[name]}" if extra_help and name in extra_help else "")
        parser.add_argument("--" + name.replace("_", "-"), dest=name, type=Path, default=None, metavar="DIR",
                            action="append" if repeat else "store", help=text)


def apply_path_arguments(user: dict, args) -> dict:
    """Write the data flags that were given into the user config (before resolution); returns it."""
    for name, (key, repeat, _) in PATH_ARGUMENTS.items():
        value = getattr(args, name, None)
        if value:
            section, field = key.split(".")
            user.setdefault(section, {})[field] = [str(p) for p in value] if repeat else str(value)
    return user


def export_name_check(example: str, handcrafted: str | None = None) -> Callable:
    """``check_export(conf, name)``: the name must be a plain file stem (``example`` in the error); with
    ``handcrafted``, exporting under the name ``example`` also needs ``conf.handcrafted.name == handcrafted``
    (the shipped model of that name is defined with that g)."""
    def check_export(conf, name: str) -> None:
        check_export_name(name, example)
        if handcrafted is not None and name == example and conf.handcrafted.name != handcrafted:
            raise ConfigError(f"{example} uses handcrafted={handcrafted!r}, this run uses {conf.handcrafted.name!r}")
    return check_export


def weights_exporter(load: Callable, example: str, check: Callable | None = None) -> Callable:
    """``export_weights(run_dir, name, which="best")`` that validates the run's weights with ``load`` and copies
    ``RUN_DIR/<which>.safetensors`` (+ sidecar) to ``featlab/weights/<name>.safetensors`` (+ sidecar).

    ``check(name, sidecar)``, when given, raises ConfigError for weights that do not fit a name (a registered model
    defined with another handcrafted extractor). The exporter raises InputError when the run has no such weights or
    they cannot be loaded, and ConfigError on a bad name.
    """
    def export_weights(run_dir: str | Path, name: str, which: str = "best") -> Path:
        check_export_name(name, example)
        src = Path(run_dir) / f"{which}.safetensors"
        _, meta = load(src)  # validates the pair of files
        if check is not None:
            check(name, meta)
        return copy_weights(src, weights_io.SHIPPED_WEIGHTS_DIR / f"{name}.safetensors")
    return export_weights


__all__ = ["PATH_ARGUMENTS", "add_path_arguments", "apply_path_arguments", "export_name_check", "weights_exporter"]
