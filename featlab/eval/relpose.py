"""Relative-pose benchmark on posed images with known intrinsics and poses: an RGB-D sequence (7-Scenes / TUM
layout) or a posed collection (a COLMAP model such as the Strecha scenes, wide baseline).

Protocol:

1. Pairs ``(i, j)``: for an RGB-D sequence from :meth:`featlab.datasets.rgbd.RGBDSequence.make_pairs` (fixed frame
   gaps, a minimum depth-based covisibility, a seeded subsample per gap); for a posed collection every
   ``(i, i + d)`` of the images sorted by name for each gap d (:func:`gap_pairs`). The list is saved with the
   results.
2. Loop 1, extraction: every image once per method (cached; optional extraction resize, keypoints mapped back to
   the evaluated image so that its K applies). A posed collection's views are first resized (``PosedPairs``
   ``resize``, K scaled), so the evaluated image, and the pixel unit of the RANSAC threshold, is the resized one.
3. Loop 2, scoring from the cache: mutual nearest-neighbour matching, relative pose by the configured estimator
   (:func:`featlab.geometry.robust.estimate_relative_pose`; default ``superglue``: SuperGlue's protocol, OpenCV
   RANSAC on K-normalised points, threshold 1 px / mean focal, confidence 0.99999, ``recoverPose``), pose error =
   max(rotation angle error, translation direction error) in degrees (a failure is ``inf``), AUC@5/10/20 per gap
   and overall. The ground-truth rotation angle of every pair is reported with it (per pair and per gap), so
   that "wide baseline" is a measured statement.

Every output names the estimator and the threshold, confidence and iteration cap it ran with (``conf``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..conf import none_or, resolve_conf, to_container
from . import metrics
from .cache import (FeatureCache, data_identity, extract_numpy, extractor_settings, match_features,
                    no_progress_bar)

default_conf = {
    "resize": none_or(int, list),  # extraction size: None (native), int (longest side) or [H, W]; keypoints mapped back
    "max_keypoints": 2048,  # top-k keypoints kept by each extractor
    "estimator": "superglue",  # geometry.robust.estimate_relative_pose method: superglue | magsac | poselib
    "ransac_threshold": 1.0,  # px (of a camera with the pair's mean focal length), inlier threshold
    "confidence": none_or(float),  # RANSAC confidence; None: the estimator's (superglue 0.99999, others 0.9999)
    "max_iters": none_or(int),  # RANSAC iteration cap; None: the estimator's (superglue 1000, others 10000)
    "auc_thresholds": list(metrics.POSE_THRESHOLDS),  # degrees
}


def score_pair(feats0: dict, feats1: dict, K0: np.ndarray, K1: np.ndarray, T_0to1: np.ndarray, conf,
               binary: bool, matches0: np.ndarray | None = None) -> dict[str, Any]:
    """Match one pair from cached features, estimate the relative pose and measure its error.

    Args:
        feats0/feats1: ``keypoints`` (N, 2) in the frames' pixels, ``descriptors`` (N, D); K0/K1: (3, 3);
        T_0to1: (4, 4) ground truth; conf: benchmark conf; binary: Hamming descriptors;
        matches0: the pair's mutual matches (:func:`match_features`) when the caller has them already.
    Returns:
        JSON-ready per-pair numbers (``pose_error`` is ``inf`` on failure).
    """
    from ..geometry.pose import relative_pose_error
    from ..geometry.robust import estimate_relative_pose

    k0 = np.asarray(feats0["keypoints"], dtype=np.float64).reshape(-1, 2)
    k1 = np.asarray(feats1["keypoints"], dtype=np.float64).reshape(-1, 2)
    if matches0 is None:
        matches0 = match_features(feats0, feats1, binary)
    idx0, idx1 = metrics.match_indices(matches0)
    R, t, mask = None, None, np.zeros(0, bool)
    if len(idx0) >= 5:
        R, t, mask = estimate_relative_pose(k0[idx0], k1[idx1], np.asarray(K0, np.float64),
                                            np.asarray(K1, np.float64), method=conf.estimator,
                                            threshold=float(conf.ransac_threshold), confidence=conf.confidence,
                                            max_iters=conf.max_iters)
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
    rot = [r["gt_rotation"] for r in records if r.get("gt_rotation") is not None]
    if rot:
        out["gt_rotation"] = {"min": float(np.min(rot)), "median": float(np.median(rot)), "max": float(np.max(rot))}
    return out


def gap_pairs(collection, gaps: Sequence[int]) -> list[tuple[int, int]]:
    """Every pair ``(i, i + d)`` of posed images of a collection, for each gap d (in the collection's order: sorted
    by name for a COLMAP model), grouped by gap in the given order and sorted by i within a gap; images without a
    pose and pairs across scene groups are left out (:class:`featlab.datasets.posed.PairSampler`, no covisibility
    test, no rotation bound)."""
    from ..datasets.posed import PairSampler

    pairs = []
    for d in gaps:
        sampler = PairSampler({"min_gap": int(d), "max_gap": int(d), "max_rotation": 180.0, "covisibility": "none"})
        pairs.extend(sampler.sample(collection))
    return pairs


def run_benchmark(dataset, pairs: list[tuple[int, int]], methods: dict, conf: dict | None,
                  cache_root: str | Path, source: dict, progress: bool | None = None) -> dict[str, Any]:
    """Extract (cached) then score every pair for every method.

    Args:
        dataset: gives the evaluated images: ``pair(i, j)`` -> two-view item (``image0/1``, ``K0/1``, ``T_0to1``,
            ``name``) and ``image_name(i)`` -> the cache key of image i; an
            :class:`featlab.datasets.rgbd.RGBDSequence` or a :class:`featlab.datasets.posed.PosedPairs` (whose
            ``resize`` sets the evaluated image size). ``dataset.covisibilities`` ((i, j) -> float), when present,
            is copied into the pair records.
        pairs: ``[(i, j)]`` image indices, e.g. from ``RGBDSequence.make_pairs`` or :func:`gap_pairs`.
        methods: ``{name: Extractor}``.
        conf: benchmark conf (:data:`default_conf`); the estimator's defaults are filled in, so the returned
            ``conf`` names the estimator, threshold, confidence and iteration cap that actually ran.
        cache_root: feature cache folder.
        source: identifies the data (root, dataset conf); part of the cache key.
    Returns:
        ``{"conf", "source", "gaps", "methods": {name: {"summary": {"all": ..., "gap_10": ...}, "pairs": [...]}}}``;
        each summary also holds ``gt_rotation`` (min, median, max ground-truth rotation angle of its pairs, deg).
    """
    from tqdm import tqdm

    from ..errors import InputError
    from ..geometry.pose import rotation_angle
    from ..geometry.robust import relative_pose_settings

    conf = resolve_conf(default_conf, conf, "relpose")
    used = relative_pose_settings(conf.estimator, conf.ransac_threshold, conf.confidence, conf.max_iters)
    conf = resolve_conf(default_conf, {**to_container(conf), "estimator": used["method"],
                                       "confidence": used["confidence"], "max_iters": used["max_iters"]}, "relpose")
    if not pairs:
        raise InputError("no image pairs to evaluate (lower --min-covisibility, widen --frames or lower --gaps)")
    resize = to_container(conf.resize)
    caches = {name: FeatureCache(cache_root, name, {"extractor": extractor_settings(ext), "resize": resize,
                                                    "data": data_identity(source)})
              for name, ext in methods.items()}
    covisibilities = getattr(dataset, "covisibilities", {})
    metas = []
    for i, j in tqdm(pairs, desc="extract (pairs)", unit="pair", disable=no_progress_bar(progress)):
        data = dataset.pair(int(i), int(j))
        keys = (str(dataset.image_name(int(i))), str(dataset.image_name(int(j))))
        for name, ext in methods.items():
            for key, img in zip(keys, (data["image0"], data["image1"])):
                caches[name].get_or_compute(key, img, lambda im, e=ext: extract_numpy(e, im, resize=resize))
        T_0to1 = np.asarray(data["T_0to1"], np.float64)
        metas.append({"pair": (int(i), int(j)), "gap": int(j) - int(i), "keys": keys,
                      "covisibility": covisibilities.get((int(i), int(j))),
                      "gt_rotation": rotation_angle(T_0to1[:3, :3]),
                      "image_size": list(data["image0"].shape[:2]),
                      "name": str(data.get("name", f"{i}-{j}")),
                      "K0": np.asarray(data["K0"], np.float64), "K1": np.asarray(data["K1"], np.float64),
                      "T_0to1": T_0to1})

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
                            "covisibility": meta["covisibility"], "gt_rotation": meta["gt_rotation"],
                            "image_size": meta["image_size"], **rec})
        summary = {"all": summarize(records, conf.auc_thresholds)}
        for gap in gaps:
            summary[f"gap_{gap}"] = summarize([r for r in records if r["gap"] == gap], conf.auc_thresholds)
        results[name] = {"summary": summary, "pairs": records, "cache": str(caches[name].dir),
                         "cache_hits": caches[name].hits, "cache_misses": caches[name].misses,
                         "extractor": extractor_settings(ext)}
    return {"conf": to_container(conf), "source": source, "gaps": gaps, "methods": results}


def _group_title(group: str, gap_name: str = "frame gap") -> str:
    return "all pairs" if group == "all" else f"{gap_name} {group.split('_', 1)[1]}"


def estimator_description(conf: dict) -> str:
    """One sentence naming the estimator and the settings it ran with (from a resolved benchmark conf)."""
    from ..geometry.robust import RELPOSE_LABELS

    return (f"Relative pose by `{conf['estimator']}` ({RELPOSE_LABELS[conf['estimator']]}), inlier threshold "
            f"{conf['ransac_threshold']:g} px (of a camera with the pair's mean focal length), confidence "
            f"{conf['confidence']:g}, at most {conf['max_iters']} iterations.")


def markdown_report(result: dict) -> str:
    """One table per gap (then all pairs), methods as rows, each headed by the pairs' ground-truth rotation angles."""
    from .report import markdown_table, summary_groups

    conf = result["conf"]
    src = result["source"]
    ths = conf["auc_thresholds"]
    gap_name = src.get("gap_name", "frame gap")
    header = ["method"] + [f"AUC@{t:g}" for t in ths] + ["median err", "#inliers", "#matches", "failures"]
    lines = [f"# Relative pose: {src['label']}", "",
             estimator_description(conf) + " Mutual nearest-neighbour matches; pose error = max(rotation error, "
             "translation direction error) in degrees, failures count as infinite error; AUC in percent.", "",
             f"Images: {src.get('image_size', 'native size')}; extraction size {conf['resize'] or 'as evaluated'}, "
             f"top {conf['max_keypoints']} keypoints. Intrinsics: {src.get('intrinsics', 'dataset default')}.", ""]
    for group, entries in summary_groups(result):
        first = entries[0][2]
        rows = [[name] + [100 * s["auc"][str(t)] for t in ths]
                + [s["median_pose_error"], s["mean_num_inliers"], s["mean_num_matches"], s["failures"]]
                for name, _, s in entries]
        rot = first["gt_rotation"]
        lines += [f"## {_group_title(group, gap_name)}: {first['num_pairs']} pairs, ground-truth rotation "
                  f"{rot['min']:.1f}-{rot['max']:.1f} deg (median {rot['median']:.1f})", "",
                  markdown_table(header, rows, [0] + [1] * (len(ths) + 3) + [0]), ""]
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
            panels.append({"title": _group_title(group, result["source"].get("gap_name", "frame gap")),
                           "x": x, "curves": curves})
    return plot_curves(path, panels, "pose error [deg]", "fraction of pairs",
                       f"Relative pose: {result['source']['label']}", markers=False)
