"""``featlab reconstruct``: images -> features -> pairs -> matches -> COLMAP database -> incremental mapping.

Stages and their files in the output folder (hloc's layout, so hloc and COLMAP read them unchanged):

1. ``features.h5``: ``featlab extract`` (resumable; an interrupted run continues).
2. ``pairs.txt``: exhaustive, sequential (each image and its N successors in name order) or retrieval (each image
   and its K nearest by a VLAD global descriptor, :mod:`.pairs`).
3. ``matches.h5``: ``featlab match`` on those pairs (resumable).
4. ``database.db``: cameras (:mod:`.cameras`), keypoints and matches, then COLMAP's geometric verification.
5. ``models/<i>/``: every model COLMAP's incremental mapper finds; the largest is copied to ``sparse/`` (COLMAP
   binary files).
6. ``report.json``, ``report.md``, ``model.png``: registered images, 3D points, mean track length, mean
   reprojection error, time per stage; the model seen from above with its cameras.

With ``colmap=True`` stages 1-4 are COLMAP's own (SIFT extraction, matching and verification, :mod:`.reference`),
on the same cameras, pairs rule and mapper: the reference the featlab models are compared with.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import time
from pathlib import Path

from ..commands.extract import DEFAULT_MAX_SIZE
from ..errors import ConfigError, InputError
from ..timing import cpu_seconds

#: featlab's model for reconstruction: chosen on castle-P30 (docs/RECONSTRUCTION.md), where RootSIFT was as accurate
#: as residual-sift (median position error 12.9 vs 13.3 cm, all 30 images each) at less CPU time (506 vs 594 s)
DEFAULT_MODEL = "rootsift"
#: images with a longer side than this are extracted at this longest side (``featlab extract --max-size``'s default)
DEFAULT_MAX_SIDE = DEFAULT_MAX_SIZE
#: keypoints per image (COLMAP's SIFT default, max_num_features)
DEFAULT_MAX_KEYPOINTS = 8192
#: Lowe's ratio for models with SIFT keypoints and descriptors built on SIFT (hloc's NN-ratio for SIFT); learned
#: detectors-descriptors use mutual nearest neighbours only (hloc's NN-mutual for DISK, ALIKED)
SIFT_RATIO = 0.8
# learned descriptors (and ORB) are matched mutual-only, as hloc's NN-mutual; SIFT-family models with the ratio test
MUTUAL_ONLY_MODELS = ("disk", "aliked", "xfeat", "caps", "caps-sift", "scfeat", "scfeat-desc", "orb")


def default_ratio(model: str) -> float | None:
    """The ratio test threshold used for ``model`` when ``--ratio`` is not given."""
    return None if model in MUTUAL_ONLY_MODELS else SIFT_RATIO


def _subcommand_args(module, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the parser of another featlab subcommand (its defaults included), to run it as is."""
    parser = argparse.ArgumentParser(prog="featlab")
    sub = parser.add_subparsers(dest="command")
    module.register(sub)
    return parser.parse_args(argv)


class StageClock:
    """Wall-clock and CPU seconds per stage of a run (``with clock("match"): ...``).

    CPU: :func:`featlab.timing.cpu_seconds` (this process, all its threads, pycolmap's included, and its finished
    child processes): the cost of a stage that does not depend on what else runs on the machine, where the wall
    clock does.
    """

    cpu_seconds = staticmethod(cpu_seconds)

    def __init__(self):
        self.wall: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        w, c = time.perf_counter(), self.cpu_seconds()
        try:
            yield
        finally:
            self.wall[stage] = self.wall.get(stage, 0.0) + time.perf_counter() - w
            self.cpu[stage] = self.cpu.get(stage, 0.0) + self.cpu_seconds() - c


def reconstruct(images, out, model: str = DEFAULT_MODEL, pairs: str = "exhaustive", pairs_n: int | None = None,
                resize: int | None = None, max_keypoints: int = DEFAULT_MAX_KEYPOINTS, ratio: float | None = None,
                camera_mode: str = "per-folder", camera_model: str = "SIMPLE_RADIAL", colmap: bool = False,
                conf: list[str] | None = None, seed: int = 0, num_threads: int = 1, command: str = "") -> dict:
    """Reconstruct a folder of images into ``out`` (see the module doc); returns the report (also written).

    Args:
        images: folder of images (searched recursively; names are paths relative to it).
        out: output folder (created; features and matches there are resumed).
        model: featlab extractor name, ignored with ``colmap``.
        pairs, pairs_n: 'exhaustive' | 'sequential' N | 'retrieval' K.
        resize: longest side for extraction; None: each image at full size up to :data:`DEFAULT_MAX_SIDE`, at that
            longest side above it (``featlab extract``'s bound).
        ratio: ratio test threshold; None: :func:`default_ratio` (0 disables it).
        camera_mode, camera_model: see :mod:`.cameras`.
        conf: extra ``key=value`` extractor settings (``featlab extract --conf``).
        num_threads: threads for torch, OpenCV and COLMAP.
    Raises:
        InputError, ConfigError: bad inputs or settings (one line from the CLI).
    """
    import cv2
    import torch

    from ..commands import extract as extract_cmd
    from ..commands import match as match_cmd
    from ..conf import load_yaml
    from ..io.image import list_images
    from ..io.pairs import write_pairs
    from .cameras import camera_info, group_cameras, image_size_as_read, make_camera
    from .database import verify_matches, write_database
    from .mapping import incremental_mapping, largest_model, model_statistics
    from .pairs import select_pairs
    from .report import plot_model, write_report

    images, out = Path(images), Path(out)
    files = list_images(images)
    names = [f.relative_to(images).as_posix() for f in files]
    if len(names) < 2:
        raise InputError(f"{images} holds {len(names)} image; a reconstruction needs at least 2")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} is a file; give a folder")
    if colmap and pairs == "retrieval":
        raise ConfigError("--colmap runs COLMAP's exhaustive or sequential matching; retrieval pairs need featlab "
                          "features")
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(int(num_threads))
    cv2.setNumThreads(int(num_threads))

    sizes = [image_size_as_read(f) for f in files]
    infos = [camera_info(f, w, h) for f, (w, h) in zip(files, sizes)]
    camera_index = group_cameras(names, infos, camera_mode)
    first = {}
    for i, c in enumerate(camera_index):
        first.setdefault(c, i)
    cameras = [make_camera(camera_model, infos[first[c]]) for c in range(len(first))]
    ratio = default_ratio(model) if ratio is None else (None if ratio == 0 else ratio)

    clock = StageClock()
    features, matches, pairs_path = out / "features.h5", out / "matches.h5", out / "pairs.txt"
    db_path = out / "database.db"
    settings = {"pairs": pairs if pairs_n is None else f"{pairs} {pairs_n}", "camera_mode": camera_mode,
                "camera_model": camera_model, "cameras": len(cameras), "threads": num_threads, "seed": seed}
    if colmap:
        from .reference import colmap_features_and_matches

        settings.update(features="COLMAP SIFT (pycolmap defaults, max 8192 features)",
                        matcher="COLMAP (mutual, ratio 0.8, distance 0.7)")
        if pairs != "exhaustive":
            write_pairs(pairs_path, select_pairs(names, pairs, pairs_n))
        colmap_features_and_matches(db_path, images, names, cameras, camera_index, pairs, pairs_n, pairs_path,
                                    num_threads, clock, seed=seed)
    else:
        settings.update(model=model, resize=resize if resize is not None else f"none up to {DEFAULT_MAX_SIDE} px",
                        max_keypoints=max_keypoints, ratio=ratio, mutual=True)
        argv = ["extract", str(images), "-o", str(features), "--model", model, "--max-keypoints", str(max_keypoints)]
        if resize is not None:
            argv += ["--resize", str(resize)]
        if conf:
            argv += ["--conf", *conf]
        with clock("extract"):
            extract_cmd.run(_subcommand_args(extract_cmd, argv))
        with clock("pairs"):
            pair_list = select_pairs(names, pairs, pairs_n, features=features, seed=seed)
            write_pairs(pairs_path, pair_list)
        argv = ["match", str(features), "--pairs", str(pairs_path), "-o", str(matches)]
        if ratio is not None:
            argv += ["--ratio", str(ratio)]
        with clock("match"):
            match_cmd.run(_subcommand_args(match_cmd, argv))
        settings["matcher"] = load_yaml(matches.with_name(matches.name + ".conf.yaml")).get("matcher")
        with clock("verify"):
            write_database(db_path, names, cameras, camera_index, features, matches, pair_list)
            verified = verify_matches(db_path, pairs_path, seed=seed, num_threads=num_threads)
        settings["verified_pairs"] = verified
    with clock("mapping"):
        models = incremental_mapping(db_path, images, out / "models", seed=seed, num_threads=num_threads)
        rec = largest_model(models)
    sparse = out / "sparse"
    shutil.rmtree(sparse, ignore_errors=True)
    if rec is not None:
        sparse.mkdir(parents=True)
        rec.write_binary(str(sparse))
    stats = model_statistics(rec, len(names))
    registered = {rec.image(i).name for i in rec.reg_image_ids()} if rec is not None else set()
    label = images.parent.name if images.name == "images" else images.name  # SCENE/images -> SCENE
    report = {"title": f"{label} with {'COLMAP SIFT' if colmap else model}", "command": command,
              "images_dir": str(images), "statistics": stats, "num_models": len(models), "times_s": clock.wall,
              "cpu_s": clock.cpu,
              "settings": settings, "unregistered": [n for n in names if n not in registered]}
    if rec is None:
        report["note"] = "No model: the mapper found no initial pair (too few verified matches)."
    write_report(out, report)
    plot_model(out / "model.png", rec, title=f"{report['title']}: {stats['registered']}/{len(names)} images, "
                                              f"{stats['points3D']} points (top view)")
    return report
