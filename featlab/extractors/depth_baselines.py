"""Baselines on depth maps: SIFT on a normalised depth image (an extractor, ``inputs = "depth"``) and FPFH + RANSAC
on the point clouds (Open3D; a registration method, not an extractor: FPFH descriptors are not unit vectors).

``sift-depth`` (SIFT contrast threshold 0.01) renders each depth map as an 8-bit image: valid depths mapped
linearly from ``[near, far]`` to [0, 255] (by default the map's own 1st and 99th percentiles of valid depth; SIFT
descriptors are invariant to that gain and offset), invalid pixels filled with the nearest valid depth so that holes
make no edges, and SIFT's detector masked to pixels with valid depth at least ``invalid_margin`` px away from any
hole (OpenCV SIFT, featlab's :class:`~featlab.extractors.handcrafted.SIFT` with its pixel conversion and top-k).

FPFH (Rusu et al. 2009) as the issue's reference protocol: 2.5 cm voxels, normals from a 5 cm radius, FPFH from a
12.5 cm radius, mutual nearest neighbours of the descriptors, Open3D's RANSAC over 3-point samples
(``registration_ransac_based_on_correspondence``; edge-length and distance checkers) with 100k iterations.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..conf import none_or
from ..errors import ConfigError, InputError
from .base import register_extractor, stack_padded
from .handcrafted import SIFT


def depth_to_gray(depth: np.ndarray, depth_range=None, percentiles=(1.0, 99.0)) -> tuple[np.ndarray, np.ndarray]:
    """A depth map as an 8-bit image for image detectors.

    Args:
        depth: (H, W) float metres, 0 = invalid.
        depth_range: [near, far] metres mapped to [0, 255]; None: the map's own ``percentiles`` of valid depth.
    Returns:
        gray uint8 (H, W) (holes filled with the nearest valid pixel's value), valid bool (H, W).
    """
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.zeros(depth.shape, np.uint8), valid
    if depth_range is None:
        near, far = np.percentile(depth[valid], percentiles)
    else:
        near, far = (float(v) for v in depth_range)
    scale = 255.0 / max(far - near, 1e-6)
    gray = np.clip((np.where(valid, depth, near) - near) * scale, 0, 255).astype(np.float32)
    if not valid.all():
        # index of the nearest valid pixel of every pixel: holes take its value (no step edge at a hole's border)
        _, labels = cv2.distanceTransformWithLabels((~valid).astype(np.uint8), cv2.DIST_L2, 5,
                                                    labelType=cv2.DIST_LABEL_PIXEL)
        lut = np.zeros(labels.max() + 1, np.float32)
        lut[labels[valid]] = gray[valid]
        gray = lut[labels]
    return np.round(gray).astype(np.uint8), valid


class _MaskedDetector:
    """OpenCV SIFT whose detection is restricted to a mask (SIFT.detect_and_describe passes no mask)."""

    def __init__(self, sift, mask):
        self._sift, self._mask = sift, mask

    def detectAndCompute(self, image, _mask):  # noqa: N802 - OpenCV's names
        return self._sift.detectAndCompute(image, self._mask)

    def detect(self, image, _mask):
        return self._sift.detect(image, self._mask)

    def compute(self, image, keypoints):
        return self._sift.compute(image, keypoints)


# contrast_threshold 0.01 (OpenCV's default 0.04 finds few extrema on smooth depth): chosen on 7-Scenes' selection
# frames 360-399 (30 pairs, gaps 20 and 30; docs/REGISTRATION.md): registration recall at (5 deg, 10 cm) 0.70 with
# 0.04 (72 keypoints with depth per view), 0.90 with 0.01 (135)
@register_extractor("sift-depth", preset={"contrast_threshold": 0.01},
                    summary="baseline: OpenCV SIFT on the depth map rendered as a normalised 8-bit image (depth input)")
class DepthSIFT(SIFT):
    """SIFT on depth maps (``inputs = "depth"``): see the module docstring. Keypoints in depth-map pixels."""

    inputs = "depth"
    default_conf = {
        **SIFT.default_conf,
        "depth_range": none_or(list),  # [near, far] metres mapped to 0..255; None: each map's 1st-99th percentile
        "invalid_margin": 2,  # px: no keypoint this close to a pixel without depth
    }

    def _init(self, conf):
        super()._init(conf)
        if int(conf.invalid_margin) < 0:
            raise ConfigError(f"sift-depth: invalid_margin must be >= 0, got {conf.invalid_margin}")
        if conf.depth_range is not None and (len(conf.depth_range) != 2 or
                                             not 0 <= conf.depth_range[0] < conf.depth_range[1]):
            raise ConfigError(f"sift-depth: depth_range must be [near, far] with 0 <= near < far, got "
                              f"{list(conf.depth_range)}")

    def _forward(self, data):
        items = []
        sift = self._sift
        rng = None if self.conf.depth_range is None else list(self.conf.depth_range)
        try:
            for depth in data["depth"][:, 0].float().cpu().numpy():
                gray, valid = depth_to_gray(depth, rng)
                m = int(self.conf.invalid_margin)
                mask = valid.astype(np.uint8)
                if m > 0:
                    mask = cv2.erode(mask, np.ones((2 * m + 1, 2 * m + 1), np.uint8), borderValue=1)
                self._sift = _MaskedDetector(sift, mask * 255)
                pts, scores, desc, _, _ = self.detect_and_describe(gray)  # top-k by response, sorted
                items.append({"keypoints": torch.from_numpy(pts), "keypoint_scores": torch.from_numpy(scores),
                              "descriptors": torch.from_numpy(desc)})
        finally:
            self._sift = sift
        return {k: v.to(data["depth"].device) for k, v in stack_padded(items).items()}


# ----------------------------------------------------------------------------------------------- FPFH + RANSAC
#: the reference protocol's settings (metres); ``max_correspondence`` is Open3D's usual 1.5 voxels
FPFH_CONF = {
    "voxel": 0.025,  # voxel size of the downsampled clouds
    "normal_radius": 0.05,  # normals from neighbours within this radius (at most 30)
    "feature_radius": 0.125,  # FPFH from neighbours within this radius (at most 100)
    "max_correspondence": 0.0375,  # RANSAC inlier distance
    "max_iters": 100000,  # RANSAC iterations
    "confidence": 0.999,  # RANSAC confidence (Open3D stops early once reached)
    "edge_length_ratio": 0.9,  # Open3D checker: sample edge lengths must agree to this ratio
    "seed": 0,  # Open3D's random seed
}


def import_open3d():
    """Open3D, or InputError with the install hint (it needs Debian's libusb-1.0-0 to import)."""
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError) as e:  # OSError: a missing shared library such as libusb-1.0
        raise InputError(f"the FPFH baseline needs Open3D (pip install open3d; apt-get install libusb-1.0-0): "
                         f"{e}") from None
    return open3d


def depth_points(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """All pixels with valid depth lifted to camera coordinates: (N, 3) float64 metres (featlab pixel centres)."""
    from ..pixels import pixel_grid

    h, w = depth.shape
    grid = pixel_grid(h, w).numpy().astype(np.float64)  # (H*W, 2) featlab pixel centres, row-major
    z = depth.reshape(-1).astype(np.float64)
    keep = np.isfinite(z) & (z > 0)
    rays = (grid[keep] - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])
    return np.concatenate([rays * z[keep, None], z[keep, None]], 1)


def fpfh_features(points: np.ndarray, conf: dict = FPFH_CONF):
    """Voxel-downsampled cloud and its FPFH descriptors: (M, 3) float64 points, (M, 33) float64 features."""
    o3d = import_open3d()
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    down = pcd.voxel_down_sample(conf["voxel"])
    down.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=conf["normal_radius"], max_nn=30))
    feat = o3d.pipelines.registration.compute_fpfh_feature(
        down, o3d.geometry.KDTreeSearchParamHybrid(radius=conf["feature_radius"], max_nn=100))
    return np.asarray(down.points), np.asarray(feat.data).T.copy()


def mutual_nearest(f0: np.ndarray, f1: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Mutual nearest neighbours in Euclidean feature distance: (M, 2) int64 index pairs (i0, i1)."""
    if len(f0) == 0 or len(f1) == 0:
        return np.zeros((0, 2), np.int64)
    a, b = torch.from_numpy(f0).float(), torch.from_numpy(f1).float()

    def nearest(x, y):
        return torch.cat([torch.cdist(x[i:i + chunk], y).argmin(1) for i in range(0, len(x), chunk)])

    nn01, nn10 = nearest(a, b), nearest(b, a)
    i0 = torch.arange(len(a))
    keep = nn10[nn01] == i0
    return torch.stack([i0[keep], nn01[keep]], 1).numpy().astype(np.int64)


def fpfh_ransac(points0: np.ndarray, points1: np.ndarray, matches: np.ndarray, conf: dict | None = None):
    """Open3D's RANSAC over 3-point samples of FPFH matches (the reference protocol).

    Args:
        points0, points1: (M0, 3), (M1, 3) downsampled clouds; matches: (M, 2) index pairs (mutual FPFH matches).
        conf: overrides of :data:`FPFH_CONF`.
    Returns:
        R (3, 3), t (3,) mapping view 0 to view 1, or (None, None) when there are fewer than 3 matches or Open3D
        finds no model. (Open3D refits the best sample's model on its inliers.)
    """
    o3d = import_open3d()
    c = {**FPFH_CONF, **(conf or {})}
    unknown = set(c) - set(FPFH_CONF)
    if unknown:
        raise ConfigError(f"unknown FPFH setting(s): {', '.join(sorted(unknown))}")
    if len(matches) < 3:
        return None, None
    reg = o3d.pipelines.registration
    o3d.utility.random.seed(int(c["seed"]))
    pcd0 = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points0, np.float64)))
    pcd1 = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points1, np.float64)))
    dist = float(c["max_correspondence"])
    result = reg.registration_ransac_based_on_correspondence(
        pcd0, pcd1, o3d.utility.Vector2iVector(np.asarray(matches, np.int32)), dist,
        reg.TransformationEstimationPointToPoint(False), 3,
        [reg.CorrespondenceCheckerBasedOnEdgeLength(float(c["edge_length_ratio"])),
         reg.CorrespondenceCheckerBasedOnDistance(dist)],
        reg.RANSACConvergenceCriteria(int(c["max_iters"]), float(c["confidence"])))
    T = np.asarray(result.transformation, dtype=np.float64)
    if len(result.correspondence_set) < 3 or not np.isfinite(T).all():
        return None, None
    return T[:3, :3].copy(), T[:3, 3].copy()


def fpfh_register(depth0: np.ndarray, depth1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                  conf: dict | None = None) -> dict:
    """Register two depth maps with FPFH + RANSAC (Open3D): :func:`fpfh_features` of both clouds,
    :func:`mutual_nearest` matches, :func:`fpfh_ransac`.

    Args:
        depth0, depth1: (H, W) metres, 0 = invalid; K0, K1: (3, 3) featlab pixels.
        conf: overrides of :data:`FPFH_CONF`.
    Returns:
        dict with ``R`` (3, 3) / ``t`` (3,) mapping view 0 to view 1 (None on failure), ``points0`` (M0, 3),
        ``points1`` (M1, 3) the downsampled clouds and ``matches`` (M, 2) mutual FPFH matches.
    """
    c = {**FPFH_CONF, **(conf or {})}
    p0, f0 = fpfh_features(depth_points(depth0, np.asarray(K0, np.float64)), c)
    p1, f1 = fpfh_features(depth_points(depth1, np.asarray(K1, np.float64)), c)
    matches = mutual_nearest(f0, f1)
    R, t = fpfh_ransac(p0, p1, matches, c)
    return {"R": R, "t": t, "points0": p0, "points1": p1, "matches": matches}
