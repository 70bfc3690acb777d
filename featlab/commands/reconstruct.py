"""``featlab reconstruct``: a sparse 3D model (COLMAP) of a folder of photos, from featlab features.

extract (resumable) -> pairs -> match (resumable) -> COLMAP database with geometric verification -> incremental
mapping (pycolmap). The output folder holds ``features.h5``, ``pairs.txt``, ``matches.h5`` (hloc layout),
``database.db``, ``sparse/`` (the largest model, COLMAP binary files), ``report.json``, ``report.md`` (registered
images, 3D points, mean track length, mean reprojection error, time per stage) and ``model.png`` (a top view of
the model and its cameras). Running the same command again resumes extraction and matching and redoes the rest.

Defaults: model rootsift (featlab's best model for this, measured on castle-P30 against residual-sift:
docs/RECONSTRUCTION.md), full size up to a longest side of 1600 px (larger photos are extracted at 1600), 8192
keypoints, mutual nearest neighbours with ratio 0.8 (mutual only for DISK, ALIKED, XFeat, CAPS, ORB), one shared
SIMPLE_RADIAL camera per folder with the focal length from EXIF when present. Images are read with their EXIF
orientation applied (featlab.io.image). --colmap runs COLMAP's own SIFT extraction and matching instead, on the same
cameras and mapper, as the reference.

Examples:
    featlab reconstruct photos/ -o recon/
    featlab reconstruct frames/ -o recon/ --model sift --pairs sequential 10
    featlab reconstruct photos/ -o recon/ --pairs retrieval 20 --camera-mode per-image --camera-model OPENCV
    featlab reconstruct photos/ -o recon-colmap/ --colmap
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ..errors import ConfigError


def register(sub):
    from ..sfm.cameras import CAMERA_MODELS, CAMERA_MODES
    from ..sfm.pipeline import DEFAULT_MAX_KEYPOINTS, DEFAULT_MAX_SIDE, DEFAULT_MODEL

    p = sub.add_parser("reconstruct", help="sparse 3D reconstruction of a folder of images (COLMAP, pycolmap)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("images", type=Path, help="folder of images (searched recursively)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"extractor name (default: {DEFAULT_MODEL})")
    p.add_argument("--pairs", nargs="+", default=["exhaustive"], metavar="MODE",
                   help="exhaustive (default) | sequential N (each image and its N successors in name order) | "
                        "retrieval K (each image and its K nearest by a VLAD global descriptor)")
    p.add_argument("--resize", type=int, default=None, metavar="N",
                   help=f"longest side for extraction (default: full size, or {DEFAULT_MAX_SIDE} for larger images)")
    p.add_argument("--max-keypoints", type=int, default=DEFAULT_MAX_KEYPOINTS,
                   help=f"keypoints per image (default: {DEFAULT_MAX_KEYPOINTS})")
    p.add_argument("--ratio", type=float, default=None,
                   help="ratio test threshold (default: 0.8 for SIFT-based models, none for learned detectors; "
                        "0: none)")
    p.add_argument("--camera-mode", choices=CAMERA_MODES, default="per-folder",
                   help="which images share a camera (default: per-folder)")
    p.add_argument("--camera-model", choices=CAMERA_MODELS, default="SIMPLE_RADIAL",
                   help="COLMAP camera model (default: SIMPLE_RADIAL)")
    p.add_argument("--colmap", action="store_true",
                   help="COLMAP's own SIFT extraction and matching instead of featlab's (the reference)")
    p.add_argument("--conf", nargs="+", default=[], metavar="KEY=VALUE", help="extractor settings")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch, OpenCV and COLMAP (default: all cores)")
    p.add_argument("--seed", type=int, default=0, help="seed of RANSAC, the mapper and the retrieval vocabulary")
    p.set_defaults(func=run)


def parse_pairs(values: list[str]) -> tuple[str, int | None]:
    """``--pairs`` values -> (mode, N): ['exhaustive'] | ['sequential', N] | ['retrieval', K]."""
    from ..sfm.pairs import PAIR_MODES

    mode = values[0]
    if mode not in PAIR_MODES:
        raise ConfigError(f"--pairs must be exhaustive | sequential N | retrieval K, got '{' '.join(values)}'")
    if mode == "exhaustive":
        if len(values) != 1:
            raise ConfigError("--pairs exhaustive takes no number")
        return mode, None
    if len(values) != 2 or not values[1].isdigit() or int(values[1]) < 1:
        raise ConfigError(f"--pairs {mode} needs one positive integer, e.g. --pairs {mode} 10")
    return mode, int(values[1])


def run(args) -> int:
    from ..sfm.pipeline import reconstruct

    mode, n = parse_pairs(args.pairs)
    if args.max_keypoints < 1 and args.max_keypoints != -1:
        raise ConfigError(f"--max-keypoints must be positive (or -1: all), got {args.max_keypoints}")
    if args.resize is not None and args.resize < 16:
        raise ConfigError(f"--resize must be at least 16 px, got {args.resize}")
    if args.ratio is not None and not 0 <= args.ratio <= 1:
        raise ConfigError(f"--ratio must be in [0, 1], got {args.ratio}")
    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    if threads < 1:
        raise ConfigError(f"--threads must be positive, got {threads}")
    command = "featlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else ""
    report = reconstruct(args.images, args.output, model=args.model, pairs=mode, pairs_n=n, resize=args.resize,
                         max_keypoints=args.max_keypoints, ratio=args.ratio, camera_mode=args.camera_mode,
                         camera_model=args.camera_model, colmap=args.colmap, conf=args.conf, seed=args.seed,
                         num_threads=threads, command=command)
    s = report["statistics"]
    total, cpu = sum(report["times_s"].values()), sum(report["cpu_s"].values())
    track = f", mean track length {s['mean_track_length']:.2f}" if s["mean_track_length"] else ""
    print(f"{args.output}: {s['registered']}/{s['images']} images registered, {s['points3D']} points{track}, "
          f"{total:.0f} s ({cpu:.0f} CPU-s); report in {args.output / 'report.md'}")
    return 0
