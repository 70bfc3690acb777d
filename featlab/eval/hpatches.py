"""Homography benchmark: HPatches (or synthetic warps of a photo folder), scored as in SuperPoint / D2-Net.

Protocol (see :mod:`featlab.eval.metrics` for the exact metric definitions):

1. Both images of a pair are resized to the setting's exact size (H, W) (aspect ratio not kept, as SuperPoint and
   the residual-descriptor paper do); the ground-truth homography is adapted to the resized images
   (``H' = S1 H S0^-1`` with the pure-scaling matrices ``S``, exact in featlab's pixel convention).
2. Loop 1, extraction: each image is run once per method through the extractor with top-k keypoints and cached
   (:class:`featlab.eval.cache.FeatureCache`); a rerun reuses the cache.
3. Loop 2, scoring from the cache: mutual nearest-neighbour matching, then per pair MMA@1..10 px, the homography
   estimated robustly from all matches (OpenCV RANSAC, 3 px, by default: SuperPoint's choice) and its corner
   accuracy Cor-1/3/5, matching score and repeatability at 3 px, keypoint and match counts.
4. Per-pair values are averaged over pairs, overall and per split (``i_`` illumination / ``v_`` viewpoint
   sequences for HPatches).

Synthetic warps are labelled "synthetic warps of <folder>" in every output: they are not HPatches.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..conf import resolve_conf, to_container
from ..io.image import resize_exact
from . import metrics
from .cache import (FeatureCache, data_identity, extract_numpy, extractor_settings, match_features,
                    no_progress_bar)

#: the two settings of the residual-descriptor paper: (H, W) and the number of keypoints kept
SETTINGS = {"240x320_300": ((240, 320), 300), "480x640_1000": ((480, 640), 1000)}

default_conf = {
    "resize": [480, 640],  # exact (H, W) of both images of a pair; the GT homography is adapted
    "max_keypoints": 1000,  # top-k keypoints kept by each extractor
    "mma_thresholds": list(metrics.MMA_THRESHOLDS),  # px, MMA curve
    "homography_thresholds": list(metrics.HOMOGRAPHY_THRESHOLDS),  # px, corner error thresholds (Cor-t)
    "correct_threshold": 3.0,  # px, correctness threshold of matching score and repeatability
    "estimator": "ransac",  # geometry.robust.estimate_homography method: ransac | magsac | poselib
    "ransac_threshold": 3.0,  # px, inlier threshold of the robust homography estimation
}


def resolve_setting(setting: str | None, resize: list[int] | None = None,
                    max_keypoints: int | None = None) -> tuple[tuple[int, int], int]:
    """A named setting ('240x320_300') with optional explicit overrides -> ((H, W), k)."""
    from ..errors import ConfigError

    if setting is not None and setting not in SETTINGS:
        raise ConfigError(f"unknown setting '{setting}'; choose one of {', '.join(SETTINGS)} "
                          "(or give --resize H W --max-keypoints K)")
    size, k = SETTINGS[setting or "480x640_1000"]
    if resize is not None:
        if len(resize) != 2 or min(resize) < 16:
            raise ConfigError(f"--resize takes H W, each at least 16 px, got {resize}")
        size = (int(resize[0]), int(resize[1]))
    if max_keypoints is not None:
        if max_keypoints <= 0:
            raise ConfigError(f"--max-keypoints must be positive, got {max_keypoints}")
        k = int(max_keypoints)
    return size, k


def resize_pair(item: dict, size: tuple[int, int] | None) -> dict:
    """Resize both images of a homography pair to exactly ``size`` = (H, W) and adapt ``H_0to1``.

    In featlab pixels an image of width W spans [0, W], so resizing is the pure scaling
    ``S = diag(W'/W, H'/H, 1)`` and the homography between the resized images is ``S1 @ H_0to1 @ inv(S0)``.
    """
    if size is None:
        return item
    h_new, w_new = int(size[0]), int(size[1])
    out = dict(item)
    scales = []
    for key in ("image0", "image1"):
        img = item[key]
        h, w = img.shape[:2]
        scales.append(np.diag([w_new / w, h_new / h, 1.0]))
        out[key] = resize_exact(img, (h_new, w_new))
    out["H_0to1"] = scales[1] @ np.asarray(item["H_0to1"], dtype=np.float64) @ np.linalg.inv(scales[0])
    return out


def image_keys(item: dict) -> tuple[str, str]:
    """Cache keys of the two images of a pair: 'v_graffiti/1-2' -> ('v_graffiti/1', 'v_graffiti/2'), else
    '<name>/image0', '<name>/image1'."""
    name = str(item["name"])
    m = re.fullmatch(r"(.+)/([^/-]+)-([^/-]+)", name)
    if m and not item.get("synthetic", False):
        return f"{m.group(1)}/{m.group(2)}", f"{m.group(1)}/{m.group(3)}"
    return f"{name}/image0", f"{name}/image1"


def pair_split(item: dict) -> str | None:
    """'i' / 'v' for HPatches pairs (from the item or the sequence name), None for other sources."""
    if item.get("synthetic", False):
        return None
    split = item.get("split")
    if split in ("i", "v"):
        return split
    seq = str(item.get("sequence", item["name"]))
    return seq[0] if seq[:2] in ("i_", "v_") else None


def score_pair(feats0: dict, feats1: dict, H: np.ndarray, size0: tuple[int, int], size1: tuple[int, int],
               conf, binary: bool) -> dict[str, Any]:
    """Match one pair from cached features and compute every per-pair metric.

    Args:
        feats0/feats1: ``keypoints`` (N, 2), ``descriptors`` (N, D) of each image; H: (3, 3) GT image 0 -> 1;
        size0/size1: (H, W) of each image; conf: the benchmark conf; binary: Hamming descriptors.
    Returns:
        a JSON-ready dict of per-pair numbers.
    """
    from ..geometry.robust import estimate_homography

    k0 = np.asarray(feats0["keypoints"], dtype=np.float64).reshape(-1, 2)
    k1 = np.asarray(feats1["keypoints"], dtype=np.float64).reshape(-1, 2)
    matches0 = match_features(feats0, feats1, binary)
    idx0, idx1 = metrics.match_indices(matches0)
    H_est, inliers = (None, np.zeros(0, bool))
    if len(idx0) >= 4:
        H_est, inliers = estimate_homography(k0[idx0], k1[idx1], method=conf.estimator,
                                             threshold=float(conf.ransac_threshold))
    cerr = metrics.corner_error(H_est, H, size0)
    return {
        "num_keypoints0": int(len(k0)),
        "num_keypoints1": int(len(k1)),
        "num_matches": int(len(idx0)),
        "num_inliers": int(np.asarray(inliers).sum()) if H_est is not None else 0,
        "mma": metrics.mma(k0, k1, matches0, H, conf.mma_thresholds).tolist(),
        "homography_accuracy": metrics.homography_accuracy(H_est, H, size0, conf.homography_thresholds).tolist(),
        "corner_error": cerr,
        "homography_failed": H_est is None,
        "matching_score": metrics.matching_score(k0, k1, matches0, H, size0, size1, conf.correct_threshold),
        "repeatability": metrics.repeatability(k0, k1, H, size0, size1, conf.correct_threshold),
    }


def summarize(records: list[dict], conf) -> dict[str, Any]:
    """Average per-pair records (every pair weighs the same)."""
    n = len(records)
    out: dict[str, Any] = {"num_pairs": n}
    if n == 0:
        return out
    mma = np.mean([r["mma"] for r in records], axis=0)
    cor = np.mean([r["homography_accuracy"] for r in records], axis=0)
    cerr = np.array([r["corner_error"] for r in records], dtype=np.float64)
    out.update({
        "mma": {str(t): float(v) for t, v in zip(conf.mma_thresholds, mma)},
        "homography_accuracy": {str(t): float(v) for t, v in zip(conf.homography_thresholds, cor)},
        "matching_score": metrics.mean_or_zero(r["matching_score"] for r in records),
        "repeatability": metrics.mean_or_zero(r["repeatability"] for r in records),
        "mean_num_keypoints": metrics.mean_or_zero(0.5 * (r["num_keypoints0"] + r["num_keypoints1"])
                                                   for r in records),
        "mean_num_matches": metrics.mean_or_zero(r["num_matches"] for r in records),
        "mean_num_inliers": metrics.mean_or_zero(r["num_inliers"] for r in records),
        "median_corner_error": float(np.median(cerr)),
        "homography_failures": int(sum(r["homography_failed"] for r in records)),
    })
    return out


def run_benchmark(pairs: Iterable[dict], methods: dict, conf: dict | None, cache_root: str | Path,
                  source: dict, progress: bool | None = None) -> dict[str, Any]:
    """Extract (cached) then score every pair for every method.

    Args:
        pairs: iterable of homography pairs ``{"name", "image0", "image1", "H_0to1", ...}`` (any size: they are
            resized to ``conf.resize`` here).
        methods: ``{name: Extractor}``, already configured with ``max_keypoints``.
        conf: benchmark conf (see :data:`default_conf`).
        cache_root: feature cache folder.
        source: identifies the data (label, root, dataset conf); part of the cache key.
        progress: tqdm progress bars (None: only on a terminal).
    Returns:
        ``{"conf", "methods": {name: {"summary": {"all": ..., "i": ..., "v": ...}, "pairs": [...]}}}``.
    """
    from tqdm import tqdm

    from ..errors import InputError

    conf = resolve_conf(default_conf, conf, "hpatches")
    size = tuple(conf.resize) if conf.resize is not None else None
    caches = {name: FeatureCache(cache_root, name, {"extractor": extractor_settings(ext), "resize": size,
                                                    "data": data_identity(source)})
              for name, ext in methods.items()}
    # loop 1: extract every image once per method (cached), keep only what scoring needs
    metas = []
    for item in tqdm(pairs, desc="extract (pairs)", unit="pair", disable=no_progress_bar(progress)):
        item = resize_pair(item, size)
        keys = image_keys(item)
        for name, ext in methods.items():
            for key, img in zip(keys, (item["image0"], item["image1"])):
                caches[name].get_or_compute(key, img, lambda im, e=ext: extract_numpy(e, im, resize=None))
        metas.append({"name": str(item["name"]), "split": pair_split(item), "keys": keys,
                      "H_0to1": np.asarray(item["H_0to1"], dtype=np.float64),
                      "size0": tuple(item["image0"].shape[:2]), "size1": tuple(item["image1"].shape[:2])})
    if not metas:
        raise InputError(f"no image pairs to evaluate in {source.get('label', 'the data')}")

    # loop 2: score from the cache
    results: dict[str, Any] = {}
    for name, ext in methods.items():
        binary = ext.descriptor_type == "binary"
        records = []
        for meta in tqdm(metas, desc=f"score {name}", unit="pair",
                         disable=no_progress_bar(progress)):
            f0, f1 = (caches[name].get(k) for k in meta["keys"])
            if f0 is None or f1 is None:  # pragma: no cover - written by loop 1 a moment ago
                raise InputError(f"feature cache entry vanished for {meta['name']} in {caches[name].dir}")
            rec = score_pair(f0, f1, meta["H_0to1"], meta["size0"], meta["size1"], conf, binary)
            records.append({"name": meta["name"], "split": meta["split"], **rec})
        summary = {"all": summarize(records, conf)}
        for split in ("i", "v"):
            subset = [r for r in records if r["split"] == split]
            if subset:
                summary[split] = summarize(subset, conf)
        results[name] = {"summary": summary, "pairs": records, "cache": str(caches[name].dir),
                         "cache_hits": caches[name].hits, "cache_misses": caches[name].misses,
                         "extractor": extractor_settings(ext)}
    return {"conf": to_container(conf), "source": source, "methods": results}


SPLIT_TITLES = {"all": "overall", "i": "illumination (i_)", "v": "viewpoint (v_)"}


def markdown_report(result: dict) -> str:
    """Tables with all methods side by side: one per split (overall, i_, v_)."""
    from .report import markdown_table

    conf = result["conf"]
    label = result["source"]["label"]
    size = conf["resize"]
    cor_t = conf["homography_thresholds"]
    header = (["method", "#kpts", "#matches", "MMA@1", "MMA@3", "MMA@5"] + [f"Cor-{t:g}" for t in cor_t]
              + ["MS", "Rep", "H fails", "pairs"])
    lines = [f"# {label}", "",
             f"Images resized to {size[0]}x{size[1]} (HxW), top {conf['max_keypoints']} keypoints, mutual nearest "
             f"neighbour matching; homography by {conf['estimator']} ({conf['ransac_threshold']:g} px). "
             f"MMA@t: fraction of matches within t px (per pair, then averaged over pairs); Cor-t: mean corner "
             f"error <= t px (failures count as wrong); MS: SuperPoint matching score and Rep: symmetric "
             f"repeatability, both at {conf['correct_threshold']:g} px.", ""]
    splits = ["all"] + [s for s in ("i", "v") if any(s in m["summary"] for m in result["methods"].values())]
    for split in splits:
        rows = []
        for name, res in result["methods"].items():
            s = res["summary"].get(split)
            if not s or not s.get("num_pairs"):
                continue
            rows.append([name, s["mean_num_keypoints"], s["mean_num_matches"], s["mma"].get("1"), s["mma"].get("3"),
                         s["mma"].get("5")] + [s["homography_accuracy"][str(t)] for t in cor_t]
                        + [s["matching_score"], s["repeatability"], s["homography_failures"], s["num_pairs"]])
        digits = [0, 1, 1] + [3] * (len(header) - 5) + [0, 0]
        lines += [f"## {label}: {SPLIT_TITLES[split]}", "", markdown_table(header, rows, digits), ""]
    return "\n".join(lines)


def plot_mma(result: dict, path: str | Path) -> Path:
    """MMA-vs-threshold curves, one panel per split, all methods in each panel."""
    from .report import plot_curves

    label = result["source"]["label"]
    thresholds = result["conf"]["mma_thresholds"]
    panels = []
    for split in ("all", "i", "v"):
        curves = {name: [res["summary"][split]["mma"][str(t)] for t in thresholds]
                  for name, res in result["methods"].items() if split in res["summary"]}
        if curves:
            panels.append({"title": SPLIT_TITLES[split], "x": thresholds, "curves": curves})
    size = result["conf"]["resize"]
    return plot_curves(path, panels, "threshold [px]", "MMA",
                       f"{label}: {size[0]}x{size[1]}, top {result['conf']['max_keypoints']} keypoints")
