"""Model weights on disk: a safetensors file plus a JSON sidecar (same stem, ``.json``) with the network config.

Both files are written atomically; reading checks the sidecar's ``format`` tag and turns every failure (missing,
corrupt, wrong format) into an :class:`~featlab.errors.InputError` naming the file. Shipped weights live in
``featlab/weights/`` (:data:`SHIPPED_WEIGHTS_DIR`) and are named by their stem (:func:`resolve_weights_path`).
Caches and resume records identify weights by content (:func:`file_sha256`), never by name.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch

from ..errors import ConfigError, InputError
from .atomic import atomic_path, atomic_write_text


#: shipped weights: featlab/weights/<name>.safetensors + <name>.json
SHIPPED_WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def resolve_weights_path(weights: str | Path, shipped_dir: str | Path = SHIPPED_WEIGHTS_DIR) -> Path:
    """A ``.safetensors`` path (or any path with a folder), else the bare name of a file in ``shipped_dir``."""
    p = Path(weights)
    if p.suffix == ".safetensors" or len(p.parts) > 1:
        return p
    return Path(shipped_dir) / f"{weights}.safetensors"


_SHA256_MEMO: dict[tuple, str] = {}
#: files modified less than this long ago are hashed on every call: a rewrite within the same timestamp tick
#: would keep mtime, size and ctime ("racy git"), so only settled files are memoised
_SETTLED_NS = 2_000_000_000


def file_sha256(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, computed once per version of the file.

    Memoised by resolved path, size, mtime, ctime and inode, and only once the file is a few seconds old: any
    later rewrite (an atomic re-export makes a new inode; an in-place one sets a new mtime and ctime) is hashed
    again, so weights re-exported under the same name never pass for the old ones.

    Raises:
        InputError: the file cannot be read.
    """
    path = Path(path).resolve()
    try:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        if key in _SHA256_MEMO:
            return _SHA256_MEMO[key]
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise InputError(f"cannot read {path} to hash it: {e}") from None
    if time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > _SETTLED_NS:
        _SHA256_MEMO[key] = h.hexdigest()
    return h.hexdigest()


def sidecar_path(weights_path: str | Path) -> Path:
    """The JSON sidecar of a weights file: same stem, ``.json``."""
    return Path(weights_path).with_suffix(".json")


def save_weights(module: torch.nn.Module, path: str | Path, meta: dict) -> Path:
    """Write ``module``'s state dict (float tensors as float32, on CPU) and ``meta`` (must hold ``format``)."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: (v.detach().float() if v.is_floating_point() else v.detach()).cpu().contiguous()
             for k, v in module.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": str(meta["format"])})
    atomic_write_text(sidecar_path(path), json.dumps(meta, indent=2, default=float))
    return path


def load_weights(path: str | Path, fmt: str, what: str, missing_hint: str = "") -> tuple[dict, dict]:
    """Read a weights file and its sidecar -> (state dict, sidecar dict).

    Args:
        fmt: the expected sidecar ``format`` tag (the sidecar must also hold a ``model`` mapping).
        what: how to name the weights in messages (e.g. "CAPS weights").
        missing_hint: appended to the message when the weights file does not exist (e.g. how to train them).
    """
    from safetensors.torch import load_file

    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise InputError(f"{what} not found: {path}" + (f"; {missing_hint}" if missing_hint else ""))
    if not side.is_file():
        raise InputError(f"{what} {path} have no config sidecar {side.name} beside them")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InputError(f"cannot read the weights sidecar {side}: {e}") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt or not isinstance(meta.get("model"), dict):
        raise InputError(f"{side} is not a featlab sidecar of {what} (format {fmt})")
    try:
        state = load_file(str(path))
    except Exception as e:  # noqa: BLE001 - safetensors raises several kinds of errors on corrupt files
        raise InputError(f"cannot read weights file {path}: {e}") from None
    return state, meta


def load_state_strict(module: torch.nn.Module, state: dict, path: str | Path) -> torch.nn.Module:
    """``load_state_dict(strict=True)`` with a one-line InputError when the weights do not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, TypeError) as e:
        raise InputError(f"weights {path} do not fit the network in {sidecar_path(path).name}: "
                         f"{str(e).splitlines()[0]}") from None
    return module.eval()


def load_network(path: str | Path, fmt: str, what: str, missing_hint: str, build) -> tuple[torch.nn.Module, dict]:
    """Weights + sidecar of format ``fmt`` -> (``build(sidecar["model"])`` with the weights, in eval mode; sidecar).

    Raises:
        InputError: missing or corrupt weights or sidecar, a sidecar that describes no valid network, or weights
        that do not fit it.
    """
    state, meta = load_weights(path, fmt, what, missing_hint)
    try:
        net = build(meta["model"])
    except (ValueError, TypeError, ConfigError) as e:
        raise InputError(f"{sidecar_path(path)} describes no valid network: {e}") from None
    return load_state_strict(net, state, path), meta


def check_export_name(name: str, example: str) -> None:
    """An export name must be a plain file stem (no folder, no leading dot, no .safetensors), e.g. ``example``.

    Raises:
        ConfigError: any other name.
    """
    if not name or "/" in name or "\\" in name or name.startswith(".") or name.endswith(".safetensors"):
        raise ConfigError(f"export name must be a plain file stem such as {example}, got {name!r}")


def copy_weights(src: str | Path, dst: str | Path) -> Path:
    """Copy a weights file and its sidecar to ``dst`` (+ sidecar), each atomically. Returns ``dst``."""
    src, dst = Path(src), Path(dst)
    for s, d in ((src, dst), (sidecar_path(src), sidecar_path(dst))):
        with atomic_path(d) as tmp:
            shutil.copyfile(s, tmp)
    return dst
