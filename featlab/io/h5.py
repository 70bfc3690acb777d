"""HDF5 features and matches in hloc's layout, so that featlab's files feed hloc (and hloc's feed featlab).

In memory everything follows featlab's data contract (:mod:`featlab.extractors.base`): keypoints in featlab pixels
(centre of the top-left pixel at (0.5, 0.5)) and descriptors (N, D). On disk everything follows hloc
(cvg/Hierarchical-Localization, layout of hloc >= 1.4, ``extract_features.py`` / ``match_features.py``); the
conversion happens here and nowhere else.

Features file (one group per image)
-----------------------------------
The group is named by the image path relative to the images folder, with ``/`` separators, so ``seq1/0001.jpg``
becomes group ``0001.jpg`` inside group ``seq1`` (HDF5 creates the intermediate groups, as in hloc). Datasets:

    keypoints    float32 (N, 2) as (x, y) in hloc's / OpenCV's convention: centre of the top-left pixel at (0, 0),
                 i.e. featlab - 0.5 (:func:`featlab.pixels.to_hloc`). Always float32: hloc's ``as_half`` also
                 halves keypoints, but float16 has a spacing of 0.5 px beyond 1024 px, too coarse to keep.
                 Optional attribute ``uncertainty`` (detection noise in original-image pixels, as hloc writes).
    descriptors  (D, N): hloc saves its extractors' ``descriptors`` transposed (SuperPoint/DISK/SIFT give (D, N))
                 and its matchers consume (D, N). float32, or float16 with ``as_half``; binary descriptors are
                 uint8 (D/8, N) packed bits. featlab's (N, D) is transposed on write and on read.
    scores       (N,) float32 (float16 with ``as_half``), featlab's ``keypoint_scores``.
    image_size   int64 (2,) as (W, H) of the original image (hloc's ``original_size``).
    other keys   any other per-keypoint array of the prediction (e.g. ``scales``, ``oris``) is stored as given.

Matches file (hloc >= 1.4, ``names_to_pair(name0, name1) = f"{n0}/{n1}"`` with ``/`` inside each name replaced by
``-``): group ``n0`` containing group ``n1`` with datasets

    matches0          int32 (N0,): index into the keypoints of image 1, -1 for unmatched (hloc writes int16,
                      which overflows beyond 32767 keypoints; hloc reads any integer type).
    matching_scores0  float32 (N0,) (float16 with ``as_half``, as hloc).

A pair is looked up in both orders; the legacy flat layout of hloc < 1.4 (one root group
``f"{n0}_{n1}"``) is read too, never written.

Crash safety and resuming (:func:`staged_h5`)
---------------------------------------------
HDF5 files are not crash-safe: a process killed during a write can leave a file that no longer opens. So a command
never writes into its output. It writes into ``<output>.partial`` (a copy of the existing output when it resumes),
flushes after each image or pair, and renames the partial file onto the output only after closing it cleanly;
the output is therefore always a complete file from a finished run (or absent). If a run is interrupted, the
partial file stays: the next run opens it, drops any group left incomplete, and continues from there (it is
discarded instead when it does not open or is older than the output). A partial file left by another
configuration (another model, other weights, other settings: whatever the record holds) is refused with an
:class:`~featlab.errors.InputError` and left untouched, never mixed into or silently deleted.
Partial files use HDF5's default (oldest) format, which stays readable after a hard kill (``libver="latest"``
marks files that were not closed as unopenable). Every file records the configuration that produced it in the
root attribute ``featlab_record`` (JSON); resuming into a file made with another configuration is an error.
A lock file (``<output>.lock``) keeps two featlab processes from writing the same output at once.

Full disks and read-only folders
--------------------------------
HDF5 does not survive a full disk: a write that fails inside the library can leave it in a state where the next
call crashes the process (measured: ``featlab match`` into a full 40 KiB tmpfs ended with a segmentation fault, exit
139). So every write checks the free space first and stops with an :class:`~featlab.errors.InputError` while
:data:`featlab.io.atomic.RESERVE_BYTES` (plus twice the data to write) are still free, enough to close the partial
file cleanly; the partial file then holds every finished image or pair and the next run resumes from it. If the
disk fills anyway (another process writing between the check and the write), h5py only prints the failure; featlab
catches it, leaves the partial file as it is (it reopens, minus that entry) and the CLI exits at once with one line
(exit 2), before any further HDF5 call can crash. A folder that cannot be written (read-only file system, no
permission) is an InputError too, before anything is created.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Iterator, Mapping

import h5py
import numpy as np

from ..errors import ConfigError, FeatlabError, InputError
from ..pixels import from_hloc, to_hloc
from .atomic import RESERVE_BYTES, OutputWriteError, check_free_space, write_error

logger = logging.getLogger(__name__)

RECORD_ATTR = "featlab_record"

#: datasets of one image's group in a features file (hloc names)
FEATURE_DATASETS = ("keypoints", "descriptors", "scores", "image_size")
#: featlab contract key -> hloc dataset name (the others keep their names)
_TO_HLOC = {"keypoint_scores": "scores"}
_FROM_HLOC = {v: k for k, v in _TO_HLOC.items()}

# --------------------------------------------------------------------------------------------- helpers
@contextlib.contextmanager
def _opened(h5, mode: str = "r") -> Iterator[h5py.Group]:
    """Yield an open file for a path (closing it afterwards) or the given h5py object unchanged."""
    if isinstance(h5, (h5py.File, h5py.Group)):
        yield h5
        return
    path = Path(h5)
    if mode == "r" and not path.is_file():
        raise InputError(f"file not found: {path}")
    try:
        f = h5py.File(path, mode)
    except OSError as e:
        raise InputError(f"cannot open HDF5 file {path}: {e}") from None
    try:
        yield f
    finally:
        f.close()


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name or name.startswith("/") or name.endswith("/"):
        raise InputError(f"invalid image name {name!r}: use a relative path such as 'sub/image.jpg'")
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InputError(f"invalid image name {name!r}: empty, '.' or '..' path components")
    return name


def _file_label(h5) -> str:
    return h5.file.filename if isinstance(h5, (h5py.File, h5py.Group)) else str(h5)


class _UnraisableWriteErrors:
    """Collects write errors that h5py reports through ``sys.unraisablehook`` (errors while it releases objects
    are printed and ignored, after which the library may crash): a write that raised one must stop the run."""

    def __init__(self):
        self.errors: list[BaseException] = []
        self._previous = None

    def __enter__(self):
        self._previous = sys.unraisablehook

        def hook(unraisable):
            if unraisable.exc_value is not None and write_error(unraisable.exc_value, "") is not None:
                self.errors.append(unraisable.exc_value)
            else:
                self._previous(unraisable)
        sys.unraisablehook = hook
        return self

    def __exit__(self, *exc):
        sys.unraisablehook = self._previous
        return False


def _guarded_write(h5, nbytes: int, what: str, write) -> None:
    """Run ``write(f)`` on the open file ``h5`` (or the file at path ``h5``) after a free-space check; turn
    write errors (also those h5py only prints) into InputError."""
    label = _file_label(h5)
    check_free_space(label, nbytes, what)
    with _UnraisableWriteErrors() as seen:
        try:
            with _opened(h5, "a") as f:
                write(f)
        except (OSError, RuntimeError) as e:
            err = write_error(e, label)
            if err is None:
                raise
            raise err from None
    if seen.errors:
        # h5py swallowed a failed write while releasing objects; after that, measured on a full tmpfs, any further
        # call into the library (flush, close, even the interpreter's exit) crashes with a segmentation fault:
        # the file is left as it is (it reopens, minus this entry) and the CLI ends the process at once
        err = write_error(seen.errors[0], label)
        err.hard_exit = True
        raise err


# --------------------------------------------------------------------------------------------- features
def write_features(h5, name: str, pred: Mapping[str, Any], as_half: bool = False,
                   uncertainty: float | None = None) -> None:
    """Write one image's features in hloc's layout (replacing an existing group of that name).

    Args:
        h5: path of the features file (opened in append mode and closed) or an open ``h5py.File``.
        name: image path relative to the images folder, ``/``-separated (nested groups).
        pred: featlab single-image prediction (numpy or torch, unbatched): ``keypoints`` (N, 2) featlab pixels,
            ``keypoint_scores`` (N,), ``descriptors`` (N, D) float or (N, D/8) uint8, ``image_size`` (2,) as
            (W, H); any other (N, ...) array is stored under its own name.
        as_half: store float descriptors and scores as float16 (hloc's ``as_half``); keypoints stay float32.
        uncertainty: optional keypoint noise in original-image pixels, stored as hloc's ``uncertainty`` attribute.
    """
    _check_name(name)
    arrays = {k: _to_numpy(v) for k, v in pred.items()}
    for key in ("keypoints", "descriptors", "image_size"):
        if key not in arrays:
            raise InputError(f"features of {name!r} lack '{key}'")
    kpts = arrays.pop("keypoints")
    n = len(kpts)
    if kpts.ndim != 2 or kpts.shape[1] != 2:
        raise InputError(f"features of {name!r}: keypoints must be (N, 2), got {kpts.shape}")
    desc = arrays.pop("descriptors")
    if desc.ndim != 2 or desc.shape[0] != n:
        raise InputError(f"features of {name!r}: descriptors must be (N, D) with N={n}, got {desc.shape}")
    image_size = np.asarray(arrays.pop("image_size")).reshape(-1).astype(np.int64)
    if image_size.shape != (2,):
        raise InputError(f"features of {name!r}: image_size must be (W, H), got {image_size}")
    scores = arrays.pop("keypoint_scores", None)
    if scores is None:
        scores = arrays.pop("scores", np.ones(n, np.float32))
    if desc.dtype != np.uint8:
        desc = desc.astype(np.float16 if as_half else np.float32)
    data = {
        "keypoints": to_hloc(kpts.astype(np.float32)),
        "descriptors": np.ascontiguousarray(desc.T),
        "scores": np.asarray(scores).astype(np.float16 if as_half else np.float32).reshape(n),
        "image_size": image_size,
    }
    for key, value in arrays.items():  # extras (scales, oris, ...): per-keypoint arrays only
        if value.ndim >= 1 and value.shape[0] == n:
            data[_TO_HLOC.get(key, key)] = value

    def write(f):
        if name in f:
            del f[name]
        grp = f.create_group(name)
        for key, value in data.items():
            grp.create_dataset(key, data=value)
        if uncertainty is not None:
            grp["keypoints"].attrs["uncertainty"] = float(uncertainty)
    _guarded_write(h5, sum(np.asarray(v).nbytes for v in data.values()), f"the features of {name!r}", write)


def read_features(h5, name: str) -> dict[str, np.ndarray]:
    """Read one image's features into featlab's convention.

    Returns:
        ``keypoints`` float32 (N, 2) featlab pixels, ``descriptors`` (N, D) float32 or uint8 (binary),
        ``keypoint_scores`` float32 (N,) (when stored), ``image_size`` int64 (2,) as (W, H), plus any other
        per-keypoint dataset under its own name and ``uncertainty`` (float) when the attribute exists.
    Raises:
        InputError: missing file or image, or a group that is not a features group.
    """
    with _opened(h5, "r") as f:
        grp = f.get(name)
        if not isinstance(grp, h5py.Group) or "keypoints" not in grp:
            raise InputError(f"no features for image '{name}' in {_file_label(h5)}")
        raw = {key: grp[key][()] for key in grp if isinstance(grp[key], h5py.Dataset)}
        uncertainty = grp["keypoints"].attrs.get("uncertainty")
    kpts = np.asarray(raw.pop("keypoints"), dtype=np.float32).reshape(-1, 2)
    n = len(kpts)
    out: dict[str, np.ndarray] = {"keypoints": from_hloc(kpts)}
    if "descriptors" in raw:
        desc = raw.pop("descriptors")
        if desc.ndim != 2:
            raise InputError(f"descriptors of '{name}' in {_file_label(h5)} must be 2-D, got {desc.shape}")
        # hloc layout is (D, N); accept (N, D) from other writers when unambiguous
        if desc.shape[1] == n:
            desc = desc.T
        elif desc.shape[0] != n:
            raise InputError(f"descriptors of '{name}' in {_file_label(h5)} have shape {desc.shape}, "
                             f"which does not fit {n} keypoints")
        out["descriptors"] = np.ascontiguousarray(desc if desc.dtype == np.uint8 else desc.astype(np.float32))
    if "scores" in raw:
        out["keypoint_scores"] = raw.pop("scores").astype(np.float32).reshape(n)
    out["image_size"] = np.asarray(raw.pop("image_size", np.zeros(2)), dtype=np.int64).reshape(2)
    for key, value in raw.items():
        out[_FROM_HLOC.get(key, key)] = value
    if uncertainty is not None:
        out["uncertainty"] = float(uncertainty)
    return out


def list_feature_names(h5) -> list[str]:
    """Sorted names of all images in a features file (groups holding a ``keypoints`` dataset, at any depth)."""
    names: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and obj.get("keypoints", getclass=True) is h5py.Dataset:
            names.append(name)

    with _opened(h5, "r") as f:
        f.visititems(visit)
    return sorted(names)


def has_features(h5, name: str) -> bool:
    with _opened(h5, "r") as f:
        return isinstance(f.get(name), h5py.Group) and "keypoints" in f[name]


# --------------------------------------------------------------------------------------------- matches
def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's pair key: ``/`` in each name becomes ``-``; the two are joined by ``separator`` (``/`` since
    hloc 1.4: group name0 containing group name1)."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def names_to_pair_legacy(name0: str, name1: str) -> str:
    """The flat key of hloc < 1.4 (read only)."""
    return names_to_pair(name0, name1, separator="_")


def find_pair(h5, name0: str, name1: str) -> tuple[str, bool] | None:
    """Locate a pair in a matches file: (key, reversed) or None. Tries both orders, then the legacy layout."""
    with _opened(h5, "r") as f:
        for make in (names_to_pair, names_to_pair_legacy):
            for key, rev in ((make(name0, name1), False), (make(name1, name0), True)):
                grp = f.get(key)
                if isinstance(grp, h5py.Group) and "matches0" in grp:
                    return key, rev
    return None


def write_matches(h5, name0: str, name1: str, matches0, scores0=None, as_half: bool = False) -> None:
    """Write the matches of one pair (hloc >= 1.4 layout), replacing an existing entry for the same order.

    Args:
        matches0: (N0,) integer, index into keypoints of ``name1``, -1 for unmatched.
        scores0: (N0,) matching scores (zeros where unmatched); omitted -> 1 where matched, 0 elsewhere.
    """
    _check_name(name0)
    _check_name(name1)
    m = _to_numpy(matches0).reshape(-1)
    if m.size and not np.issubdtype(m.dtype, np.integer):
        raise InputError(f"matches0 of pair ({name0}, {name1}) must be integers, got {m.dtype}")
    if m.size and (m.min() < -1 or m.max() > np.iinfo(np.int32).max):
        raise InputError(f"matches0 of pair ({name0}, {name1}) holds indices outside [-1, 2^31)")
    s = (m >= 0).astype(np.float32) if scores0 is None else _to_numpy(scores0).reshape(-1)
    if s.shape != m.shape:
        raise InputError(f"matching scores {s.shape} and matches {m.shape} of ({name0}, {name1}) differ")
    key = names_to_pair(name0, name1)

    def write(f):
        if key in f:
            del f[key]
        grp = f.create_group(key)
        grp.create_dataset("matches0", data=m.astype(np.int32))
        grp.create_dataset("matching_scores0", data=s.astype(np.float16 if as_half else np.float32))
    _guarded_write(h5, 8 * m.size, f"the matches of ({name0}, {name1})", write)


def read_matches(h5, name0: str, name1: str, num_keypoints0: int | None = None) -> dict[str, np.ndarray]:
    """Read the matches of a pair, whichever order (or legacy layout) it was stored in.

    Returns:
        ``matches`` int64 (K, 2) index pairs (i0, i1) and ``matching_scores`` float32 (K,), always;
        ``matches0`` int64 (N0,) with -1 and ``matching_scores0`` float32 (N0,) when the pair is stored as
        (name0, name1), or when it is stored reversed and ``num_keypoints0`` is given.
    Raises:
        InputError: the pair is not in the file.
    """
    with _opened(h5, "r") as f:
        found = find_pair(f, name0, name1)
        if found is None:
            raise InputError(f"no matches for pair ({name0}, {name1}) in {_file_label(h5)}")
        key, rev = found
        m = f[key]["matches0"][()].astype(np.int64).reshape(-1)
        s = f[key]["matching_scores0"][()].astype(np.float32).reshape(-1) if "matching_scores0" in f[key] \
            else (m >= 0).astype(np.float32)
    idx = np.flatnonzero(m >= 0)
    pairs = np.stack([idx, m[idx]], -1).astype(np.int64)
    out = {"matching_scores": s[idx]}
    if not rev:
        out.update(matches=pairs, matches0=m, matching_scores0=s)
        return out
    pairs = pairs[:, ::-1].copy()
    out["matches"] = pairs
    if num_keypoints0 is not None:
        if len(pairs) and pairs[:, 0].max() >= num_keypoints0:
            raise InputError(f"matches of ({name0}, {name1}) index keypoint {pairs[:, 0].max()} of {name0}, "
                             f"which has {num_keypoints0}")
        m0 = np.full(num_keypoints0, -1, np.int64)
        s0 = np.zeros(num_keypoints0, np.float32)
        m0[pairs[:, 0]] = pairs[:, 1]
        s0[pairs[:, 0]] = out["matching_scores"]
        out.update(matches0=m0, matching_scores0=s0)
    return out


def list_match_pairs(h5) -> list[tuple[str, str]]:
    """All pairs in a matches file as (key0, key1) in the stored order and with ``/`` replaced by ``-`` (the
    names cannot be recovered exactly); legacy flat entries are returned as (key, "")."""
    out: list[tuple[str, str]] = []
    with _opened(h5, "r") as f:
        for k0, g0 in f.items():
            if not isinstance(g0, h5py.Group):
                continue
            if "matches0" in g0:
                out.append((k0, ""))
                continue
            out.extend((k0, k1) for k1, g1 in g0.items() if isinstance(g1, h5py.Group) and "matches0" in g1)
    return sorted(out)


# --------------------------------------------------------------------------------------------- staged writing
def read_record(h5) -> dict | None:
    """The configuration record a featlab command stored in the file (None when absent)."""
    with _opened(h5, "r") as f:
        raw = f.attrs.get(RECORD_ATTR)
    if raw is None:
        return None
    return json.loads(raw if isinstance(raw, str) else raw.decode())


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, Mapping):
        return {prefix.rstrip("."): d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}."))
    return out


def record_differences(a: Mapping, b: Mapping) -> list[str]:
    """Human-readable differences between two records, e.g. ``["model: sift != rootsift"]``; top-level keys
    first (a different model says more than the config keys that differ with it)."""
    fa, fb = _flatten(json.loads(json.dumps(a))), _flatten(json.loads(json.dumps(b)))
    keys = sorted(set(fa) | set(fb), key=lambda k: (k.count("."), k))
    return [f"{k}: {fa.get(k, '(absent)')} != {fb.get(k, '(absent)')}" for k in keys
            if fa.get(k, "(absent)") != fb.get(k, "(absent)")]


def check_output_record(path: str | Path, record: Mapping) -> None:
    """Raise ConfigError unless the existing output ``path`` was written with ``record``."""
    path = Path(path)
    try:
        stored = read_record(path)
    except (OSError, InputError) as e:
        raise InputError(f"existing output {path} cannot be read ({e}); use --overwrite to replace it") from None
    if stored is None:
        raise ConfigError(f"existing output {path} was not written by featlab (no configuration record); "
                          "use --overwrite to replace it or choose another output")
    diff = record_differences(stored, record)
    if diff:
        raise ConfigError(f"existing output {path} was made with another configuration ({'; '.join(diff[:3])}); "
                          "use --overwrite to replace it or choose another output")


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".partial")


def _validate_groups(f: h5py.File, kind: str) -> int:
    """Delete groups left incomplete by a crash; return how many were dropped."""
    bad: list[str] = []
    if kind == "features":
        def visit(name, obj):
            if isinstance(obj, h5py.Group) and "keypoints" in obj:
                try:
                    n = obj["keypoints"].shape[0]
                    ok = all(k in obj for k in FEATURE_DATASETS) and obj["descriptors"].shape[1] == n \
                        and obj["scores"].shape == (n,) and obj["image_size"].shape == (2,)
                except (KeyError, IndexError, OSError):
                    ok = False
                if not ok:
                    bad.append(name)
        f.visititems(visit)
    else:
        for k0, g0 in list(f.items()):
            if not isinstance(g0, h5py.Group):
                continue
            for k1, g1 in list(g0.items()):
                if isinstance(g1, h5py.Group) and not ("matches0" in g1 and "matching_scores0" in g1
                                                       and g1["matches0"].shape == g1["matching_scores0"].shape):
                    bad.append(f"{k0}/{k1}")
    for name in bad:
        del f[name]
    return len(bad)


def _salvage_partial(partial: Path, output: Path, record: Mapping, kind: str) -> bool:
    """Keep a partial file from an interrupted run if it is usable; return False (caller deletes it) if not.

    Raises:
        InputError: the partial file holds the unfinished work of another configuration (another model, other
            weights, other settings); it is left byte for byte as it was.
    """
    if output.exists() and output.stat().st_mtime > partial.stat().st_mtime:
        logger.warning("discarding %s: older than %s", partial, output)
        return False

    def unreadable(e: OSError) -> bool:
        if "lock" in str(e).lower():
            raise InputError(f"{partial} is in use by another process") from None
        logger.warning("discarding %s: unreadable after an interrupted run (%s)", partial, e)
        return False

    try:  # read-only first: a refused partial file must stay untouched
        with h5py.File(partial, "r") as f:
            raw = f.attrs.get(RECORD_ATTR)
    except OSError as e:
        return unreadable(e)
    if raw is None:  # killed before its record was written: holds nothing
        logger.warning("discarding %s: no configuration record", partial)
        return False
    diff = record_differences(json.loads(raw if isinstance(raw, str) else raw.decode()), record)
    if diff:
        raise InputError(f"{partial} holds an unfinished run of another model, weights or configuration "
                         f"({'; '.join(diff[:3])}); rerun that command to finish it, or use --overwrite to "
                         "discard it")
    try:
        with h5py.File(partial, "a") as f:
            dropped = _validate_groups(f, kind)
    except OSError as e:
        return unreadable(e)
    logger.info("resuming from %s (interrupted run)%s", partial,
                f", dropped {dropped} incomplete entries" if dropped else "")
    return True


@contextlib.contextmanager
def _output_lock(path: Path):
    lock = path.with_name(path.name + ".lock")
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no locking
        yield
        return
    try:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
    except OSError as e:
        err = write_error(e, path)
        if err is None:
            raise
        raise err from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise InputError(f"another featlab process is writing {path} (lock {lock})") from None
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(lock)
    finally:
        os.close(fd)


@contextlib.contextmanager
def staged_h5(path: str | Path, record: Mapping, kind: str = "features",
              overwrite: bool = False) -> Iterator[h5py.File]:
    """Open the staging copy ``<path>.partial`` for writing; rename it onto ``path`` when the block succeeds.

    The staging file starts as (in this order of preference): the partial file of an interrupted run with the
    same ``record`` (incomplete groups dropped; a partial file with another record is an InputError and stays as
    it is), a copy of the existing output (which must carry the same ``record``, else ConfigError), or an empty
    file. ``overwrite`` starts from an empty file regardless; the old output is only replaced by the final
    rename. If the block raises, the partial file is closed cleanly and kept
    so that the next run resumes from it. The caller should ``flush()`` after each unit of work.

    Args:
        path: the output file.
        record: JSON-serialisable configuration stored in the root attribute ``featlab_record``.
        kind: 'features' or 'matches' (what the validation of a partial file checks).
    """
    if kind not in ("features", "matches"):
        raise ValueError(f"kind must be 'features' or 'matches', got {kind!r}")
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (write_error(e, path.parent) or e) from None
    partial = partial_path(path)
    record_json = json.dumps(record, sort_keys=True)
    with _output_lock(path):
        if partial.exists() and (overwrite or not _salvage_partial(partial, path, record, kind)):
            partial.unlink()
        if not partial.exists():
            if path.exists() and not overwrite:
                check_output_record(path, record)
                tmp = partial.with_name(partial.name + ".copy")
                check_free_space(tmp, path.stat().st_size // 2, f"a copy of {path} to resume into")
                try:
                    shutil.copyfile(path, tmp)
                except OSError as e:
                    tmp.unlink(missing_ok=True)
                    raise (write_error(e, tmp) or e) from None
                os.replace(tmp, partial)
        try:
            f = h5py.File(partial, "a")
        except OSError as e:
            raise (write_error(e, partial) or InputError(f"cannot open {partial} for writing: {e}")) from None
        try:
            f.attrs[RECORD_ATTR] = record_json
            yield f
        except BaseException as e:
            if not getattr(e, "hard_exit", False):  # see _guarded_write: closing would crash
                with contextlib.suppress(OSError, RuntimeError):  # a full disk can fail the close too
                    f.close()
            err = write_error(e, partial) if isinstance(e, (OSError, RuntimeError)) else e
            if isinstance(err, OutputWriteError):
                out = OutputWriteError(f"{err}; finished work is kept in {partial}: make room, then run the same "
                                       "command again to resume")
                out.hard_exit = getattr(e, "hard_exit", False)
                raise out from None
            if isinstance(err, FeatlabError):  # one line from the CLI; what to fix is in the message itself
                raise type(err)(f"{err}; finished work is kept in {partial} (the next run resumes from it)") from None
            logger.warning("interrupted: partial results kept in %s; run the same command again to resume", partial)
            raise
        try:
            f.close()
        except (OSError, RuntimeError) as e:
            raise (write_error(e, partial) or e) from None
        os.replace(partial, path)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)
