"""Relative-pose benchmark on an RGB-D sequence (7-Scenes / TUM layout) with known intrinsics and poses.

Protocol:

1. Pairs ``(i, j)`` from :meth:`featlab.datasets.rgbd.RGBDSequence.make_pairs` (fixed frame gaps, a minimum
   depth-based covisibility, a seeded subsample per gap); the list is saved with the results.
2. Loop 1, extraction: every frame once per method (cached; optional resize, keypoints mapped back to the
   original frame so that the dataset's K applies).
3. Loop 2, scoring from the cache: mutual nearest-neighbour matching, essential matrix with RANSAC
   (:func:`featlab.geometry.robust.estimate_relative_pose`), pose error = max(rotation angle error, translation
   direction error) in degrees (a failure is ``inf``), AUC@5/10/20 per frame gap and overall.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..conf import resolve_conf, to_container
from . import metrics
from .cache import (FeatureCache, data_identity, extract_numpy, extractor_settings, match_features,
                    no_progress_bar)

default_conf = {
    "resize": None,  # extraction size: None (native), int (longest side) or [H, W]; keypoints mapped back
    "max_keypoints": 2048,  # top-k keypoints kept by each extractor
    "estimator": "opencv",  # geometry.robust.estimate_relative_pose method: opencv | poselib
    "ransac_threshold": 1.0,  # px, inlier threshold of the essential-matrix RANSAC
    "auc_thresholds": list(metrics.POSE_THRESHOLDS),  # degrees
}


def score_pair(feats0: dict, feats1: dict, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray, conf,
               binary: bool) -> dict[str, Any]:
    """Match one pair from cached features, estimate the relative pose and measure its error.

    Args:
        feats0/feats1: ``keypoints`` (N, 2) in the frames' pixels, ``descriptors`` (N, D); K0/K1: (3, 3);
        T_0to1: (4, 4) ground truth; conf: benchmark conf; binary: Hamming descriptors.
    Returns:
        JSON-ready per-pair numbers (``pose_error`` is ``inf`` on failure).
    """
    from ..geometry.pose import relative_pose_error
    from ..geometry.robust import estimate_relative_pose

    k0 = np.asarray(feats0["keypoints"], dtype=np.float64).reshape(-1, 2)
    k1 = np.asarray(feats1["keypoints"], dtype=np.float64).reshape(-1, 2)
    matches0 = match_features(feats0, feats1, binary)
    idx0, idx1 = metrics.match_indices(matches0)
    R, t, mask = None, None, np.zeros(0, bool)
    if len(idx0) >= 5:
        R, t, mask = estimate_relative_pose(k0[idx0], k1[idx1], np.asarray(K0, np.float64),
                                            np.asarray(K1, np.float64), method=conf.estimator,
                                            threshold=float(conf.ransac_threshold))
    err_R, err_t = relative_pose_error(T_0to1, R, t) if R is not None else (float("inf"), float("inf"))
    return {
        "num_keypoints0": int(len(k0)),
        "num_keypoints1": int(len(k1)),
        "num_matches": int(len(idx0)),
        "num_inliers": int(np.asarray(mask).sum()) if R is not None else 0,
        "failed": R is None,
        "error_R": float(err_R),
        "error_t": float(err_t),
        "pose_error": float(max(err_R, err_t)),
    }


def summarize(records: list[dict], thresholds: Sequence[float]) -> dict[str, Any]:
    """AUC, failures and mean counts over a set of pair records."""
    n = len(records)
    out: dict[str, Any] = {"num_pairs": n}
    if n == 0:
        return out
    errors = np.array([r["pose_error"] for r in records], dtype=np.float64)
    aucs = metrics.pose_auc(errors, thresholds)
    out.update({
        "auc": {str(t): float(a) for t, a in zip(thresholds, aucs)},
        "failures": int(sum(r["failed"] for r in records)),
        "median_pose_error": float(np.median(errors)),
        "mean_num_inliers": metrics.mean_or_zero(r["num_inliers"] for r in records),
        "mean_num_matches": metrics.mean_or_zero(r["num_matches"] for r in records),
        "mean_num_keypoints": metrics.mean_or_zero(0.5 * (r["num_keypoints0"] + r["num_keypoints1"])
                                                   for r in records),
    })
    return out


def run_benchmark(sequence, pairs: list[tuple[int, int]], methods: dict, conf: dict | None,
                  cache_root: str | Path, source: dict, progress: bool | None = None) -> dict[str, Any]:
    """Extract (cached) then score every pair for every method.

    Args:
        sequence: an :class:`featlab.datasets.rgbd.RGBDSequence`.
        pairs: ``[(i, j)]`` frame indices as returned by ``sequence.make_pairs``.
        methods: ``{name: Extractor}``.
        conf: benchmark conf (:data:`default_conf`).
        cache_root: feature cache folder.
        source: identifies the data (root, dataset conf); part of the cache key.
    Returns:
        ``{"conf", "source", "methods": {name: {"summary": {"all": ..., "gap_10": ...}, "pairs": [...]}}}``.
    """
    from tqdm import tqdm

    from ..errors import InputError

    conf = resolve_conf(default_conf, conf, "relpose")
    if not pairs:
        raise InputError("no frame pairs to evaluate (lower --min-covisibility or widen --frames)")
    resize = to_container(conf.resize)
    caches = {name: FeatureCache(cache_root, name, {"extractor": extractor_settings(ext), "resize": resize,
                                                    "data": data_identity(source)})
              for name, ext in methods.items()}
    metas = []
    for i, j in tqdm(pairs, desc="extract (pairs)", unit="pair", disable=no_progress_bar(progress)):
        data = sequence.pair(int(i), int(j))
        keys = (str(sequence.frames[int(i)]), str(sequence.frames[int(j)]))
        for name, ext in methods.items():
            for key, img in zip(keys, (data["image0"], data["image1"])):
                caches[name].get_or_compute(key, img, lambda im, e=ext: extract_numpy(e, im, resize=resize))
        metas.append({"pair": (int(i), int(j)), "gap": int(j) - int(i), "keys": keys,
                      "covisibility": getattr(sequence, "covisibilities", {}).get((int(i), int(j))),
                      "name": str(data.get("name", f"{i}-{j}")),
                      "K0": np.asarray(data["K0"], np.float64), "K1": np.asarray(data["K1"], np.float64),
                      "T_0to1": np.asarray(data["T_0to1"], np.float64)})

    gaps = sorted({m["gap"] for m in metas})
    results: dict[str, Any] = {}
    for name, ext in methods.items():
        binary = ext.descriptor_type == "binary"
        records = []
        for meta in tqdm(metas, desc=f"score {name}", unit="pair", disable=no_progress_bar(progress)):
            f0, f1 = (caches[name].get(k) for k in meta["keys"])
            if f0 is None or f1 is None:  # pragma: no cover - written by loop 1 a moment ago
                raise InputError(f"feature cache entry vanished for pair {meta['pair']} in {caches[name].dir}")
            rec = score_pair(f0, f1, meta["K0"], meta["K1"], meta["T_0to1"], conf, binary)
            records.append({"name": meta["name"], "pair": list(meta["pair"]), "gap": meta["gap"],
                            "covisibility": meta["covisibility"], **rec})
        summary = {"all": summarize(records, conf.auc_thresholds)}
        for gap in gaps:
            summary[f"gap_{gap}"] = summarize([r for r in records if r["gap"] == gap], conf.auc_thresholds)
        results[name] = {"summary": summary, "pairs": records, "cache": str(caches[name].dir),
                         "cache_hits": caches[name].hits, "cache_misses": caches[name].misses,
                         "extractor": extractor_settings(ext)}
    return {"conf": to_container(conf), "source": source, "gaps": gaps, "methods": results}


def _group_title(group: str) -> str:
    return "all pairs" if group == "all" else f"frame gap {group.split('_', 1)[1]}"


def markdown_report(result: dict) -> str:
    """One table: rows method x (each gap, then all), AUCs side by side."""
    from .report import markdown_table

    conf = result["conf"]
    ths = conf["auc_thresholds"]
    header = ["method", "pairs"] + [f"AUC@{t:g}" for t in ths] + ["median err", "#inliers", "#matches",
                                                                   "failures"]
    groups = [f"gap_{g}" for g in result["gaps"]] + ["all"]
    rows = []
    for group in groups:
        for name, res in result["methods"].items():
            s = res["summary"].get(group)
            if not s or not s.get("num_pairs"):
                continue
            rows.append([f"{name} ({_group_title(group)})", s["num_pairs"]]
                        + [100 * s["auc"][str(t)] for t in ths]
                        + [s["median_pose_error"], s["mean_num_inliers"], s["mean_num_matches"], s["failures"]])
    src = result["source"]
    lines = [f"# Relative pose: {src['label']}", "",
             f"Essential matrix by {conf['estimator']} RANSAC ({conf['ransac_threshold']:g} px) on mutual "
             f"nearest-neighbour matches; pose error = max(rotation error, translation direction error) in "
             f"degrees, failures count as infinite error; AUC in percent. Extraction size: "
             f"{conf['resize'] or 'native'}, top {conf['max_keypoints']} keypoints. Intrinsics: "
             f"{src.get('intrinsics', 'dataset default')}.", "",
             markdown_table(header, rows, [0, 0] + [1] * (len(ths) + 3) + [0]), ""]
    return "\n".join(lines)


def plot_cumulative_errors(result: dict, path: str | Path, max_error: float = 30.0) -> Path:
    """Cumulative pose-error curves (fraction of pairs with error <= x), one panel per gap plus all pairs."""
    from .report import plot_curves

    x = np.linspace(0.0, max_error, 121)
    panels = []
    for group in [f"gap_{g}" for g in result["gaps"]] + ["all"]:
        curves = {}
        for name, res in result["methods"].items():
            errs = np.array([r["pose_error"] for r in res["pairs"] if group == "all" or f"gap_{r['gap']}" == group],
                            dtype=np.float64)
            if len(errs):
                curves[name] = (errs[None, :] <= x[:, None]).mean(1)
        if curves:
            panels.append({"title": _group_title(group), "x": x, "curves": curves})
    return plot_curves(path, panels, "pose error [deg]", "fraction of pairs",
                       f"Relative pose: {result['source']['label']}", markers=False)
