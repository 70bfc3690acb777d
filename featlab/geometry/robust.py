"""Robust two-view estimation (numpy): homography, fundamental matrix and relative pose from noisy matches.

Homography and fundamental matrix backends:
    "magsac"  OpenCV USAC with MAGSAC++ scoring (``cv2.USAC_MAGSAC``), the default.
    "ransac"  OpenCV's classic RANSAC (``cv2.RANSAC``).
    "poselib" PoseLib's LO-RANSAC with non-linear refinement.

Relative-pose estimators (:data:`RELPOSE_METHODS`, defaults in :data:`RELPOSE_DEFAULTS`):
    "superglue" (default) SuperGlue's protocol (``estimate_pose`` in its evaluation code): OpenCV
              ``findEssentialMat`` with classic RANSAC on K-normalised points (each view by its own K),
              threshold = ``threshold`` px / mean focal length of the two cameras, confidence 0.99999, 1000
              iterations (OpenCV's default, which SuperGlue leaves unchanged), then ``recoverPose`` on every
              returned E candidate, keeping the one with the most points in front of both cameras.
    "magsac"  OpenCV USAC MAGSAC++ on ``f_mean * K^-1 x`` then ``recoverPose``; confidence 0.9999, 10000
              iterations (featlab's default before the SuperGlue protocol; "opencv" is read as its old name).
    "poselib" PoseLib's 5-point LO-RANSAC + non-linear refinement; confidence 0.9999, 10000 iterations.
:func:`relative_pose_settings` gives the settings a call actually runs with, for labelling results.

Coordinates: points are featlab pixels (centre of the top-left pixel at (0.5, 0.5)) and K is in featlab pixels.
A homography or fundamental matrix maps whatever coordinates it was estimated from, so ``H`` / ``F`` returned
here are in featlab pixels (``p1 ~ H p0``, ``x1^T F x0 = 0``) with no conversion; the relative pose only depends
on ``K^-1 x``, which is convention-free as long as points and K agree. Thresholds are in pixels: reprojection
error in image 1 for H, point-to-epipolar-line distance for F and E (for E measured on ``f_mean * K^-1 x``,
the points normalised by their own K and rescaled by the mean focal length of both cameras).

Degenerate input never raises and never reaches OpenCV / PoseLib: fewer matches than the minimal sample,
non-finite coordinates, all points identical or collinear in either image, or a solver returning no model
all give ``None`` and an all-False inlier mask (homography and fundamental matrix: several stacked models too).
Malformed input (wrong shapes, mismatched lengths, an unknown method, a singular K) raises
:class:`~featlab.errors.InputError` / ``ConfigError``.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..errors import ConfigError, InputError

#: minimal sample sizes of the solvers
MIN_MATCHES = {"homography": 4, "fundamental": 7, "essential": 5}
#: relative tolerance of the collinearity / identical-points test (ratio of singular values of the point cloud)
_DEGENERATE_RTOL = 1e-8

_OPENCV_METHODS = {"magsac": cv2.USAC_MAGSAC, "ransac": cv2.RANSAC}

#: relative-pose estimators, the first is the default
RELPOSE_METHODS = ("superglue", "magsac", "poselib")
#: confidence and iteration cap each relative-pose estimator runs with unless told otherwise
RELPOSE_DEFAULTS = {
    "superglue": {"confidence": 0.99999, "max_iters": 1000},  # SuperGlue: prob=0.99999, OpenCV's maxIters
    "magsac": {"confidence": 0.9999, "max_iters": 10000},
    "poselib": {"confidence": 0.9999, "max_iters": 10000},
}
#: one-line description of each relative-pose estimator, for result tables
RELPOSE_LABELS = {
    "superglue": "SuperGlue's protocol: OpenCV RANSAC essential matrix on K-normalised points, then recoverPose",
    "magsac": "OpenCV USAC MAGSAC++ essential matrix, then recoverPose",
    "poselib": "PoseLib 5-point LO-RANSAC with non-linear refinement",
}
#: old names still accepted (run configs written before the SuperGlue protocol became the default)
_RELPOSE_ALIASES = {"opencv": "magsac"}


def _check_method(method: str, allowed: tuple[str, ...]) -> str:
    if method not in allowed:
        raise ConfigError(f"unknown robust estimation method '{method}'; valid: {', '.join(allowed)}")
    return method


def _as_points(p, name: str) -> np.ndarray:
    try:
        p = np.asarray(p.detach().cpu().numpy() if hasattr(p, "detach") else p, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise InputError(f"{name} must be an (N, 2) array of pixel coordinates: {e}") from None
    if p.ndim != 2 or p.shape[1] != 2:
        raise InputError(f"{name} must have shape (N, 2), got {p.shape}")
    return np.ascontiguousarray(p)


def _as_intrinsics(K, name: str) -> np.ndarray:
    K = np.asarray(K.detach().cpu().numpy() if hasattr(K, "detach") else K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)) or abs(np.linalg.det(K)) < 1e-12 or K[0, 0] <= 0 \
            or K[1, 1] <= 0:
        raise InputError(f"{name} must be a finite (3, 3) intrinsics matrix with positive focal lengths, got {K}")
    return K


def _is_degenerate_cloud(p: np.ndarray) -> bool:
    """All points identical or on one line (rank < 2 of the centred cloud)."""
    centred = p - p.mean(0)
    s = np.linalg.svd(centred, compute_uv=False)
    scale = max(1.0, float(np.abs(p).max()))
    return bool(s[0] <= _DEGENERATE_RTOL * scale or s[1] <= _DEGENERATE_RTOL * s[0])


def _prepare(p0, p1, min_matches: int):
    """Validate shapes; return (p0, p1, ok) where ok is False for degenerate input."""
    p0, p1 = _as_points(p0, "p0"), _as_points(p1, "p1")
    if len(p0) != len(p1):
        raise InputError(f"p0 and p1 must have the same number of points, got {len(p0)} and {len(p1)}")
    ok = (
        len(p0) >= min_matches
        and bool(np.all(np.isfinite(p0)) and np.all(np.isfinite(p1)))
        and not _is_degenerate_cloud(p0)
        and not _is_degenerate_cloud(p1)
    )
    return p0, p1, ok


def _model_or_none(M, mask, n: int, min_inliers: int):
    """Accept a solver output only if it is one finite, non-zero 3x3 matrix with enough inliers."""
    if M is None or mask is None:
        return None, np.zeros(n, bool)
    M = np.asarray(M, dtype=np.float64)
    mask = np.asarray(mask).reshape(-1).astype(bool)
    if M.shape != (3, 3) or not np.all(np.isfinite(M)) or np.linalg.norm(M) == 0 or mask.shape != (n,) \
            or mask.sum() < min_inliers:
        return None, np.zeros(n, bool)
    return M, mask


def estimate_homography(p0, p1, method: str = "magsac", threshold: float = 3.0, confidence: float = 0.9999,
                        max_iters: int = 10000):
    """Robustly fit a homography ``p1 ~ H p0``.

    Args:
        p0, p1: (N, 2) matched points in featlab pixels (float64 numpy; torch is converted).
        method: 'magsac' | 'ransac' | 'poselib'.
        threshold: inlier reprojection error in image 1, pixels (MAGSAC: the maximum sigma).
        confidence: RANSAC success probability.
        max_iters: iteration cap.
    Returns:
        (H (3, 3) float64 normalised so that H[2, 2] = 1, inliers (N,) bool), or (None, all-False mask) when the
        input is degenerate or no model is found.
    """
    _check_method(method, ("magsac", "ransac", "poselib"))
    p0, p1, ok = _prepare(p0, p1, MIN_MATCHES["homography"])
    n = len(p0)
    if not ok:
        return None, np.zeros(n, bool)
    try:
        if method == "poselib":
            import poselib

            opts = {"max_reproj_error": float(threshold), "success_prob": confidence, "max_iterations": max_iters}
            H, info = poselib.estimate_homography(p0, p1, opts, {})
            mask = info.get("inliers")
        else:
            H, mask = cv2.findHomography(p0, p1, _OPENCV_METHODS[method], float(threshold), maxIters=max_iters,
                                         confidence=confidence)
    except (cv2.error, RuntimeError, ValueError, np.linalg.LinAlgError):
        return None, np.zeros(n, bool)
    H, mask = _model_or_none(H, mask, n, MIN_MATCHES["homography"])
    if H is None or abs(H[2, 2]) < 1e-12:
        return None, np.zeros(n, bool)
    H = H / H[2, 2]
    if abs(np.linalg.det(H)) < 1e-12 * max(1.0, np.abs(H).max()) ** 3:  # singular: maps the plane to a line
        return None, np.zeros(n, bool)
    return H, mask


def estimate_fundamental(p0, p1, method: str = "magsac", threshold: float = 1.0, confidence: float = 0.9999,
                         max_iters: int = 10000):
    """Robustly fit a fundamental matrix ``x1^T F x0 = 0``.

    Args:
        p0, p1: (N, 2) matched points in featlab pixels.
        method: 'magsac' | 'ransac' | 'poselib'.
        threshold: inlier distance to the epipolar line, pixels.
        confidence: RANSAC success probability.
        max_iters: iteration cap.
    Returns:
        (F (3, 3) float64 with unit Frobenius norm, inliers (N,) bool), or (None, all-False mask).
    """
    _check_method(method, ("magsac", "ransac", "poselib"))
    p0, p1, ok = _prepare(p0, p1, MIN_MATCHES["fundamental"])
    n = len(p0)
    if not ok:
        return None, np.zeros(n, bool)
    try:
        if method == "poselib":
            import poselib

            opts = {"max_epipolar_error": float(threshold), "success_prob": confidence, "max_iterations": max_iters}
            F, info = poselib.estimate_fundamental(p0, p1, opts, {})
            mask = info.get("inliers")
        else:
            F, mask = cv2.findFundamentalMat(p0, p1, _OPENCV_METHODS[method], float(threshold), confidence,
                                             max_iters)
    except (cv2.error, RuntimeError, ValueError, np.linalg.LinAlgError):
        return None, np.zeros(n, bool)
    F, mask = _model_or_none(F, mask, n, MIN_MATCHES["fundamental"])
    if F is None:
        return None, mask
    return F / np.linalg.norm(F), mask


def _pinhole_camera(K: np.ndarray) -> dict:
    """PoseLib camera dict of a zero-skew K (featlab pixels; width/height only bound the principal point)."""
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    return {"model": "PINHOLE", "width": int(np.ceil(2 * cx)), "height": int(np.ceil(2 * cy)),
            "params": [fx, fy, cx, cy]}


def _normalise(p: np.ndarray, K: np.ndarray) -> np.ndarray:
    x = np.concatenate([p, np.ones((len(p), 1))], 1) @ np.linalg.inv(K).T
    return np.ascontiguousarray(x[:, :2] / x[:, 2:])


def relative_pose_settings(method: str = "superglue", threshold: float = 1.0, confidence: float | None = None,
                           max_iters: int | None = None) -> dict:
    """The settings :func:`estimate_relative_pose` runs with, to name in every result.

    Args:
        method: one of :data:`RELPOSE_METHODS` (or the old name "opencv" = "magsac").
        threshold: inlier threshold in pixels (of a camera with the mean focal length of the pair).
        confidence, max_iters: None for the method's default (:data:`RELPOSE_DEFAULTS`).
    Returns:
        ``{"method", "threshold", "confidence", "max_iters"}`` with the canonical method name and the defaults
        filled in.
    Raises:
        ConfigError: unknown method, non-positive threshold, confidence outside (0, 1), max_iters < 1.
    """
    method = _RELPOSE_ALIASES.get(method, method)
    _check_method(method, RELPOSE_METHODS)
    defaults = RELPOSE_DEFAULTS[method]
    confidence = defaults["confidence"] if confidence is None else float(confidence)
    max_iters = defaults["max_iters"] if max_iters is None else int(max_iters)
    if not float(threshold) > 0 or not 0 < confidence < 1 or max_iters < 1:
        raise ConfigError(f"relative pose needs threshold > 0, 0 < confidence < 1 and max_iters >= 1, got "
                          f"{threshold}, {confidence}, {max_iters}")
    return {"method": method, "threshold": float(threshold), "confidence": confidence, "max_iters": max_iters}


def estimate_relative_pose(p0, p1, K0, K1, method: str = "superglue", threshold: float = 1.0,
                           confidence: float | None = None, max_iters: int | None = None):
    """Robustly estimate the relative pose (R, t direction) of two calibrated views.

    Args:
        p0, p1: (N, 2) matched points in featlab pixels.
        K0, K1: (3, 3) intrinsics in featlab pixels.
        method: 'superglue' (default: SuperGlue's protocol, ``cv2.findEssentialMat`` with classic RANSAC on
            ``K^-1 x`` with threshold ``threshold / f_mean``, then ``cv2.recoverPose`` on each E candidate, the
            one with the most points in front of both cameras kept), 'magsac' (USAC MAGSAC++ on
            ``f_mean * K^-1 x`` then ``cv2.recoverPose``; 'opencv' is its old name) or 'poselib'
            (``poselib.estimate_relative_pose``, 5-point LO-RANSAC + non-linear refinement). f_mean is the mean
            of fx and fy of both cameras (SuperGlue's code averages K0's fx and K1's fy, the same for square
            pixels). See the module docstring.
        threshold: inlier epipolar distance in pixels (of a camera with focal length f_mean).
        confidence: RANSAC success probability; None: the method's default (superglue 0.99999, others 0.9999).
        max_iters: iteration cap; None: the method's default (superglue 1000, others 10000).
    Returns:
        (R (3, 3), t (3,) unit vector, inliers (N,) bool) with ``X1 = R X0 + t`` (the pose ``T_0to1`` up to the
        scale of t), or (None, None, all-False mask) for degenerate input or when no pose is found. The mask
        marks the epipolar inliers of the robust fit.
    Raises:
        InputError: malformed points or intrinsics.
        ConfigError: unknown method or bad settings.
    """
    s = relative_pose_settings(method, threshold, confidence, max_iters)
    K0, K1 = _as_intrinsics(K0, "K0"), _as_intrinsics(K1, "K1")
    p0, p1, ok = _prepare(p0, p1, MIN_MATCHES["essential"])
    n = len(p0)
    fail = (None, None, np.zeros(n, bool))
    if not ok:
        return fail
    f_mean = float(np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]]))
    solver = {"superglue": _relative_pose_superglue, "magsac": _relative_pose_magsac,
              "poselib": _relative_pose_poselib}[s["method"]]
    try:
        R, t, mask = solver(p0, p1, K0, K1, s["threshold"], f_mean, s["confidence"], s["max_iters"])
    except (cv2.error, RuntimeError, ValueError, np.linalg.LinAlgError):
        return fail
    if R is None:
        return fail
    R, t = np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(-1)
    mask = np.asarray(mask).reshape(-1).astype(bool)
    if R.shape != (3, 3) or t.shape != (3,) or mask.shape != (n,) or mask.sum() < MIN_MATCHES["essential"]:
        return fail
    t_norm = np.linalg.norm(t)
    if not (np.all(np.isfinite(R)) and np.isfinite(t_norm) and t_norm > 0):
        return fail
    return R, t / t_norm, mask


def recover_best_pose(E, q0: np.ndarray, q1: np.ndarray, mask: np.ndarray):
    """SuperGlue's choice among the essential matrices of one RANSAC run: ``cv2.recoverPose`` on each candidate
    (the RANSAC inliers only), the first with the most points in front of both cameras.

    SuperGlue's code calls ``cv2.recoverPose(E, kpts0, kpts1, np.eye(3), 1e9, mask=mask)``; OpenCV's Python binding
    takes that 1e9 as the R output argument, so what runs is the plain ``recoverPose`` (points triangulated
    farther than 50 baselines do not count), as here. Two deliberate differences: each candidate is judged on
    its own copy of the RANSAC mask (SuperGlue's array is overwritten by each call, so later candidates were
    counted on the previous one's cheirality inliers), and the returned mask is the RANSAC one. OpenCV returns
    several candidates only when no RANSAC loop runs (exactly 5 matches), so neither changes benchmark numbers.

    Args:
        E: (3k, 3) or (k, 3, 3) candidate essential matrices (OpenCV stacks up to 10 five-point solutions).
        q0, q1: (N, 2) points normalised by their own K (``K^-1 x``).
        mask: (N,) bool RANSAC inliers.
    Returns:
        (R (3, 3), t (3,)) or (None, None) when no candidate has a point in front of both cameras.
    """
    best, best_count = (None, None), 0
    for E_k in np.asarray(E, np.float64).reshape(-1, 3, 3):
        if not np.all(np.isfinite(E_k)):
            continue
        # recoverPose overwrites its mask with the cheirality inliers: each candidate gets a fresh copy
        count, R, t, _ = cv2.recoverPose(E_k, q0, q1, np.eye(3), mask=mask.astype(np.uint8)[:, None].copy())
        if count > best_count:
            best, best_count = (R, t.reshape(-1)), count
    return best


def _relative_pose_superglue(p0, p1, K0, K1, threshold, f_mean, confidence, max_iters):
    q0, q1 = _normalise(p0, K0), _normalise(p1, K1)
    E, mask = cv2.findEssentialMat(q0, q1, np.eye(3), method=cv2.RANSAC, prob=confidence,
                                   threshold=threshold / f_mean, maxIters=max_iters)
    if E is None or mask is None or E.ndim != 2 or E.shape[1] != 3 or E.shape[0] % 3:
        return None, None, None
    mask = np.asarray(mask).reshape(-1).astype(bool)
    R, t = recover_best_pose(E, q0, q1, mask)
    return R, t, mask


def _relative_pose_magsac(p0, p1, K0, K1, threshold, f_mean, confidence, max_iters):
    # Normalise each view by its own K, then rescale both by one common focal length so that coordinates and
    # threshold stay in pixel units: USAC MAGSAC++ is markedly less accurate on unit-focal coordinates with a
    # threshold of ~1e-3 (the same two-stage scheme as OpenCV's two-camera findEssentialMat).
    K = np.diag([f_mean, f_mean, 1.0])
    q0, q1 = f_mean * _normalise(p0, K0), f_mean * _normalise(p1, K1)
    E, mask = cv2.findEssentialMat(q0, q1, K, cv2.USAC_MAGSAC, confidence, float(threshold), max_iters)
    E, mask = _model_or_none(E, mask, len(p0), MIN_MATCHES["essential"])  # a stack of solutions is rejected
    if E is None:
        return None, None, mask
    n_good, R, t, _ = cv2.recoverPose(E, q0, q1, K, mask=mask.astype(np.uint8)[:, None].copy())
    if n_good == 0:
        return None, None, mask
    return R, t, mask


def _relative_pose_poselib(p0, p1, K0, K1, threshold, f_mean, confidence, max_iters):
    import poselib

    opts = {"success_prob": confidence, "max_iterations": max_iters}
    if abs(K0[0, 1]) > 1e-9 * K0[0, 0] or abs(K1[0, 1]) > 1e-9 * K1[0, 0]:
        # PINHOLE has no skew: solve on f_mean * K^-1 x with a shared skew-free camera instead
        camera = {"model": "PINHOLE", "width": 0, "height": 0, "params": [f_mean, f_mean, 0.0, 0.0]}
        opts["max_epipolar_error"] = float(threshold)
        pose, info = poselib.estimate_relative_pose(f_mean * _normalise(p0, K0), f_mean * _normalise(p1, K1),
                                                    camera, camera, opts, {})
    else:
        # PoseLib scales the pixel threshold by the cameras' focal lengths itself
        opts["max_epipolar_error"] = float(threshold)
        pose, info = poselib.estimate_relative_pose(p0, p1, _pinhole_camera(K0), _pinhole_camera(K1), opts, {})
    if info.get("num_inliers", 0) < MIN_MATCHES["essential"]:
        return None, None, np.zeros(len(p0), bool)
    return pose.R, pose.t, info.get("inliers")
