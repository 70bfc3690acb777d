"""The split rule: which data trains, which selects (validation, model selection), which only reports.

Written once here and in ``docs/DATASETS.md``; the default configs use it and :func:`check_sources` enforces it
for every training run (``featlab train``). Paths are relative to the data root (:func:`data_root`).

- photos: train on ``photos/bsds500/train`` and ``photos/sun_hays80`` (optionally also
  ``posed/strecha/castle-P30/images``); select on ``photos/bsds500/val``; report on ``photos/bsds500/test`` only.
- 7-Scenes redkitchen (``rgbd/7scenes_redkitchen``): train on frames 0-349; select on frames 360-399; report on
  frames 400-499 only. Frames 350-359 are a buffer: neighbouring frames are nearly the same image.
- Strecha: ``posed/strecha/castle-P30`` may train; ``posed/strecha/Herz-Jesus-P25`` is for evaluation only.
- Any posed collection (``featlab train pose --data``): split into train / select / held-out parts of contiguous
  views in frame order or by viewing direction (:func:`split_views`, :func:`viewpoint_order`), with buffer views
  between parts; the held-out part is only reported on.

Evaluation-only data (a photo folder under ``photos/bsds500/test`` or ``posed/strecha/Herz-Jesus-P25``, or a
folder holding one; 7-Scenes redkitchen frames >= 400) is refused for training and selection with a one-line
:class:`~featlab.errors.ConfigError`, unless the run sets ``data.allow_eval_data=true`` (recorded in its
``config.yaml``, so a result computed that way can always be told apart).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from omegaconf import OmegaConf

from ..errors import ConfigError

#: environment variable that overrides the data root
DATA_ENV = "FEATLAB_DATA"
#: the config key that lets a run train or select on evaluation-only data (each method's ``data`` section)
ALLOW_KEY = "allow_eval_data"

#: photo folders, relative to the data root
TRAIN_PHOTOS = ("photos/bsds500/train", "photos/sun_hays80")
OPTIONAL_TRAIN_PHOTOS = ("posed/strecha/castle-P30/images",)
SELECT_PHOTOS = "photos/bsds500/val"
REPORT_PHOTOS = "photos/bsds500/test"
#: folders (relative to the data root) that only evaluation may read
EVAL_ONLY_FOLDERS = ("photos/bsds500/test", "posed/strecha/Herz-Jesus-P25")

#: 7-Scenes redkitchen frame ranges, [start, stop)
SEVEN_SCENES = "rgbd/7scenes_redkitchen"
TRAIN_FRAMES = (0, 350)
SELECT_FRAMES = (360, 400)
REPORT_FRAMES = (400, 500)
#: sequences (matched by a lower-case substring of the folder name) whose frames >= this index are evaluation-only
EVAL_ONLY_FRAMES_FROM = {"redkitchen": REPORT_FRAMES[0]}

ROLES = ("train", "select")


def data_root() -> Path:
    """The data root: ``$FEATLAB_DATA`` if set, else ``../shared/data`` beside the repository when featlab runs
    from a checkout that has it, else ``../shared/data`` relative to the current folder."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    beside_repo = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    return beside_repo if beside_repo.is_dir() else Path("..") / "shared" / "data"


def data_path(relative: str) -> Path:
    """``relative`` (a path in the data root, e.g. ``photos/bsds500/val``) under :func:`data_root`."""
    return data_root() / relative


# YAML configs name split folders as ${featlab_data:photos/bsds500/val}; resolved when the config is loaded, so the
# saved config.yaml of a run holds the actual path
_register = getattr(OmegaConf, "register_resolver", None) or OmegaConf.register_new_resolver
_register("featlab_data", lambda relative: str(data_path(str(relative))), replace=True)


@dataclass(frozen=True)
class Source:
    """Data a run reads for one role.

    Attributes:
        role: 'train' (optimised on) or 'select' (validation, model selection).
        path: a photo folder, or a sequence folder when ``frame_range`` is set.
        frame_range: [start, stop) frame indices of a sequence; None for a photo folder (every image under it).
        key: the config key that chose it, for the error message (e.g. ``val.photos``, ``val.frame_range``).
    """

    role: str
    path: str | Path
    frame_range: tuple[int, int] | None = None
    key: str = ""


def _parts(path: Path) -> list[tuple[str, ...]]:
    """The path as given (made absolute) and with links resolved: either may carry the data's layout names."""
    absolute = Path(os.path.abspath(path))
    return list(dict.fromkeys([absolute.parts, absolute.resolve().parts]))


def eval_only_folder(path: str | Path) -> str | None:
    """The evaluation-only folder (of :data:`EVAL_ONLY_FOLDERS`) that ``path`` lies in or holds, else None.

    ``path`` lies in ``photos/bsds500/test`` when its components contain ``bsds500/test`` (wherever the data root
    is); it holds it when it is named like a folder of that path (``photos``, ``bsds500``) and the rest of the path
    exists below it, or when it is a data root (image folders are searched recursively).
    """
    path = Path(path)
    for folder in EVAL_ONLY_FOLDERS:
        pattern = tuple(Path(folder).parts)
        tail = pattern[1:]  # "bsds500/test", "strecha/Herz-Jesus-P25": the names that identify the data
        for parts in _parts(path):
            if any(parts[i:i + len(tail)] == tail for i in range(len(parts) - len(tail) + 1)):
                return folder
            for k in range(len(pattern)):  # a folder named pattern[k - 1] (or a data root) holding pattern[k:]
                if (k == 0 or parts[-1] == pattern[k - 1]) and Path(*parts, *pattern[k:]).exists():
                    return folder
    return None


def eval_only_frames(path: str | Path, frame_range) -> int | None:
    """The first evaluation-only frame index of the sequence at ``path`` that ``frame_range`` reaches, else None.

    Args:
        path: sequence folder; frame_range: [start, stop) or None (all frames).
    """
    names = [p[-1].lower() for p in _parts(Path(path)) if p]
    for key, first in EVAL_ONLY_FRAMES_FROM.items():
        if any(key in name for name in names):
            stop = None if frame_range is None else int(frame_range[1])
            return first if stop is None or stop > first else None
    return None


def sources_of(conf) -> list[Source]:
    """The data a training run reads, from the keys every featlab training config names its data with.

    ``data.photos`` (list of folders) trains and ``val.photos`` (a folder) selects; ``data.root`` with
    ``data.frame_range`` trains and ``val.root`` (null: ``data.root``) with ``val.frame_range`` selects. A new
    training method must name its data with these keys (or extend this function), so that the guard sees it.
    """
    data, val = conf.get("data") or {}, conf.get("val") or {}
    out = [Source("train", f, key="data.photos") for f in (data.get("photos") or [])]
    if val.get("photos"):
        out.append(Source("select", val.get("photos"), key="val.photos"))
    if data.get("root"):
        frames = data.get("frame_range")
        out.append(Source("train", data.get("root"), None if frames is None else tuple(frames), "data.frame_range"))
    if (val.get("root") or data.get("root")) and "frame_range" in val:
        frames = val.get("frame_range")
        out.append(Source("select", val.get("root") or data.get("root"), None if frames is None else tuple(frames),
                          "val.frame_range"))
    for k, c in enumerate(data.get("collections") or []):  # posed collections split by split_views (featlab train pose)
        ranges = (c.get("ranges") or {}) if c.get("split") == "ranges" else {}
        for role in ROLES:
            frames = ranges.get(role)
            if c.get("split") != "ranges" or frames is not None:
                out.append(Source(role, c.get("root"), None if frames is None else tuple(frames),
                                  f"data.collections[{k}]"))
    return out


def check_sources(sources: Iterable[Source], allow_eval_data: bool = False) -> None:
    """Refuse training or selecting on evaluation-only data (see the module docstring).

    Raises:
        ConfigError: (one line) a source reads evaluation-only data and ``allow_eval_data`` is false.
    """
    if allow_eval_data:
        return
    for s in sources:
        if s.role not in ROLES:
            raise ValueError(f"unknown data role '{s.role}'; choose one of {', '.join(ROLES)}")
        if s.path is None or s.path == "":
            continue
        what = "trains on" if s.role == "train" else "selects on"
        key = f"{s.key}=" if s.key else ""
        if s.frame_range is None and (folder := eval_only_folder(s.path)) is not None:
            raise ConfigError(f"{key}{s.path} {what} evaluation-only data ({folder} is for reporting only, "
                              f"docs/DATASETS.md); pass data.{ALLOW_KEY}=true to do it anyway")
        if s.frame_range is not None and (first := eval_only_frames(s.path, s.frame_range)) is not None:
            raise ConfigError(f"{key}{list(s.frame_range)} of {s.path} {what} evaluation-only frames (>= {first} "
                              f"are for reporting only, docs/DATASETS.md); pass data.{ALLOW_KEY}=true to do it "
                              f"anyway")


# ------------------------------------------------------------------------------------------ posed collections
#: the parts a posed collection is split into (featlab train pose): optimised on, selected on, reported on
VIEW_PARTS = ("train", "select", "heldout")


def viewpoint_order(T_w2c) -> list[int]:
    """Views ordered by the azimuth of their viewing direction about the collection's mean up axis.

    The up axis is the mean of the cameras' ``-y`` axes in world coordinates (OpenCV cameras: y points down);
    each optical axis is projected onto the plane orthogonal to it and the views are sorted by its angle there,
    starting after the largest angular gap, so that views around a building (or a turn of a sequence) form
    contiguous arcs.

    Args:
        T_w2c: (N, 4, 4) world-to-camera poses (rows of NaNs: no pose, placed last).
    Returns:
        the N view indices in that order.
    """
    import numpy as np

    T = np.asarray(T_w2c, np.float64)
    posed = np.flatnonzero(np.isfinite(T).all((1, 2)))
    R = T[posed, :3, :3]
    axes, downs = R[:, 2, :], R[:, 1, :]  # rows of R: camera axes in world coordinates
    up = -downs.mean(0)
    up /= max(np.linalg.norm(up), 1e-12)
    e1 = axes.mean(0) - up * (axes.mean(0) @ up)
    if np.linalg.norm(e1) < 1e-9:  # directions spread all around: any axis in the plane
        e1 = np.cross(up, [1.0, 0.0, 0.0] if abs(up[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(up, e1)
    angle = np.arctan2(axes @ e2, axes @ e1)
    order = np.argsort(angle, kind="stable")
    if len(order) > 1:
        gaps = np.diff(np.concatenate([angle[order], angle[order[:1]] + 2 * np.pi]))
        order = np.roll(order, -((int(np.argmax(gaps)) + 1) % len(order)))
    missing = np.setdiff1d(np.arange(len(T)), posed)
    return [int(i) for i in posed[order]] + [int(i) for i in missing]


def split_views(order, fractions=(0.6, 0.2, 0.2), buffer: int = 1) -> dict[str, list[int]]:
    """Split views into contiguous train / select / held-out runs of ``order`` with ``buffer`` views between parts.

    The buffer views (neighbours of the boundaries: nearly the same image as the last view of the previous part)
    belong to no part, so no held-out or selection view has a near-duplicate in training.

    Args:
        order: view indices in frame order (a sequence) or :func:`viewpoint_order`.
        fractions: (train, select, heldout) shares of the views left after the buffers (>= 0, sum > 0); a
            zero share gives an empty part (and no buffer before it).
        buffer: views left out between two non-empty parts.
    Returns:
        ``{"train": [...], "select": [...], "heldout": [...]}`` sorted index lists, pairwise disjoint.
    Raises:
        ConfigError: bad fractions or buffer, or too few views for a non-empty part.
    """
    order = [int(i) for i in order]
    fr = [float(f) for f in fractions]
    if len(fr) != 3 or min(fr) < 0 or sum(fr) <= 0 or int(buffer) < 0:
        raise ConfigError(f"split fractions must be 3 shares >= 0 with a positive sum and buffer >= 0, got "
                          f"{list(fractions)} and {buffer}")
    wanted = [k for k in range(3) if fr[k] > 0]
    free = len(order) - int(buffer) * (len(wanted) - 1)
    if free < len(wanted):
        raise ConfigError(f"cannot split {len(order)} views into {len(wanted)} parts with {buffer} buffer views "
                          f"between them")
    total = sum(fr)
    counts = [0, 0, 0]
    for k in wanted:  # largest remainder: every wanted part gets at least one view
        counts[k] = max(1, int(free * fr[k] / total))
    while sum(counts) > free:
        counts[max(wanted, key=lambda k: counts[k])] -= 1
    while sum(counts) < free:
        counts[max(wanted, key=lambda k: free * fr[k] / total - counts[k])] += 1
    out, start = {}, 0
    for k, part in enumerate(VIEW_PARTS):
        if counts[k] and start:
            start += int(buffer)
        out[part] = sorted(order[start:start + counts[k]])
        start += counts[k]
    return out


def check_run(conf) -> None:
    """:func:`check_sources` on :func:`sources_of` ``conf``, with its ``data.allow_eval_data`` (false if the
    method has no such key). Called by ``featlab train`` for every method before anything is written.

    Raises:
        ConfigError: (one line) the run trains or selects on evaluation-only data.
    """
    data = conf.get("data") or {}
    check_sources(sources_of(conf), allow_eval_data=bool(data.get(ALLOW_KEY, False)))


__all__ = ["DATA_ENV", "ALLOW_KEY", "TRAIN_PHOTOS", "OPTIONAL_TRAIN_PHOTOS", "SELECT_PHOTOS", "REPORT_PHOTOS",
           "EVAL_ONLY_FOLDERS", "TRAIN_FRAMES", "SELECT_FRAMES", "REPORT_FRAMES", "Source", "data_root",
           "data_path", "eval_only_folder", "eval_only_frames", "sources_of", "check_sources", "check_run",
           "VIEW_PARTS", "viewpoint_order", "split_views"]
