"""``featlab demo``: the main job on the bundled image pair (or your own pair).

Extract features, match them (mutual nearest neighbour), estimate the homography robustly, and write a match
picture and a metrics table into the output folder.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_write_text

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "demo"
#: the model the demo runs by default: featlab's shipped residual-SIFT model (docs/MODELS.md, docs/RESULTS.md)
DEFAULT_MODEL = "residual-sift"


def register(sub):
    p = sub.add_parser("demo", help="match the bundled image pair and write a picture + metrics",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"extractor name (default: {DEFAULT_MODEL}; "
                   "see `featlab models`)")
    p.add_argument("--image0", type=Path, default=None, help="first image (give both --image0 and --image1, or "
                   "neither for the bundled pair)")
    p.add_argument("--image1", type=Path, default=None, help="second image")
    p.add_argument("--homography", type=Path, default=None,
                   help="ground-truth 3x3 H_0to1 text file in featlab pixels (default: the bundled pair's; "
                        "omit with your own images to skip the ground-truth metrics)")
    p.add_argument("--max-keypoints", type=int, default=2000, help="keypoints per image (default: 2000; -1: all)")
    p.add_argument("--max-size", type=int, default=None, metavar="N",
                   help="extract images whose longest side exceeds N px at N px (default: as `featlab extract`, "
                        "1600; 0: full size)")
    p.add_argument("--threshold", type=float, default=3.0, help="pixel threshold for RANSAC and correctness")
    p.add_argument("-o", "--output", type=Path, default=Path("featlab_demo"), help="output folder")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..datasets.hpatches import read_homography_file
    from ..extractors import build_extractor, extract_image
    from ..geometry.homography import homography_corner_error, warp_points_homography
    from ..geometry.robust import estimate_homography
    from ..io.image import read_image
    from ..matching import match_descriptors, matches_to_indices
    from ..viz import draw_matches, save_image

    from ..conf import to_container
    from ..errors import ConfigError
    from ..io.atomic import write_error
    from .extract import DEFAULT_MAX_SIZE, bounded_resize

    if (args.image0 is None) != (args.image1 is None):
        given = "--image0" if args.image1 is None else "--image1"
        raise ConfigError(f"{given} needs its partner: give both --image0 and --image1 (or neither, for the bundled "
                          "pair)")
    if args.image0 is None:
        args.image0, args.image1 = ASSETS / "image0.jpg", ASSETS / "image1.jpg"
    bundled = args.image0 == ASSETS / "image0.jpg" and args.image1 == ASSETS / "image1.jpg"
    max_size = DEFAULT_MAX_SIZE if args.max_size is None else args.max_size
    h_path = args.homography or (ASSETS / "H_0to1.txt" if bundled else None)
    H_gt = read_homography_file(h_path) if h_path else None
    img0, img1 = read_image(args.image0), read_image(args.image1)
    extractor = build_extractor(args.model, {"max_keypoints": args.max_keypoints})

    t0 = time.perf_counter()
    resize = to_container(extractor.conf.resize)
    pred0 = extract_image(extractor, img0, resize=bounded_resize(img0.shape, resize, max_size))
    pred1 = extract_image(extractor, img1, resize=bounded_resize(img1.shape, resize, max_size))
    t_extract = (time.perf_counter() - t0) / 2
    t0 = time.perf_counter()
    matches0, _ = match_descriptors(pred0["descriptors"], pred1["descriptors"], mutual=True,
                                    binary=extractor.descriptor_type == "binary")
    t_match = time.perf_counter() - t0
    i0, i1 = matches_to_indices(matches0)
    m0, m1 = pred0["keypoints"][i0].astype(np.float64), pred1["keypoints"][i1].astype(np.float64)
    H_est, inliers = estimate_homography(m0, m1, method="magsac", threshold=args.threshold)

    rows = {
        "model": args.model,
        "image0": str(args.image0),
        "image1": str(args.image1),
        "keypoints0": int(len(pred0["keypoints"])),
        "keypoints1": int(len(pred1["keypoints"])),
        "mutual_nn_matches": int(len(i0)),
        "ransac_inliers": int(inliers.sum()) if H_est is not None else 0,
        "extract_ms_per_image": round(1000 * t_extract, 1),
        "match_ms": round(1000 * t_match, 1),
    }
    correct = None
    if H_gt is not None:
        err = np.linalg.norm(warp_points_homography(m0, H_gt) - m1, axis=1) if len(m0) else np.zeros(0)
        correct = err <= args.threshold
        for t in (1, 3, 5):
            rows[f"MMA@{t}px"] = round(float((err <= t).mean()) if len(err) else 0.0, 3)
        h, w = img0.shape[:2]
        ce = homography_corner_error(H_est, H_gt, (h, w))
        rows["H_corner_error_px"] = round(float(ce), 2) if np.isfinite(ce) else "failed"
    elif H_est is not None:
        correct = inliers.astype(bool)

    out = args.output
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise (write_error(e, out) or e) from None
    title = f"{args.model}: {len(i0)} matches" + (
        f", {int(correct.sum())} correct within {args.threshold:g}px (green)" if H_gt is not None else "")
    pic = draw_matches(img0, img1, m0, m1, correct, title=title)
    png = save_image(out / "matches.png", pic)
    label = "bundled pair (synthetic warp of scikit-image's rocket photo)" if bundled else "user pair"
    md = [f"# featlab demo: {args.model}", "", f"Data: {label}.", "", "| metric | value |", "|---|---|"]
    md += [f"| {k} | {v} |" for k, v in rows.items()]
    atomic_write_text(out / "metrics.md", "\n".join(md) + "\n")
    atomic_write_text(out / "metrics.json", json.dumps({"data": label, **rows}, indent=2) + "\n")
    print("\n".join(md[4:]))
    print(f"\nmatch picture: {png}\nmetrics:       {out / 'metrics.md'} (and metrics.json)")
    return 0
