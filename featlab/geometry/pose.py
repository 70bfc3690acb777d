"""Relative-pose error metrics (numpy): rotation / translation-direction angles and the pose AUC.

Poses follow the data contract: ``T_0to1`` (4, 4) maps camera-0 to camera-1 coordinates, ``X1 = R X0 + t``.
An estimate from two views only has a translation *direction*, and only up to sign when obtained from an
essential matrix, so the translation error is the angle between directions folded into [0, 90] degrees.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import InputError

#: ground-truth translations shorter than this (pure rotation) have no direction: their translation error is 0
GT_TRANSLATION_EPS = 1e-8


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def rotation_angle(R, degrees: bool = True):
    """Rotation angle of rotation matrices.

    Computed as ``atan2(|vee(R - R^T)| / 2, (trace R - 1) / 2)``, accurate for small angles and near 180 degrees
    (unlike ``arccos`` of the trace).

    Args:
        R: (..., 3, 3) rotation matrices (numpy or torch).
        degrees: degrees (default) or radians.
    Returns:
        (...) angles in [0, 180] degrees (float for a single matrix).
    """
    R = _numpy(R)
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    axis = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.linalg.norm(axis, axis=-1) / 2.0
    angle = np.arctan2(sin, cos)
    if degrees:
        angle = np.degrees(angle)
    return float(angle) if np.ndim(angle) == 0 else angle


def angle_between_vectors(a, b, degrees: bool = True):
    """Angle between vectors, ``atan2(|a x b|, a . b)`` (accurate at 0 and 180 degrees).

    Args:
        a, b: (..., 3) vectors (numpy or torch).
    Returns:
        (...) angles in [0, 180] degrees (float for single vectors); NaN where a vector is zero.
    """
    a, b = _numpy(a), _numpy(b)
    zero = (np.linalg.norm(a, axis=-1) == 0) | (np.linalg.norm(b, axis=-1) == 0)
    angle = np.arctan2(np.linalg.norm(np.cross(a, b), axis=-1), (a * b).sum(-1))
    angle = np.where(zero, np.nan, angle)
    if degrees:
        angle = np.degrees(angle)
    return float(angle) if np.ndim(angle) == 0 else angle


def relative_pose_error(T_0to1_gt, R, t, ignore_gt_t_thr: float = GT_TRANSLATION_EPS) -> tuple[float, float]:
    """Angular errors of an estimated relative pose.

    Args:
        T_0to1_gt: (4, 4) ground-truth relative pose (or (3, 4)).
        R: (3, 3) estimated rotation, or None for a failed estimation.
        t: (3,) estimated translation (only its direction matters), or None.
        ignore_gt_t_thr: when ``|t_gt|`` is below this the ground truth is a pure rotation, the translation
            direction is undefined and the translation error is 0 by convention (the estimate is then judged on
            rotation only).
    Returns:
        (err_R, err_t) in degrees. ``err_R`` is the angle of ``R_gt^T R``; ``err_t`` is the angle between the
        translation directions folded as ``min(a, 180 - a)`` (an essential matrix fixes t only up to sign).
        Both are ``inf`` when the estimate is None or not finite; ``err_t`` is ``inf`` when ``|t| == 0``.
    """
    if R is None or t is None:
        return float("inf"), float("inf")
    T_gt = _numpy(T_0to1_gt)
    R, t = _numpy(R), _numpy(t).reshape(-1)
    if R.shape != (3, 3) or t.shape != (3,) or not (np.all(np.isfinite(R)) and np.all(np.isfinite(t))):
        return float("inf"), float("inf")
    R_gt, t_gt = T_gt[:3, :3], T_gt[:3, 3]
    err_R = rotation_angle(R_gt.T @ R)
    if np.linalg.norm(t_gt) < ignore_gt_t_thr:
        err_t = 0.0
    elif np.linalg.norm(t) == 0:
        err_t = float("inf")
    else:
        a = angle_between_vectors(t_gt, t)
        err_t = float(min(a, 180.0 - a))
    return float(err_R), err_t


def pose_auc(errors: Sequence[float], thresholds: Sequence[float] = (5, 10, 20)) -> list[float]:
    """Area under the cumulative error curve up to each threshold, normalised to [0, 1].

    The recall curve goes through (0, 0) and (e_i, i / n) for the sorted errors e_1 <= ... <= e_n, linearly in
    between, and stays flat after the last error below the threshold; its integral over [0, threshold] divided
    by the threshold is the AUC (the protocol of SuperGlue's pose evaluation). ``inf`` / NaN errors (failed
    estimations) count in n but never reach any threshold.

    Args:
        errors: (n,) pose errors in degrees (typically ``max(err_R, err_t)`` per pair).
        thresholds: positive thresholds in degrees.
    Returns:
        one AUC per threshold, as fractions in [0, 1].
    Raises:
        InputError: no errors, a negative error or a non-positive threshold.
    """
    errors = _numpy(errors).reshape(-1)
    if errors.size == 0:
        raise InputError("pose_auc needs at least one error (no pairs were evaluated)")
    if np.any(errors < 0):
        raise InputError("pose_auc errors must be non-negative angles")
    errors = np.sort(np.where(np.isnan(errors), np.inf, errors))
    n = errors.size
    # knots of the recall curve, starting at the origin
    e = np.concatenate([[0.0], errors])
    r = np.arange(n + 1, dtype=np.float64) / n
    aucs = []
    for thr in thresholds:
        thr = float(thr)
        if not thr > 0:
            raise InputError(f"pose_auc thresholds must be positive, got {thr}")
        k = int(np.searchsorted(e, thr, side="left"))  # knots e[:k] lie strictly below thr
        xs = np.concatenate([e[:k], [thr]])
        ys = np.concatenate([r[:k], [r[k - 1]]])
        area = float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))
        aucs.append(area / thr)
    return aucs
