"""Feature cache of the benchmarks: extract once per image, score many times.

Layout: ``<root>/<method>-<settings hash>/<image key>.npz``, one ``.npz`` per image written atomically (a crash
never leaves a half-written entry, and an interrupted run resumes where it stopped), plus a ``settings.json``
naming what the hash covers. The settings hold the extractor's content identity (:func:`extractor_settings`:
resolved config and the SHA-256 of its weights files, not their names). The key of an entry is therefore
method + settings + image key; each entry also
stores a checksum of the image pixels it was computed from, and an entry whose checksum disagrees with the
current image (the dataset changed under the same name) is recomputed, never silently reused.
"""
from __future__ import annotations

import hashlib
import json
import re
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..conf import to_container
from ..io.atomic import atomic_path, atomic_write_text

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def settings_hash(settings: Any) -> str:
    """Stable 10-hex-digit hash of a JSON-serialisable settings object."""
    text = json.dumps(to_container(settings), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def image_checksum(image: np.ndarray) -> str:
    """Checksum of an image's shape, dtype and pixels."""
    image = np.ascontiguousarray(image)
    h = hashlib.blake2b(digest_size=10)
    h.update(f"{image.shape}{image.dtype}".encode())
    h.update(image.tobytes())
    return h.hexdigest()


def safe_key(key: str) -> str:
    """An image key as a relative file path: '/' keeps making folders, other odd characters become '_'."""
    parts = [_SAFE.sub("_", p) for p in str(key).split("/") if p not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"empty cache key {key!r}")
    return "/".join(parts)


class FeatureCache:
    """Per-method feature store.

    Args:
        root: cache folder (usually ``<output>/cache``).
        method: extractor name.
        settings: everything that changes the features (resolved extractor config, image size, dataset config):
            hashed into the folder name and written beside it.
    """

    def __init__(self, root: str | Path, method: str, settings: Any):
        self.method = method
        self.settings = to_container(settings)
        self.dir = Path(root) / f"{safe_key(method).replace('/', '_')}-{settings_hash(self.settings)}"
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path:
        return self.dir / f"{safe_key(key)}.npz"

    def _write_settings(self):
        path = self.dir / "settings.json"
        if not path.exists():
            atomic_write_text(path, json.dumps({"method": self.method, "settings": self.settings}, indent=2,
                                               default=str) + "\n")

    def get(self, key: str, checksum: str | None = None) -> dict[str, np.ndarray] | None:
        """Cached features of ``key`` (None when absent, unreadable or computed from other pixels)."""
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                out = {k: data[k] for k in data.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            return None
        stored = out.pop("_checksum", None)
        if checksum is not None and (stored is None or str(stored) != checksum):
            return None
        return out

    def put(self, key: str, features: dict[str, np.ndarray], checksum: str | None = None) -> None:
        """Store numpy features of ``key`` atomically."""
        self._write_settings()
        path = self._path(key)
        arrays = {k: np.asarray(v) for k, v in features.items()}
        if checksum is not None:
            arrays["_checksum"] = np.array(checksum)
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def get_or_compute(self, key: str, image: np.ndarray,
                       compute: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """Cached features of ``key`` if they were computed from these pixels, else ``compute(image)`` (stored)."""
        checksum = image_checksum(image)
        cached = self.get(key, checksum)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        features = compute(image)
        self.put(key, features, checksum)
        return features

    def has(self, key: str, image: np.ndarray) -> bool:
        return self.get(key, image_checksum(image)) is not None


# ------------------------------------------------------------------------------------ methods and extraction
def method_label(entry: str) -> tuple[str, str]:
    """A ``--methods`` entry -> (label, extractor name): ``NAME`` is its own label; ``LABEL=NAME`` evaluates the
    extractor ``NAME`` under ``LABEL`` (the same extractor twice with other weights, e.g.
    ``posfeat=scfeat --method-conf posfeat.weights=runs/posfeat/best.safetensors``)."""
    from ..errors import ConfigError

    label, sep, name = entry.partition("=")
    name = name if sep else label
    if not label or not name or "." in label or "=" in name:
        raise ConfigError(f"method '{entry}' must be NAME or LABEL=NAME (LABEL without dots)")
    return label, name


def parse_method_overrides(items: list[str] | None, methods: list[str]) -> dict[str, dict]:
    """``["disk.weights=/x.pth", "sift.contrast_threshold=0.02"]`` -> ``{"disk": {"weights": ...}, ...}``.

    The first dotted component names the method by its label (:func:`method_label`); it must be one of
    ``methods``.
    """
    from ..conf import parse_overrides
    from ..errors import ConfigError

    labels = [method_label(m)[0] for m in methods]
    out: dict[str, dict] = {}
    for item in items or []:
        key = item.split("=", 1)[0]
        method = key.split(".", 1)[0]
        if "." not in key or method not in labels:
            raise ConfigError(f"method override '{item}' must look like METHOD.key=value with METHOD one of "
                              f"{', '.join(labels)}")
        for name, value in parse_overrides([item[len(method) + 1:]]).items():
            out.setdefault(method, {})[name] = value
    return out


def build_methods(names: list[str], common: dict | None = None, overrides: dict[str, dict] | None = None,
                  device: str = "cpu") -> dict:
    """Build every extractor up front, so that a bad name or missing weights fail before any work starts.

    Args:
        names: extractor names (see ``featlab models``) or ``LABEL=NAME`` entries (:func:`method_label`);
            duplicate labels are an error.
        common: config keys applied to every method (e.g. ``max_keypoints``, ``resize``).
        overrides: per-label config keys, applied after ``common``.
    Returns:
        ``{label: Extractor}`` in the order given.
    Raises:
        ConfigError / InputError from :func:`featlab.extractors.build_extractor`, prefixed with the method name.
    """
    import torch

    from ..errors import ConfigError, FeatlabError
    from ..extractors import build_extractor

    if not names:
        raise ConfigError("no method given (--methods NAME ...)")
    labelled = [method_label(n) for n in names]
    if len({label for label, _ in labelled}) != len(labelled):
        raise ConfigError(f"duplicate method in --methods: {' '.join(names)}")
    if device != "cpu" and not (device.startswith("cuda") and torch.cuda.is_available()):
        raise ConfigError(f"device '{device}' is not available here (use cpu)")
    methods = {}
    for label, name in labelled:
        conf = {**(common or {}), **((overrides or {}).get(label, {}))}
        try:
            methods[label] = build_extractor(name, conf).to(device)
        except FeatlabError as e:
            raise type(e)(f"method '{label}' cannot be built: {e}") from None
    return methods


def extractor_settings(extractor) -> dict:
    """What identifies an extractor's features: class, descriptor type, resolved config (its own and that of the
    extractors inside it) and the SHA-256 of its weights files (:func:`featlab.extractors.base.extractor_identity`),
    so that weights re-exported under the same name never reuse the old weights' cache."""
    from ..extractors.base import extractor_identity

    return extractor_identity(extractor)


def extract_numpy(extractor, image: np.ndarray, resize=None) -> dict[str, np.ndarray]:
    """Run ``extractor`` on an RGB uint8 image; keypoints (N, 2) float32 come back in the image's pixels."""
    from ..extractors import extract_image

    pred = extract_image(extractor, image, resize=resize)
    return {"keypoints": pred["keypoints"].astype(np.float32), "keypoint_scores": pred["keypoint_scores"],
            "descriptors": pred["descriptors"]}


def match_features(feats0: dict, feats1: dict, binary: bool) -> np.ndarray:
    """Mutual nearest-neighbour matches of two cached feature sets -> matches0 (N0,) int64 with -1."""
    from ..matching import match_descriptors

    d0, d1 = feats0["descriptors"], feats1["descriptors"]
    if len(d0) == 0 or len(d1) == 0:
        return np.full(len(d0), -1, dtype=np.int64)
    matches0, _ = match_descriptors(d0, d1, mutual=True, binary=binary)
    return np.asarray(matches0, dtype=np.int64).reshape(-1)


def data_identity(source: dict) -> dict:
    """The part of a benchmark's ``source`` that decides which pixels an image key refers to. Cache folders are
    keyed on it (not on the subset evaluated), so that another subset of the same data reuses the cache; the
    per-entry pixel checksums guard against anything else changing."""
    return {k: source[k] for k in ("kind", "root") if k in source}


def no_progress_bar(progress: bool | None):
    """tqdm's ``disable`` argument: None shows bars only on a terminal, False/True force them on/off."""
    return None if progress is None else not progress
