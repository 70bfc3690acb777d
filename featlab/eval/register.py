"""3D registration benchmark on pairs of depth views of an RGB-D sequence (7-Scenes / TUM layout).

Protocol (``featlab eval register``; defaults: 7-Scenes frames 400-499, frame gaps 20, 30 and 45):

1. Pairs ``(i, i + gap)`` from :meth:`featlab.datasets.rgbd.RGBDSequence.make_pairs` (depth-based covisibility at
   least 0.3, at most 50 pairs per gap, seeded), computed with the depth camera's intrinsics. Saved with the results.
2. Loop 1, features, once per frame and method, cached (:class:`featlab.eval.cache.FeatureCache`):

   - depth extractors (``inputs = "depth"``: ``sift-depth``, ``depthkp``) run on the depth map with the depth
     camera's K (:func:`featlab.extractors.base.extract_depth`); the cache entry is keyed on the depth values and K
     (:func:`featlab.io.depth.depth_checksum`);
   - image extractors (``rootsift``, ``residual-sift``...) run on the colour image; their keypoints are moved into
     the depth map by ``K_depth K_colour^-1`` (a shared optical centre: the sensors' baseline is ignored). Where depth
     and colour are registered (TUM, rendered scenes: one K) that map is the identity. **7-Scenes colour and depth
     are only approximately registered** (colour fits f = 525, depth f = 585, and the two Kinect sensors are a few
     centimetres apart): the colour rows measure features lifted through an approximate colour-to-depth map;
   - ``fpfh``: the depth map as a point cloud, 2.5 cm voxels, FPFH (Open3D, :mod:`featlab.extractors.depth_baselines`).
3. Loop 2, per pair: keypoints without valid depth are dropped, the rest matched by mutual nearest neighbour and
   lifted to 3D in the depth camera (nearest depth pixel, :func:`featlab.geometry.depth.backproject`); the rigid
   motion is estimated by RANSAC over 3-point Kabsch fits with refinement (:func:`featlab.geometry.rigid
   .estimate_rigid_ransac`, inlier distance 3.75 cm, at most 100k samples, confidence 0.999). ``fpfh`` matches are
   mutual nearest neighbours of the FPFH descriptors and go through Open3D's RANSAC (the reference protocol), with
   the same inlier distance, iterations and confidence. No ICP for any method.
4. Per pair: rotation error (deg) and translation error (m, ``|t - t_gt|``) against the ground truth; success at
   each (degrees, metres) threshold (both errors at or below it); inlier ratio (matches whose 3D points lie within
   10 cm of each other under the ground-truth motion); whether the inlier ratio exceeds 5 % (feature-match recall);
   whether the identity motion would pass each threshold. Summaries: registration recall per threshold, median
   errors, mean inlier ratio, feature-match recall, the identity's share, extraction and registration times.

The ground truth of 7-Scenes is KinectFusion's camera tracking (centimetre level), so errors below ~1 cm / 0.5 deg
are within its noise.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ..conf import none_or, resolve_conf, to_container
from . import metrics
from .cache import FeatureCache, data_identity, extract_numpy, extractor_settings, match_features, no_progress_bar

#: registration methods that are not extractors
POINT_CLOUD_METHODS = ("fpfh",)

default_conf = {
    "resize": none_or(int, list),  # extraction size: None (native), int (longest side) or [H, W]; keypoints mapped back
    "max_keypoints": 2048,  # top-k keypoints kept by each extractor
    "ransac_threshold": 0.0375,  # m, RANSAC inlier distance (Open3D's usual 1.5 voxels of the FPFH protocol)
    "max_iters": 100000,  # RANSAC sample cap (featlab's and Open3D's)
    "confidence": 0.999,  # RANSAC stopping confidence (featlab's and Open3D's)
    "refine_iters": 10,  # Kabsch refinement rounds on the inliers (featlab's RANSAC)
    "inlier_distance": 0.10,  # m, a match is correct when its 3D points are this close under the ground truth
    "fmr_threshold": 0.05,  # a pair counts for feature-match recall when its inlier ratio exceeds this
    "thresholds": [[5.0, 0.10], [2.0, 0.05]],  # (degrees, metres) pairs of registration recall
    "seed": 0,  # RANSAC random stream (benchmark role, one generator per pair)
}


def threshold_name(deg: float, m: float) -> str:
    """``5deg_10cm`` style key of a (degrees, metres) threshold."""
    return f"{deg:g}deg_{100 * m:g}cm"


def colour_to_depth_pixels(points: np.ndarray, K_colour: np.ndarray, K_depth: np.ndarray) -> np.ndarray:
    """Colour-image pixels -> depth-map pixels, ``K_depth K_colour^-1 [x, y, 1]`` (both cameras at one optical
    centre with one orientation: exact when depth is registered to colour, approximate for 7-Scenes).

    Args:
        points: (N, 2) featlab pixels of the colour image. K_colour, K_depth: (3, 3).
    Returns:
        (N, 2) featlab pixels of the depth map.
    """
    A = np.asarray(K_depth, np.float64) @ np.linalg.inv(np.asarray(K_colour, np.float64))
    p = np.asarray(points, np.float64).reshape(-1, 2) @ A[:2, :2].T + A[:2, 2]
    return p


def lift_keypoints(points: np.ndarray, depth: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keypoints of a depth map in 3D: nearest depth pixel, back-projected with K.

    Args:
        points: (N, 2) featlab pixels of ``depth``; depth: (H, W) metres (0 invalid); K: (3, 3).
    Returns:
        X (N, 3) float64 camera coordinates (meaningful where valid), valid (N,) bool (depth > 0 there).
    """
    import torch

    from ..geometry.depth import backproject, sample_depth_nearest

    p = torch.from_numpy(np.asarray(points, np.float64).reshape(1, -1, 2))
    d = sample_depth_nearest(torch.from_numpy(np.asarray(depth, np.float64))[None], p)
    X = backproject(p, d, torch.from_numpy(np.asarray(K, np.float64)))
    return X[0].numpy(), (d[0] > 0).numpy()


def _correct(X0: np.ndarray, X1: np.ndarray, T_0to1: np.ndarray, distance: float) -> np.ndarray:
    """Matches whose 3D points are within ``distance`` under the ground-truth motion: (M,) bool."""
    T = np.asarray(T_0to1, np.float64)
    return np.linalg.norm(X0 @ T[:3, :3].T + T[:3, 3] - X1, axis=-1) <= distance


def score_matches(X0: np.ndarray, X1: np.ndarray, R, t, T_0to1: np.ndarray, conf) -> dict[str, Any]:
    """Errors and match statistics of one registered pair.

    Args:
        X0, X1: (M, 3) matched 3D points; R, t: the estimate (None on failure); T_0to1: (4, 4) ground truth.
    Returns:
        JSON-ready numbers: ``error_R`` (deg) and ``error_t`` (m) (inf on failure), ``success`` per threshold,
        ``num_matches``, ``inlier_ratio`` (under the ground truth), ``num_inliers`` (under the estimate).
    """
    from ..geometry.rigid import residuals, rigid_errors

    err_R, err_t = rigid_errors(T_0to1, R, t)
    m = len(X0)
    correct = _correct(X0, X1, T_0to1, float(conf.inlier_distance)) if m else np.zeros(0, bool)
    inliers = int((residuals(R, t, X0, X1) < float(conf.ransac_threshold)).sum()) if R is not None and m else 0
    return {
        "failed": R is None,
        "error_R": float(err_R),
        "error_t": float(err_t),
        "success": {threshold_name(d, s): bool(err_R <= d and err_t <= s) for d, s in conf.thresholds},
        "num_matches": int(m),
        "num_inliers": inliers,
        "inlier_ratio": float(correct.mean()) if m else 0.0,
    }


def identity_passes(T_0to1: np.ndarray, thresholds) -> dict[str, bool]:
    """Whether the identity motion would pass each (degrees, metres) threshold for this ground truth."""
    from ..geometry.rigid import rigid_errors

    err_R, err_t = rigid_errors(T_0to1, np.eye(3), np.zeros(3))
    return {threshold_name(d, s): bool(err_R <= d and err_t <= s) for d, s in thresholds}


def summarize(records: list[dict], conf) -> dict[str, Any]:
    """Registration recall, median errors, inlier ratio, feature-match recall and the identity's share."""
    n = len(records)
    out: dict[str, Any] = {"num_pairs": n}
    if n == 0:
        return out
    names = [threshold_name(d, s) for d, s in conf.thresholds]
    ratios = np.array([r["inlier_ratio"] for r in records])
    out.update({
        "recall": {k: float(np.mean([r["success"][k] for r in records])) for k in names},
        "identity_recall": {k: float(np.mean([r["identity_passes"][k] for r in records])) for k in names},
        "median_error_R": float(np.median([r["error_R"] for r in records])),
        "median_error_t": float(np.median([r["error_t"] for r in records])),
        "mean_inlier_ratio": float(ratios.mean()),
        "feature_match_recall": float((ratios > float(conf.fmr_threshold)).mean()),
        "failures": int(sum(r["failed"] for r in records)),
        "mean_num_matches": metrics.mean_or_zero(r["num_matches"] for r in records),
        "mean_num_keypoints": metrics.mean_or_zero(0.5 * (r["num_keypoints0"] + r["num_keypoints1"])
                                                   for r in records),
        "median_seconds_register": float(np.median([r["seconds_register"] for r in records])),
    })
    rot = [r["gt_rotation"] for r in records]
    tr = [r["gt_translation"] for r in records]
    out["gt_rotation"] = {"min": float(np.min(rot)), "median": float(np.median(rot)), "max": float(np.max(rot))}
    out["gt_translation"] = {"min": float(np.min(tr)), "median": float(np.median(tr)), "max": float(np.max(tr))}
    return out


class _Timed:
    """Seconds of each cache miss (extraction time per frame)."""

    def __init__(self):
        self.seconds: list[float] = []

    def __call__(self, fn, *args):
        t0 = time.perf_counter()
        out = fn(*args)
        self.seconds.append(time.perf_counter() - t0)
        return out


def run_benchmark(sequence, pairs: list[tuple[int, int]], methods: dict, conf: dict | None, cache_root: str | Path,
                  source: dict, K_depth: np.ndarray, K_colour: np.ndarray | None = None,
                  colour_sequence=None, progress: bool | None = None) -> dict[str, Any]:
    """Extract (cached) then register every pair with every method.

    Args:
        sequence: :class:`featlab.datasets.rgbd.RGBDSequence` whose ``K`` is the depth camera's: pairs, depth maps
            (``load_depth``), poses (``relative_pose``), frame names (``image_name``).
        pairs: ``[(i, j)]`` frame indices.
        methods: ``{name: Extractor}`` (depth or image extractors) plus ``{"fpfh": None}`` for the point-cloud
            baseline.
        conf: benchmark conf (:data:`default_conf`).
        cache_root: feature cache folder.
        source: identifies the data (root, dataset conf); part of the cache key.
        K_depth: (3, 3) intrinsics of the depth maps (featlab pixels); K_colour: the colour images' (image
            extractors only).
        colour_sequence: gives the colour images (``load_image``); defaults to ``sequence``.
    Returns:
        ``{"conf", "source", "gaps", "methods": {name: {"summary": {"all": ..., "gap_20": ...}, "pairs": [...],
        "inputs", "median_ms_extract"}}}``.
    """
    from tqdm import tqdm

    from ..errors import ConfigError, InputError
    from ..extractors.base import extract_depth
    from ..extractors.depth_baselines import FPFH_CONF, fpfh_features, depth_points, fpfh_ransac, mutual_nearest
    from ..geometry.pose import rotation_angle
    from ..geometry.rigid import estimate_rigid_ransac
    from ..io.depth import depth_checksum
    from ..rng import role_rng

    conf = resolve_conf(default_conf, conf, "register")
    if not pairs:
        raise InputError("no frame pairs to evaluate (lower --min-covisibility, widen --frames or change --gaps)")
    if any(len(t) != 2 or not (t[0] > 0 and t[1] > 0) for t in conf.thresholds):
        raise ConfigError(f"register.thresholds must be [degrees, metres] pairs of positive numbers, got "
                          f"{to_container(conf.thresholds)}")
    K_depth = np.asarray(K_depth, np.float64)
    colour_sequence = colour_sequence or sequence
    inputs = {name: "point cloud" if ext is None else ext.inputs for name, ext in methods.items()}
    if "image" in inputs.values() and K_colour is None:
        raise ConfigError("image extractors need the colour camera's K (K_colour)")
    unknown = [n for n, ext in methods.items() if ext is None and n not in POINT_CLOUD_METHODS]
    if unknown:
        raise ConfigError(f"no extractor for method(s) {', '.join(unknown)}")
    resize = to_container(conf.resize)
    fpfh_conf = {**FPFH_CONF, "max_correspondence": float(conf.ransac_threshold), "max_iters": int(conf.max_iters),
                 "confidence": float(conf.confidence), "seed": int(conf.seed)}
    data = data_identity(source)
    caches, timers = {}, {}
    for name, ext in methods.items():
        settings = {"inputs": inputs[name], "resize": resize, "data": data}
        if ext is None:
            settings["fpfh"] = {k: fpfh_conf[k] for k in ("voxel", "normal_radius", "feature_radius")}
        else:
            settings["extractor"] = extractor_settings(ext)
        caches[name] = FeatureCache(cache_root, name, settings)
        timers[name] = _Timed()

    # loop 1: every frame once per method
    frames = sorted({int(i) for p in pairs for i in p})
    for i in tqdm(frames, desc="extract (frames)", unit="frame", disable=no_progress_bar(progress)):
        key = str(sequence.image_name(i))
        depth = sequence.load_depth(i)
        checksum = depth_checksum(depth, K_depth)
        image = None
        for name, ext in methods.items():
            cache = caches[name]
            if inputs[name] == "image":
                if image is None:
                    image = colour_sequence.load_image(i)
                cache.get_or_compute(key, image, lambda im, e=ext, t=timers[name]: t(extract_numpy, e, im, resize))
                continue
            if cache.get(key, checksum) is not None:
                cache.hits += 1
                continue
            cache.misses += 1
            if ext is None:
                pts, feats = timers[name](lambda: fpfh_features(depth_points(depth, K_depth), fpfh_conf))
                cache.put(key, {"points": pts, "features": feats}, checksum)
            else:
                pred = timers[name](extract_depth, ext, depth, K_depth, resize)
                cache.put(key, {k: pred[k] for k in ("keypoints", "keypoint_scores", "descriptors")}, checksum)

    # loop 2: register every pair from the cache
    metas = []
    for i, j in pairs:
        T = np.asarray(sequence.relative_pose(int(i), int(j)), np.float64)
        metas.append({"pair": [int(i), int(j)], "gap": int(j) - int(i),
                      "keys": (str(sequence.image_name(int(i))), str(sequence.image_name(int(j)))),
                      "name": f"{sequence.image_name(int(i))}_{sequence.image_name(int(j))}",
                      "covisibility": getattr(sequence, "covisibilities", {}).get((int(i), int(j))),
                      "gt_rotation": float(rotation_angle(T[:3, :3])),
                      "gt_translation": float(np.linalg.norm(T[:3, 3])),
                      "identity_passes": identity_passes(T, conf.thresholds), "T_0to1": T})
    results: dict[str, Any] = {}
    for name, ext in methods.items():
        lifted: dict[int, tuple] = {}

        def lift(f, idx, name=name, lifted=lifted):
            """Keypoints of frame idx with valid depth: 3D points (N, 3) and their descriptors (once per frame)."""
            if idx not in lifted:
                kp = f["keypoints"]
                if inputs[name] == "image":
                    kp = colour_to_depth_pixels(kp, K_colour, K_depth)
                X, valid = lift_keypoints(kp, sequence.load_depth(idx), K_depth)
                lifted[idx] = (X[valid], {"descriptors": f["descriptors"][valid]})
            return lifted[idx]

        records = []
        for k, meta in enumerate(tqdm(metas, desc=f"register {name}", unit="pair",
                                      disable=no_progress_bar(progress))):
            i, j = meta["pair"]
            f0, f1 = (caches[name].get(key) for key in meta["keys"])
            if f0 is None or f1 is None:  # pragma: no cover - written by loop 1 a moment ago
                raise InputError(f"feature cache entry vanished for pair {meta['pair']} in {caches[name].dir}")
            if ext is not None:  # lifting (depth decoding) is not registration time
                (X0all, g0), (X1all, g1) = (lift(f, idx) for f, idx in ((f0, i), (f1, j)))
            t0 = time.perf_counter()
            if ext is None:
                matches = mutual_nearest(f0["features"], f1["features"])
                X0, X1 = f0["points"][matches[:, 0]], f1["points"][matches[:, 1]]
                R, t = fpfh_ransac(f0["points"], f1["points"], matches, fpfh_conf)
                n0, n1 = len(f0["points"]), len(f1["points"])
            else:
                m0 = match_features(g0, g1, ext.descriptor_type == "binary")
                idx0, idx1 = metrics.match_indices(m0)
                X0, X1 = X0all[idx0], X1all[idx1]
                R, t, _ = estimate_rigid_ransac(X0, X1, threshold=float(conf.ransac_threshold),
                                                max_iters=int(conf.max_iters), confidence=float(conf.confidence),
                                                refine_iters=int(conf.refine_iters),
                                                rng=role_rng(int(conf.seed), "benchmark", i, j))
                n0, n1 = len(X0all), len(X1all)
            seconds = time.perf_counter() - t0
            rec = score_matches(X0, X1, R, t, meta["T_0to1"], conf)
            records.append({"name": meta["name"], "pair": meta["pair"], "gap": meta["gap"],
                            "covisibility": meta["covisibility"], "gt_rotation": meta["gt_rotation"],
                            "gt_translation": meta["gt_translation"], "identity_passes": meta["identity_passes"],
                            "num_keypoints0": int(n0), "num_keypoints1": int(n1), "seconds_register": seconds,
                            **rec})
        gaps = sorted({m["gap"] for m in metas})
        summary = {"all": summarize(records, conf)}
        for gap in gaps:
            summary[f"gap_{gap}"] = summarize([r for r in records if r["gap"] == gap], conf)
        secs = timers[name].seconds
        results[name] = {"summary": summary, "pairs": records, "inputs": inputs[name],
                         "median_ms_extract": 1000 * float(np.median(secs)) if secs else None,
                         "cache": str(caches[name].dir), "cache_hits": caches[name].hits,
                         "cache_misses": caches[name].misses,
                         "extractor": None if ext is None else extractor_settings(ext),
                         "fpfh": fpfh_conf if ext is None else None}
    return {"conf": to_container(conf), "source": source, "gaps": sorted({m["gap"] for m in metas}),
            "methods": results}


def _group_title(group: str) -> str:
    return "all pairs" if group == "all" else f"frame gap {group.split('_', 1)[1]}"


_INPUT_LABELS = {"depth": "depth", "image": "colour, lifted", "point cloud": "point cloud"}


def markdown_report(result: dict) -> str:
    """One table per gap (then all pairs), methods as rows, with the identity motion's share as the first row."""
    from .report import markdown_table, summary_groups

    conf, src = result["conf"], result["source"]
    names = [threshold_name(d, s) for d, s in conf["thresholds"]]
    labels = [f"RR@{d:g}deg,{100 * s:g}cm" for d, s in conf["thresholds"]]
    header = (["method", "input"] + labels + ["median rot [deg]", "median trans [cm]", "inlier ratio", "FMR",
                                             "#matches", "#kpts", "extract [ms]", "register [ms]"])
    lines = [f"# 3D registration: {src['label']}", "",
             "Pairs of depth views; matched keypoints lifted to 3D with the depth map (depth-camera intrinsics: "
             f"{src.get('depth_intrinsics', '?')}); rigid motion by RANSAC over 3-point Kabsch fits with refinement "
             f"(inlier distance {100 * conf['ransac_threshold']:g} cm, at most {conf['max_iters']} samples, "
             f"confidence {conf['confidence']:g}); `fpfh`: Open3D FPFH (2.5 cm voxels, normals 5 cm, FPFH 12.5 cm) "
             "and Open3D's RANSAC on mutual matches with the same settings. No ICP. RR = registration recall (both "
             "errors at or below the threshold); inlier ratio: matches within "
             f"{100 * conf['inlier_distance']:g} cm under the ground truth; FMR: share of pairs with an inlier ratio "
             f"above {100 * conf['fmr_threshold']:g} %. Failures count as infinite error.", ""]
    if src.get("colour_note"):
        lines += [f"Colour methods: {src['colour_note']}", ""]
    for group, entries in summary_groups(result):
        first = entries[0][2]
        rows = [[name, _INPUT_LABELS.get(res["inputs"], res["inputs"])] + [s["recall"][k] for k in names]
                + [s["median_error_R"], 100 * s["median_error_t"], s["mean_inlier_ratio"], s["feature_match_recall"],
                   s["mean_num_matches"], s["mean_num_keypoints"], res["median_ms_extract"],
                   1000 * s["median_seconds_register"]]
                for name, res, s in entries]
        rows.insert(0, ["(identity)", "-"] + [first["identity_recall"][k] for k in names] + [None] * 8)
        rot, tr = first["gt_rotation"], first["gt_translation"]
        lines += [f"## {_group_title(group)}: {first['num_pairs']} pairs, ground-truth rotation "
                  f"{rot['min']:.1f}-{rot['max']:.1f} deg (median {rot['median']:.1f}), translation "
                  f"{100 * tr['min']:.0f}-{100 * tr['max']:.0f} cm (median {100 * tr['median']:.0f})", "",
                  markdown_table(header, rows, [0, 0] + [2] * len(names) + [2, 1, 3, 2, 0, 0, 0, 0]), ""]
    return "\n".join(lines)


def plot_errors(result: dict, path: str | Path) -> Path:
    """Cumulative rotation and translation errors over all pairs (fraction of pairs with error <= x)."""
    from .report import plot_curves

    xr, xt = np.linspace(0.0, 10.0, 101), np.linspace(0.0, 20.0, 101)
    rot, trans = {}, {}
    for name, res in result["methods"].items():
        er = np.array([r["error_R"] for r in res["pairs"]], np.float64)
        et = 100 * np.array([r["error_t"] for r in res["pairs"]], np.float64)
        rot[name] = (er[None] <= xr[:, None]).mean(1)
        trans[name] = (et[None] <= xt[:, None]).mean(1)
    panels = [{"title": "rotation error [deg]", "x": xr, "curves": rot},
              {"title": "translation error [cm]", "x": xt, "curves": trans}]
    return plot_curves(path, panels, "error threshold", "fraction of pairs",
                       f"3D registration: {result['source']['label']}", markers=False)


def load_sequence(args):
    """The sequence (with the depth camera's K), the colour sequence, K_depth, the pairs and the source record of
    ``featlab eval register`` arguments (``rgbd``, ``frames``, ``gaps``, ``min_covisibility``,
    ``max_pairs_per_gap``, ``seed``, ``pairs``, ``depth_focal``, ``focal``).

    Depth intrinsics: 7-Scenes layout, the sequence's ``camera-intrinsics.txt`` as written (the published file holds
    the depth sensor's fx = fy = 585, principal point (320, 240)), or those 585 / image centre when it is absent;
    TUM layout, the sequence's K (TUM depth is registered to colour). ``--depth-focal`` replaces the focal length.
    """
    from ..datasets.rgbd import SEVEN_SCENES_K, RGBDSequence
    from ..errors import ConfigError, InputError
    from ..io.text import read_matrix_file

    colour_conf = {}
    if args.focal is not None:
        if args.focal <= 0:
            raise ConfigError(f"--focal must be positive, got {args.focal}")
        colour_conf["focal"] = float(args.focal)
    colour = RGBDSequence(args.rgbd, colour_conf)
    if colour.layout == "7scenes":
        intr = Path(args.rgbd) / "camera-intrinsics.txt"
        if intr.is_file():
            K = read_matrix_file(intr, (3, 3), "camera intrinsics")
            f, cx, cy, origin = float(K[0, 0]), float(K[0, 2]), float(K[1, 2]), "camera-intrinsics.txt"
        else:
            (f, cx, cy), origin = SEVEN_SCENES_K, "7-Scenes depth sensor; no camera-intrinsics.txt"
    else:
        f, cx, cy, origin = float(colour.K[0, 0]), float(colour.K[0, 2]), float(colour.K[1, 2]), colour.intrinsics
    if args.depth_focal is not None:
        if args.depth_focal <= 0:
            raise ConfigError(f"--depth-focal must be positive, got {args.depth_focal}")
        f, origin = float(args.depth_focal), "--depth-focal"
    sequence = RGBDSequence(args.rgbd, {"focal": f, "principal_point": [cx, cy]})
    K_depth = sequence.K.copy()
    if args.pairs is not None:
        pairs = sequence.load_pairs(args.pairs)
    else:
        first, last = args.frames
        if last < first:
            raise ConfigError(f"--frames FIRST LAST needs FIRST <= LAST, got {first} {last}")
        pairs = sequence.make_pairs(gaps=tuple(args.gaps), min_covisibility=args.min_covisibility,
                                    max_pairs_per_gap=args.max_pairs_per_gap, frame_range=(first, last + 1),
                                    seed=args.seed)
    if not pairs:
        raise InputError(f"no frame pair of {args.rgbd} passes the covisibility test for gaps {args.gaps} "
                         "(lower --min-covisibility or widen --frames)")
    gaps = " ".join(map(str, sorted({j - i for i, j in pairs})))
    synthetic = (Path(args.rgbd) / "synthetic.json").is_file()  # written by featlab.datasets.render
    label = f"{'synthetic: ' if synthetic else ''}{Path(args.rgbd).name} ({len(pairs)} pairs, frame gaps {gaps})"
    depth_intr = f"fx = fy = {f:g} px, principal point ({cx:g}, {cy:g}) ({origin})"
    if np.allclose(colour.K, K_depth):
        note = "colour and depth share one K (registered): colour keypoints are lifted at their own pixels."
    else:
        note = (f"colour and depth are only approximately registered here (colour {colour.intrinsics}; depth "
                f"{depth_intr}): colour keypoints are moved into the depth map by K_depth K_colour^-1, one optical "
                "centre assumed and the sensors' baseline ignored.")
    source = {"kind": "rgbd", "label": label, "root": str(Path(args.rgbd).resolve()), "layout": colour.layout,
              "depth_intrinsics": depth_intr, "colour_intrinsics": colour.intrinsics, "colour_note": note,
              "dataset_conf": to_container(sequence.conf), "synthetic": synthetic}
    return sequence, colour, K_depth, pairs, source
