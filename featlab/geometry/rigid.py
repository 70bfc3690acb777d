"""Rigid 3D registration from point matches: Kabsch fits, RANSAC over 3-point samples with refinement, errors.

Conventions: point sets are (N, 3) float arrays in metres; a rigid motion ``(R, t)`` maps points of view 0 to view 1,
``X1 = R X0 + t``, the same direction as the data contract's ``T_0to1`` (camera-0 to camera-1 coordinates). Numpy,
float64 throughout.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import GeometryError
from .pose import rotation_angle

#: a 3-point sample whose triangle is smaller than this (m^2) is degenerate (collinear or coincident points)
MIN_SAMPLE_AREA = 1e-6


def _points(X, name: str) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != 3:
        raise GeometryError(f"{name} must be (N, 3) points, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise GeometryError(f"{name} holds non-finite coordinates")
    return X


def kabsch_batch(X0: np.ndarray, X1: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares rigid motions of batches of matched points (Kabsch / Umeyama without scale).

    Args:
        X0, X1: (S, n, 3) matched points, n >= 3.
        weights: optional (S, n) non-negative weights.
    Returns:
        R (S, 3, 3) proper rotations (det +1, reflections excluded), t (S, 3), minimising
        ``sum_i w_i |R X0_i + t - X1_i|^2``.
    """
    X0 = np.asarray(X0, dtype=np.float64)
    X1 = np.asarray(X1, dtype=np.float64)
    w = np.ones(X0.shape[:2]) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / np.maximum(w.sum(1, keepdims=True), 1e-300)
    c0 = (w[..., None] * X0).sum(1)
    c1 = (w[..., None] * X1).sum(1)
    H = np.einsum("sn,sni,snj->sij", w, X0 - c0[:, None], X1 - c1[:, None])  # cross-covariance
    U, _, Vt = np.linalg.svd(H)
    d = np.sign(np.linalg.det(np.swapaxes(Vt, 1, 2) @ np.swapaxes(U, 1, 2)))
    d = np.where(d == 0, 1.0, d)
    D = np.zeros_like(H)
    D[:, 0, 0] = D[:, 1, 1] = 1.0
    D[:, 2, 2] = d
    R = np.swapaxes(Vt, 1, 2) @ D @ np.swapaxes(U, 1, 2)
    t = c1 - np.einsum("sij,sj->si", R, c0)
    return R, t


def kabsch(X0, X1, weights=None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares rigid motion ``X1 ~ R X0 + t`` of matched points.

    Args:
        X0, X1: (N, 3) matched points, N >= 3, not all collinear.
        weights: optional (N,) non-negative weights.
    Returns:
        R (3, 3) rotation, t (3,).
    Raises:
        GeometryError: fewer than 3 points, shapes that differ, non-finite input.
    """
    X0, X1 = _points(X0, "X0"), _points(X1, "X1")
    if len(X0) != len(X1) or len(X0) < 3:
        raise GeometryError(f"kabsch needs two sets of >= 3 matched points, got {len(X0)} and {len(X1)}")
    R, t = kabsch_batch(X0[None], X1[None], None if weights is None else np.asarray(weights)[None])
    return R[0], t[0]


def residuals(R: np.ndarray, t: np.ndarray, X0: np.ndarray, X1: np.ndarray) -> np.ndarray:
    """Distances ``|R X0 + t - X1|`` (N,) of matched points under one motion, or (S, N) for S motions."""
    if R.ndim == 2:
        return np.linalg.norm(X0 @ R.T + t - X1, axis=-1)
    return np.linalg.norm(np.einsum("sij,nj->sni", R, X0) + t[:, None] - X1[None], axis=-1)


def ransac_iterations(inlier_ratio: float, confidence: float, sample_size: int = 3) -> float:
    """Samples needed to draw one all-inlier sample with the given confidence (inf when the ratio is 0)."""
    p = inlier_ratio ** sample_size
    if p <= 0:
        return math.inf
    if p >= 1:
        return 1.0
    return math.log(1.0 - confidence) / math.log(1.0 - p)


def estimate_rigid_ransac(X0, X1, threshold: float = 0.0375, max_iters: int = 100000, confidence: float = 0.999,
                          refine_iters: int = 10, rng: np.random.Generator | int | None = 0,
                          batch_size: int = 1000):
    """Robust rigid motion from putative 3D matches: RANSAC over minimal 3-point Kabsch fits, then refinement.

    Each iteration draws 3 distinct matches. A sample is skipped without scoring when it is degenerate (triangle
    area below :data:`MIN_SAMPLE_AREA`) or when its pairwise distances disagree between the views by more than
    ``2 * threshold`` (a rigid motion keeps distances, so no all-inlier sample is skipped). The others are scored
    with MSAC (sum of ``min(r^2, threshold^2)``). Sampling stops after ``max_iters`` samples or, earlier, when the
    best consensus so far makes ``confidence`` reached (standard adaptive count). The best model is refined: Kabsch
    on its inliers, inliers recomputed, repeated until they stop changing (at most ``refine_iters`` times); a
    refinement is kept only when it does not lower the MSAC score.

    Args:
        X0, X1: (N, 3) matched points of views 0 and 1 (metres).
        threshold: inlier distance ``|R X0 + t - X1|`` (metres).
        max_iters: cap on samples drawn.
        confidence: stopping confidence of the adaptive count.
        refine_iters: refinement rounds (0: none).
        rng: numpy Generator or seed (results are reproducible for a given seed).
        batch_size: samples fitted and scored together.
    Returns:
        R (3, 3), t (3,), inliers (N,) bool; ``(None, None, all False)`` when N < 3 or no sample has 3 inliers.
    Raises:
        GeometryError: malformed input (shapes, non-finite values, a non-positive threshold).
    """
    X0, X1 = _points(X0, "X0"), _points(X1, "X1")
    n = len(X0)
    if len(X1) != n:
        raise GeometryError(f"X0 and X1 must hold the same number of matches, got {n} and {len(X1)}")
    if not threshold > 0:
        raise GeometryError(f"RANSAC threshold must be positive, got {threshold}")
    fail = (None, None, np.zeros(n, dtype=bool))
    if n < 3:
        return fail
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    th2 = threshold * threshold
    best_score, best = math.inf, None
    best_inliers = 0
    needed, drawn = float(max_iters), 0
    while drawn < min(needed, max_iters):
        s = int(min(batch_size, max_iters - drawn))
        drawn += s
        idx = rng.integers(0, n, size=(s, 3))
        ok = (idx[:, 0] != idx[:, 1]) & (idx[:, 0] != idx[:, 2]) & (idx[:, 1] != idx[:, 2])
        P0, P1 = X0[idx], X1[idx]  # (s, 3, 3): sample, point, xyz
        area = 0.5 * np.linalg.norm(np.cross(P0[:, 1] - P0[:, 0], P0[:, 2] - P0[:, 0]), axis=-1)
        ok &= area > MIN_SAMPLE_AREA
        for a, b in ((0, 1), (0, 2), (1, 2)):
            d0 = np.linalg.norm(P0[:, a] - P0[:, b], axis=-1)
            d1 = np.linalg.norm(P1[:, a] - P1[:, b], axis=-1)
            ok &= np.abs(d0 - d1) <= 2 * threshold
        if not ok.any():
            continue
        R, t = kabsch_batch(P0[ok], P1[ok])
        r2 = np.minimum(residuals(R, t, X0, X1) ** 2, th2)  # (s', N)
        scores = r2.sum(1)
        k = int(np.argmin(scores))
        if scores[k] < best_score:
            best_score, best = float(scores[k]), (R[k], t[k])
            best_inliers = int((r2[k] < th2).sum())
            needed = ransac_iterations(best_inliers / n, confidence)
    if best is None or best_inliers < 3:
        return fail
    R, t = best
    inliers = residuals(R, t, X0, X1) < threshold
    for _ in range(int(refine_iters)):
        R2, t2 = kabsch(X0[inliers], X1[inliers])
        r = residuals(R2, t2, X0, X1)
        score = float(np.minimum(r * r, th2).sum())
        if score > best_score:
            break
        R, t, best_score = R2, t2, score
        new_inliers = r < threshold
        if new_inliers.sum() < 3 or (new_inliers == inliers).all():
            break
        inliers = new_inliers
    inliers = residuals(R, t, X0, X1) < threshold
    return R, t, inliers


def rigid_errors(T_0to1_gt, R, t) -> tuple[float, float]:
    """Errors of an estimated rigid motion against the ground truth.

    Args:
        T_0to1_gt: (4, 4) ground truth (x1 = R x0 + t).
        R: (3, 3) estimate or None (failure); t: (3,) metres or None.
    Returns:
        (rotation error in degrees: angle of ``R_gt^T R``, translation error in metres: ``|t - t_gt|``); both
        ``inf`` for a failure or a non-finite estimate.
    """
    if R is None or t is None:
        return math.inf, math.inf
    R = np.asarray(R, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or t.shape != (3,) or not (np.isfinite(R).all() and np.isfinite(t).all()):
        return math.inf, math.inf
    T = np.asarray(T_0to1_gt, dtype=np.float64)
    return float(rotation_angle(T[:3, :3].T @ R)), float(np.linalg.norm(t - T[:3, 3]))
