"""Homography benchmark: HPatches (or synthetic warps of a photo folder), scored as in SuperPoint / D2-Net.

Two protocols (``conf.protocol``, named in every output; see :mod:`featlab.eval.metrics` for the exact metric
definitions):

- ``resized`` (the residual-descriptor paper, the default): both images of a pair are resized to the setting's
  size, 240x320 with 300 keypoints or 480x640 with 1000, either exactly (``resize_mode: exact``, aspect ratio not
  kept, as SuperPoint and the paper do) or with the aspect ratio kept and the longest side = max(H, W)
  (``longest-side``); the ground-truth homography is adapted to the resized images
  (:func:`featlab.geometry.homography.rescale_homography`, exact in featlab's pixel convention).
- ``d2net`` (D2-Net): full resolution (no resize), top 8000 keypoints, the 108 HPatches sequences left when the 8
  high-resolution ones are excluded (:data:`featlab.datasets.hpatches.D2NET_EXCLUDED`), MMA@1..10 px of mutual
  nearest-neighbour matches.

Then:

1. Loop 1, extraction: each image is run once per method through the extractor with top-k keypoints and cached
   (:class:`featlab.eval.cache.FeatureCache`); a rerun reuses the cache.
2. Loop 2, scoring from the cache: mutual nearest-neighbour matching, then per pair MMA@1..10 px, the homography
   estimated robustly from all matches (OpenCV RANSAC, 3 px, by default: SuperPoint's choice) and its corner
   accuracy Cor-1/3/5, matching score and repeatability at 3 px, keypoint and match counts.
3. Per-pair values are averaged over pairs, overall and per split (``i_`` illumination / ``v_`` viewpoint
   sequences for HPatches), and per bin of the ground-truth in-plane rotation and scale (measured from the GT
   homography at the image-0 centre: :func:`featlab.eval.metrics.gt_rotation_scale`).

Synthetic warps are labelled "synthetic warps of <folder>" in every output: they are not HPatches.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..conf import resolve_conf, to_container
from ..errors import ConfigError
from ..geometry.homography import rescale_homography
from ..io.image import resize_image
from . import metrics
from .cache import (FeatureCache, data_identity, extract_numpy, extractor_settings, match_features,
                    no_progress_bar)

#: the two settings of the residual-descriptor paper: (H, W) and the number of keypoints kept
SETTINGS = {"240x320_300": ((240, 320), 300), "480x640_1000": ((480, 640), 1000)}
PROTOCOLS = ("resized", "d2net")
RESIZE_MODES = ("exact", "longest-side")
#: keypoints kept under the D2-Net protocol unless overridden
D2NET_MAX_KEYPOINTS = 8000

default_conf = {
    "protocol": "resized",  # resized (residual paper: resized images) | d2net (full resolution, 108 sequences)
    "resize": [480, 640],  # (H, W) of the resized protocol, null: native size (d2net); the GT homography is adapted
    "resize_mode": "exact",  # exact: both images to exactly (H, W) | longest-side: aspect kept, longest = max(H, W)
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


def protocol_conf(protocol: str = "resized", setting: str | None = None, resize: list[int] | None = None,
                  max_keypoints: int | None = None, resize_mode: str | None = None) -> dict:
    """The protocol part of the benchmark conf from the command-line choices.

    ``resized``: the setting (default 480x640_1000) with optional overrides of its size and keypoints, and the
    resize mode (default exact). ``d2net``: no resize, :data:`D2NET_MAX_KEYPOINTS` unless ``max_keypoints``;
    a setting, a size or a resize mode is an error there.

    Returns:
        ``{"protocol", "resize": [H, W] or None, "resize_mode", "max_keypoints"}``.
    Raises:
        ConfigError: unknown protocol / setting / resize mode, or an option the protocol does not take.
    """
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol '{protocol}'; choose one of {', '.join(PROTOCOLS)}")
    if resize_mode is not None and resize_mode not in RESIZE_MODES:
        raise ConfigError(f"unknown resize mode '{resize_mode}'; choose one of {', '.join(RESIZE_MODES)}")
    if protocol == "d2net":
        if setting is not None or resize is not None or resize_mode is not None:
            raise ConfigError("the d2net protocol evaluates full-resolution images: --setting, --resize and "
                              "--resize-mode apply to --protocol resized only")
        _, k = resolve_setting(None, None, max_keypoints)
        return {"protocol": protocol, "resize": None, "resize_mode": "exact",
                "max_keypoints": k if max_keypoints is not None else D2NET_MAX_KEYPOINTS}
    size, k = resolve_setting(setting, resize, max_keypoints)
    return {"protocol": protocol, "resize": list(size), "resize_mode": resize_mode or "exact", "max_keypoints": k}


def resize_pair(item: dict, size: tuple[int, int] | None, mode: str = "exact") -> dict:
    """Resize both images of a homography pair and adapt ``H_0to1``.

    Args:
        item: ``{"image0", "image1", "H_0to1", ...}``, images (H, W, C) of any sizes.
        size: (H, W); None keeps the images.
        mode: 'exact' (each image to exactly ``size``) or 'longest-side' (aspect kept, longest side ``max(size)``;
            the two images may then differ in size).
    Returns:
        a copy of ``item`` with the resized images and ``H_0to1 = S1 @ H_0to1 @ inv(S0)``
        (:func:`featlab.geometry.homography.rescale_homography`).
    """
    if size is None:
        return item
    if mode not in RESIZE_MODES:
        raise ConfigError(f"unknown resize mode '{mode}'; choose one of {', '.join(RESIZE_MODES)}")
    target = [int(size[0]), int(size[1])] if mode == "exact" else max(int(size[0]), int(size[1]))
    out = dict(item)
    scales = []
    for key in ("image0", "image1"):
        out[key], back = resize_image(item[key], target)  # back: resized -> original
        scales.append((1.0 / back[0], 1.0 / back[1]))
    out["H_0to1"] = rescale_homography(item["H_0to1"], scales[0], scales[1])
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


#: the per-pair GT quantity and the bins of each binning
BINNINGS = {"rotation": ("gt_rotation", metrics.ROTATION_BINS), "scale": ("gt_scale", metrics.SCALE_BINS)}


def summarize_bins(records: list[dict], conf, binning: str) -> dict[str, Any]:
    """:func:`summarize` per bin of the GT in-plane rotation (of ``|angle|``) or scale, in bin order; empty bins are
    left out."""
    key, bins = BINNINGS[binning]
    values = [r[key] if r[key] is None or binning != "rotation" else abs(r[key]) for r in records]
    labels = [metrics.bin_of(v, bins) for v in values]
    return {label: summarize([r for r, b in zip(records, labels) if b == label], conf)
            for label, _, _ in bins if label in labels}


def run_benchmark(pairs: Iterable[dict], methods: dict, conf: dict | None, cache_root: str | Path,
                  source: dict, progress: bool | None = None) -> dict[str, Any]:
    """Extract (cached) then score every pair for every method.

    Args:
        pairs: iterable of homography pairs ``{"name", "image0", "image1", "H_0to1", ...}`` (any size: they are
            resized to ``conf.resize`` with ``conf.resize_mode`` here, or kept when it is None).
        methods: ``{name: Extractor}``, already configured with ``max_keypoints``.
        conf: benchmark conf (see :data:`default_conf`).
        cache_root: feature cache folder.
        source: identifies the data (label, root, dataset conf); part of the cache key.
        progress: tqdm progress bars (None: only on a terminal).
    Returns:
        ``{"conf", "source", "methods": {name: {"summary": {"all": ..., "i": ..., "v": ...},
        "summary_by_rotation": {bin: ...}, "summary_by_scale": {bin: ...}, "pairs": [...], ...}}}``; each pair
        record holds its ``gt_rotation`` (degrees) and ``gt_scale``.
    """
    from tqdm import tqdm

    from ..errors import InputError

    conf = resolve_conf(default_conf, conf, "hpatches")
    if conf.protocol not in PROTOCOLS or conf.resize_mode not in RESIZE_MODES:
        raise ConfigError(f"hpatches.protocol must be one of {', '.join(PROTOCOLS)} and hpatches.resize_mode one of "
                          f"{', '.join(RESIZE_MODES)}, got '{conf.protocol}', '{conf.resize_mode}'")
    size = tuple(conf.resize) if conf.resize is not None else None
    caches = {name: FeatureCache(cache_root, name, {"extractor": extractor_settings(ext), "resize": size,
                                                    "resize_mode": conf.resize_mode, "data": data_identity(source)})
              for name, ext in methods.items()}
    # loop 1: extract every image once per method (cached), keep only what scoring needs
    metas = []
    for item in tqdm(pairs, desc="extract (pairs)", unit="pair", disable=no_progress_bar(progress)):
        item = resize_pair(item, size, conf.resize_mode)
        keys = image_keys(item)
        for name, ext in methods.items():
            for key, img in zip(keys, (item["image0"], item["image1"])):
                caches[name].get_or_compute(key, img, lambda im, e=ext: extract_numpy(e, im, resize=None))
        H = np.asarray(item["H_0to1"], dtype=np.float64)
        rotation, scale = metrics.gt_rotation_scale(H, item["image0"].shape[:2])
        metas.append({"name": str(item["name"]), "split": pair_split(item), "keys": keys, "H_0to1": H,
                      "size0": tuple(item["image0"].shape[:2]), "size1": tuple(item["image1"].shape[:2]),
                      "gt_rotation": rotation, "gt_scale": scale})
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
            records.append({"name": meta["name"], "split": meta["split"], "gt_rotation": meta["gt_rotation"],
                            "gt_scale": meta["gt_scale"], **rec})
        summary = {"all": summarize(records, conf)}
        for split in ("i", "v"):
            subset = [r for r in records if r["split"] == split]
            if subset:
                summary[split] = summarize(subset, conf)
        results[name] = {"summary": summary, "summary_by_rotation": summarize_bins(records, conf, "rotation"),
                         "summary_by_scale": summarize_bins(records, conf, "scale"), "pairs": records,
                         "cache": str(caches[name].dir),
                         "cache_hits": caches[name].hits, "cache_misses": caches[name].misses,
                         "extractor": extractor_settings(ext)}
    return {"conf": to_container(conf), "source": source, "methods": results}


SPLIT_TITLES = {"all": "overall", "i": "illumination (i_)", "v": "viewpoint (v_)"}


def protocol_line(result: dict) -> str:
    """One sentence naming the protocol, the image size and the keypoints of a result (and the warp preset of
    synthetic warps)."""
    conf, source = result["conf"], result["source"]
    size, k = conf["resize"], conf["max_keypoints"]
    if conf["protocol"] == "d2net":
        text = f"Protocol **d2net** (D2-Net): full resolution (no resize), top {k} keypoints"
        if source.get("kind") == "hpatches":
            text += (f", the 108-sequence list (the 8 high-resolution sequences excluded; "
                     f"{len(source.get('sequences', []))} sequence(s) present here)")
    else:
        if source.get("kind") == "synthetic":
            how = (f"pairs made at {size[0]}x{size[1]} (HxW; each photo scaled to cover it, aspect ratio kept, then "
                   f"cropped)")
        elif conf["resize_mode"] == "exact":
            how = f"images resized to exactly {size[0]}x{size[1]} (HxW, aspect ratio not kept), GT homography adapted"
        else:
            how = (f"images resized with the aspect ratio kept, longest side {max(size)} (setting "
                   f"{size[0]}x{size[1]}), GT homography adapted")
        text = f"Protocol **resized** (residual-descriptor paper): {how}, top {k} keypoints"
    if source.get("preset"):
        text += f". Warps: preset **{source['preset']}**: {source['warps']}"
        text += "; photometric changes on" if source.get("photometric", True) else "; no photometric change"
    return text + "."


def markdown_report(result: dict) -> str:
    """Tables with all methods side by side: one per split (overall, i_, v_), then MMA@3 and Cor-3 per bin of the
    GT in-plane rotation and scale."""
    from .report import markdown_table

    conf = result["conf"]
    label = result["source"]["label"]
    cor_t = conf["homography_thresholds"]
    header = (["method", "#kpts", "#matches", "MMA@1", "MMA@3", "MMA@5"] + [f"Cor-{t:g}" for t in cor_t]
              + ["MS", "Rep", "H fails", "pairs"])
    preset = result["source"].get("preset")
    lines = [f"# {label}{f', preset {preset}' if preset else ''}: {conf['protocol']} protocol", "",
             protocol_line(result), "",
             f"Mutual nearest neighbour matching; homography by {conf['estimator']} "
             f"({conf['ransac_threshold']:g} px). "
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
    lines += _bin_tables(result)
    return "\n".join(lines)


BIN_TITLES = {"rotation": ("in-plane rotation", "abs(angle) [deg]"), "scale": ("scale", "scale")}


def _bin_tables(result: dict) -> list[str]:
    """MMA@3 and Cor-3 (the thresholds nearest 3 px) per rotation bin and per scale bin, methods as columns."""
    from .report import markdown_table

    conf, methods = result["conf"], result["methods"]
    mma_t = min(conf["mma_thresholds"], key=lambda t: abs(t - 3))
    cor_t = min(conf["homography_thresholds"], key=lambda t: abs(t - 3))
    lines = ["GT in-plane rotation and scale: the polar decomposition of the GT homography's local affine at the "
             "image-0 centre; bins [lo, hi), empty bins omitted.", ""]
    for binning, (title, column) in BIN_TITLES.items():
        key = f"summary_by_{binning}"
        labels = [b for b, _, _ in BINNINGS[binning][1] if any(b in m.get(key, {}) for m in methods.values())]
        if not labels:
            continue
        for metric, field, t in (("MMA", "mma", mma_t), ("Cor", "homography_accuracy", cor_t)):
            rows = [[b, next(m[key][b]["num_pairs"] for m in methods.values() if b in m.get(key, {}))]
                    + [m[key][b][field][str(t)] if b in m.get(key, {}) else None for m in methods.values()]
                    for b in labels]
            lines += [f"## {metric}{'@' if metric == 'MMA' else '-'}{t:g} by {title}", "",
                      markdown_table([column, "pairs"] + list(methods), rows, [0, 0] + [3] * len(methods)), ""]
    return lines


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
    conf, preset = result["conf"], result["source"].get("preset")
    size = "full resolution" if conf["resize"] is None else f"{conf['resize'][0]}x{conf['resize'][1]}"
    return plot_curves(path, panels, "threshold [px]", "MMA",
                       f"{label}{f', preset {preset}' if preset else ''}: {conf['protocol']} protocol, {size}, "
                       f"top {conf['max_keypoints']} keypoints")
