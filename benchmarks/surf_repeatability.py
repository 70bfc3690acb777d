"""SURF against SIFT on synthetic homography warps: repeatability, MMA and extraction time.

Pairs are :class:`featlab.datasets.synthetic.SyntheticHomographyPairs` built from held-out photos
(``photos/bsds500/test``; these are **synthetic warps**, not HPatches): each photo is cropped to ``--size``,
warped by a random homography (the dataset's default ranges: rotation up to 30 degrees, zoom, perspective) and
both images get the dataset's default photometric changes. For every pair and method:

- repeatability @ ``--threshold`` px (:func:`featlab.eval.metrics.repeatability`, symmetric, shared region),
- MMA @ ``--threshold`` px of mutual nearest-neighbour matches (:func:`featlab.matching.match_descriptors`,
  :func:`featlab.eval.metrics.mma`), averaged over pairs.

Extraction time is the median forward time on 640x480 versions of the first photos (after one warm-up run),
with the torch thread count shown in the header.

Usage::

    .venv/bin/python benchmarks/surf_repeatability.py [--max-images 12] [--max-keypoints 1000]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from featlab.datasets.synthetic import SyntheticHomographyPairs
from featlab.eval.metrics import mma, repeatability
from featlab.extractors import build_extractor
from featlab.io.image import image_to_tensor, list_images, read_image
from featlab.matching import match_descriptors

DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "photos" / "bsds500" / "test"
METHODS = ("surf", "surf64", "surf-upright", "sift")


def features(extractor, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        pred = extractor({"image": image_to_tensor(image)})
    return pred["keypoints"][0].numpy(), pred["descriptors"][0]


def evaluate(pairs, methods, max_keypoints: int, threshold: float) -> dict[str, dict[str, float]]:
    extractors = {m: build_extractor(m, {"max_keypoints": max_keypoints}) for m in methods}
    scores = {m: {"rep": [], "mma": [], "kpts": [], "matches": []} for m in methods}
    for pair in pairs:
        size = pair["image0"].shape[:2]
        for m, ext in extractors.items():
            k0, d0 = features(ext, pair["image0"])
            k1, d1 = features(ext, pair["image1"])
            matches0, _ = match_descriptors(d0, d1, mutual=True)
            matches0 = matches0.numpy()
            s = scores[m]
            s["rep"].append(repeatability(k0, k1, pair["H_0to1"], size, size, threshold))
            s["mma"].append(float(mma(k0, k1, matches0, pair["H_0to1"], [threshold])[0]))
            s["kpts"].append(0.5 * (len(k0) + len(k1)))
            s["matches"].append(float((matches0 >= 0).sum()))
    return {m: {k: float(np.mean(v)) for k, v in s.items()} for m, s in scores.items()}


def time_at_640x480(paths, methods, max_keypoints: int, repeats: int = 3) -> dict[str, tuple[float, float]]:
    """Median extraction time (s) and mean keypoint count per 640x480 image."""
    images = [cv2.resize(read_image(p), (640, 480), interpolation=cv2.INTER_LINEAR) for p in paths]
    out = {}
    for m in methods:
        ext = build_extractor(m, {"max_keypoints": max_keypoints})
        features(ext, images[0])  # warm-up
        times, counts = [], []
        for img in images:
            for _ in range(repeats):
                t0 = time.perf_counter()
                k, _ = features(ext, img)
                times.append(time.perf_counter() - t0)
            counts.append(len(k))
        out[m] = (statistics.median(times), float(np.mean(counts)))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of photos (bsds500/test)")
    parser.add_argument("--max-images", type=int, default=12, help="photos used (one warp each)")
    parser.add_argument("--size", type=int, nargs=2, default=[320, 480], metavar=("H", "W"),
                        help="size of both images of a pair")
    parser.add_argument("--max-keypoints", type=int, default=1000)
    parser.add_argument("--threshold", type=float, default=3.0, help="correctness threshold in pixels")
    parser.add_argument("--timing-images", type=int, default=3, help="photos timed at 640x480")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args(argv)

    if not args.data.is_dir():
        print(f"skipped: photo folder not found: {args.data} (the shared data set is absent)")
        return 0
    pairs = SyntheticHomographyPairs(args.data, {"max_images": args.max_images, "resize": list(args.size)})
    t0 = time.perf_counter()
    results = evaluate(pairs, args.methods, args.max_keypoints, args.threshold)
    timing = time_at_640x480(list_images(args.data)[: args.timing_images], args.methods, args.max_keypoints)
    t = args.threshold
    print(f"synthetic warps of {len(pairs)} photos from {args.data.resolve().name} "
          f"({pairs.size[1]}x{pairs.size[0]}, SyntheticHomographyPairs defaults, seed 0); "
          f"max {args.max_keypoints} keypoints; torch threads {torch.get_num_threads()}")
    header = (f"| method | keypoints | repeatability@{t:g}px | mutual-NN matches | MMA@{t:g}px "
              f"| ms / 640x480 image | keypoints @640x480 |")
    print(header)
    print("|" + "|".join("---" for _ in range(header.count("|") - 1)) + "|")
    for m in args.methods:
        r = results[m]
        ms, n640 = timing[m]
        print(f"| {m} | {r['kpts']:.0f} | {r['rep']:.3f} | {r['matches']:.0f} | {r['mma']:.3f} "
              f"| {1000 * ms:.0f} | {n640:.0f} |")
    print(f"(total {time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
