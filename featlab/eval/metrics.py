"""Benchmark metrics: pure numpy functions of keypoints, matches and ground-truth geometry.

Every function scores **one image pair**; benchmarks average the per-pair values over pairs (the D2-Net
convention: a per-pair fraction first, then the mean over pairs, so that every pair weighs the same whatever its
number of matches). All coordinates are featlab pixels (:mod:`featlab.pixels`); image sizes are ``(H, W)``.

Definitions (thresholds are inclusive: "within t px" means ``error <= t``):

- **reprojection error** of a match (i, j): ``|| H(x0_i) - x1_j ||`` in image 1 (the D2-Net / HPatches-MMA
  convention: one direction, image 0 warped into image 1).
- **MMA@t** (mean matching accuracy): fraction of a pair's matches whose reprojection error is <= t. A pair with
  no match scores 0 (D2-Net would produce NaN; we count it as a failure).
- **homography accuracy Cor-t**: 1 if the mean distance between the 4 corners of image 0 warped by the estimated
  and by the ground-truth homography is <= t, else 0; a failed estimation (``None``) scores 0.
- **matching score** (SuperPoint, DeTone et al. 2018): correct matches over the keypoints in the shared view
  region, computed in both directions and averaged: ``0.5 * (c0 / n0 + c1 / n1)`` where ``n0`` counts the
  keypoints of image 0 whose warp lands inside image 1, ``c0`` the correct matches (error <= t) whose image-0
  keypoint is such a keypoint, and symmetrically for image 1 with ``H^-1``. SuperPoint matched with plain
  (non-mutual) nearest neighbours; featlab's benchmarks pass mutual nearest-neighbour matches. A direction with
  no shared keypoint contributes 0.
- **repeatability** (SuperPoint): keypoints of image 0 warped into image 1 and keypoints of image 1, each kept
  only if inside the other view (shared region); a kept keypoint is repeated if a kept keypoint of the other
  image lies within t px. ``(repeated0 + repeated1) / (n0 + n1)``; 0 when the shared region holds no keypoint.
- **GT rotation and scale** of a homography pair: the in-plane angle and scale of the ground-truth homography's
  local affine at the image-0 centre (polar decomposition; :func:`gt_rotation_scale`). Pairs are grouped by
  ``|angle|`` in :data:`ROTATION_BINS` and by scale in :data:`SCALE_BINS` (bins are ``[lo, hi)``).
- **relative pose error**: ``max(rotation angle error, translation direction error)`` in degrees, ``inf`` for a
  failed estimation; **pose AUC@t** is the area under the cumulative error curve up to t, normalised by t
  (:func:`featlab.geometry.pose.pose_auc`, failures never reach the curve).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..pixels import inside_image

#: MMA thresholds of the D2-Net HPatches protocol, in pixels
MMA_THRESHOLDS = tuple(range(1, 11))
#: homography-accuracy (corner error) thresholds of SuperPoint's protocol, in pixels
HOMOGRAPHY_THRESHOLDS = (1, 3, 5)
#: pose-AUC thresholds in degrees
POSE_THRESHOLDS = (5, 10, 20)
#: (label, lo, hi): bins of |in-plane rotation| in degrees, [lo, hi)
ROTATION_BINS = (("0-10", 0.0, 10.0), ("10-20", 10.0, 20.0), ("20-30", 20.0, 30.0), ("30-45", 30.0, 45.0),
                 ("45-60", 45.0, 60.0), ("60+", 60.0, float("inf")))
#: (label, lo, hi): bins of the scale (> 1: image 1 magnified), [lo, hi)
SCALE_BINS = (("<0.6", 0.0, 0.6), ("0.6-0.7", 0.6, 0.7), ("0.7-0.85", 0.7, 0.85), ("0.85-1.0", 0.85, 1.0),
              ("1.0-1.2", 1.0, 1.2), ("1.2-1.4", 1.2, 1.4), ("1.4-1.7", 1.4, 1.7), ("1.7+", 1.7, float("inf")))


def _warp(points: np.ndarray, H: np.ndarray) -> np.ndarray:
    from ..geometry.homography import warp_points_homography

    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(points) == 0:
        return points
    return np.asarray(warp_points_homography(points, np.asarray(H, dtype=np.float64)), dtype=np.float64)


def match_indices(matches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalise a match list to two index arrays.

    Args:
        matches: either ``matches0`` (N0,) int with -1 for unmatched, or (M, 2) int index pairs (i0, i1).
    Returns:
        idx0 (M,), idx1 (M,) int64.
    """
    m = np.asarray(matches)
    if m.ndim == 1:
        idx0 = np.nonzero(m >= 0)[0]
        return idx0.astype(np.int64), m[idx0].astype(np.int64)
    if m.ndim == 2 and m.shape[1] == 2:
        return m[:, 0].astype(np.int64), m[:, 1].astype(np.int64)
    raise ValueError(f"matches must be (N0,) matches0 or (M, 2) index pairs, got shape {m.shape}")


def reprojection_errors(kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Distance in image 1 between each matched keypoint of image 0 warped by ``H`` and its match.

    Args:
        kpts0: (N0, 2), kpts1: (N1, 2) featlab pixels; matches: see :func:`match_indices`; H: (3, 3) image 0 -> 1.
    Returns:
        (M,) float64 errors in pixels (non-finite warps give ``inf``).
    """
    idx0, idx1 = match_indices(matches)
    if len(idx0) == 0:
        return np.zeros(0)
    p0 = _warp(np.asarray(kpts0, dtype=np.float64)[idx0], H)
    err = np.linalg.norm(p0 - np.asarray(kpts1, dtype=np.float64)[idx1], axis=1)
    return np.where(np.isfinite(err), err, np.inf)


def mma(kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray, H: np.ndarray,
        thresholds: Sequence[float] = MMA_THRESHOLDS) -> np.ndarray:
    """Mean matching accuracy of one pair: fraction of matches with reprojection error <= t, for each t.

    Args:
        kpts0: (N0, 2), kpts1: (N1, 2); matches: (N0,) matches0 or (M, 2) pairs; H: (3, 3) image 0 -> image 1.
        thresholds: (T,) pixel thresholds.
    Returns:
        (T,) float64 in [0, 1]; all zeros when there is no match.

    Example: 4 matches with errors 0.5, 0.9, 2.0, 7.0 give ``mma(...)[t=1] = 0.5``.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    err = reprojection_errors(kpts0, kpts1, matches, H)
    if len(err) == 0:
        return np.zeros(len(thresholds))
    return (err[None, :] <= thresholds[:, None]).mean(1)


def homography_accuracy(H_est: np.ndarray | None, H_gt: np.ndarray, image_size: tuple[int, int],
                        thresholds: Sequence[float] = HOMOGRAPHY_THRESHOLDS) -> np.ndarray:
    """Homography correctness of one pair at each threshold (SuperPoint's "homography estimation").

    Args:
        H_est: (3, 3) estimated image 0 -> 1 homography, or None when estimation failed.
        H_gt: (3, 3) ground truth. image_size: (H, W) of image 0 (its 4 corners are warped).
    Returns:
        (T,) float64 of 0/1: mean corner error <= t. A failed estimate is 0 everywhere.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    err = corner_error(H_est, H_gt, image_size)
    return (err <= thresholds).astype(np.float64)


def corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, image_size: tuple[int, int]) -> float:
    """Mean distance (px) between the image corners warped by ``H_est`` and by ``H_gt``; inf if failed."""
    from ..geometry.homography import homography_corner_error

    if H_est is None:
        return float("inf")
    H_est = np.asarray(H_est, dtype=np.float64)
    if not np.isfinite(H_est).all():
        return float("inf")
    err = float(homography_corner_error(H_est, np.asarray(H_gt, dtype=np.float64), tuple(image_size)))
    return err if np.isfinite(err) else float("inf")


def shared_region_masks(kpts0: np.ndarray, kpts1: np.ndarray, H: np.ndarray, image_size0: tuple[int, int],
                        image_size1: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Which keypoints see the other image.

    Returns:
        warped0 (N0, 2) kpts0 in image 1, inside0 (N0,) bool (warp lands inside image 1), warped1 (N1, 2) kpts1
        in image 0 (via inv(H)), inside1 (N1,) bool.
    """
    H = np.asarray(H, dtype=np.float64)
    warped0 = _warp(kpts0, H)
    warped1 = _warp(kpts1, np.linalg.inv(H))
    inside0 = np.isfinite(warped0).all(1) & inside_image(warped0, image_size1) if len(warped0) else np.zeros(0, bool)
    inside1 = np.isfinite(warped1).all(1) & inside_image(warped1, image_size0) if len(warped1) else np.zeros(0, bool)
    return warped0, np.asarray(inside0, bool), warped1, np.asarray(inside1, bool)


def matching_score(kpts0: np.ndarray, kpts1: np.ndarray, matches: np.ndarray, H: np.ndarray,
                   image_size0: tuple[int, int], image_size1: tuple[int, int], threshold: float = 3.0) -> float:
    """SuperPoint's matching score of one pair (see the module docstring for the exact definition).

    Args:
        kpts0: (N0, 2), kpts1: (N1, 2); matches: (N0,) matches0 or (M, 2) pairs; H: (3, 3) image 0 -> 1;
        image_size0/1: (H, W); threshold: correctness threshold in pixels.
    Returns:
        float in [0, 1].
    """
    idx0, idx1 = match_indices(matches)
    _, inside0, _, inside1 = shared_region_masks(kpts0, kpts1, H, image_size0, image_size1)
    correct = reprojection_errors(kpts0, kpts1, np.stack([idx0, idx1], 1), H) <= threshold
    score0 = (correct & inside0[idx0]).sum() / inside0.sum() if inside0.sum() else 0.0
    score1 = (correct & inside1[idx1]).sum() / inside1.sum() if inside1.sum() else 0.0
    return float(0.5 * (score0 + score1))


def repeatability(kpts0: np.ndarray, kpts1: np.ndarray, H: np.ndarray, image_size0: tuple[int, int],
                  image_size1: tuple[int, int], threshold: float = 3.0) -> float:
    """Symmetric repeatability of one pair (SuperPoint), distances measured in image 1.

    Args:
        kpts0: (N0, 2), kpts1: (N1, 2); H: (3, 3) image 0 -> 1; image_size0/1: (H, W); threshold: pixels.
    Returns:
        float in [0, 1]: ``(repeated0 + repeated1) / (n0 + n1)`` over keypoints in the shared region.
    """
    warped0, inside0, _, inside1 = shared_region_masks(kpts0, kpts1, H, image_size0, image_size1)
    a = warped0[inside0]
    b = np.asarray(kpts1, dtype=np.float64).reshape(-1, 2)[inside1]
    n0, n1 = len(a), len(b)
    if n0 + n1 == 0:
        return 0.0
    if n0 == 0 or n1 == 0:
        return 0.0
    dist = np.linalg.norm(a[:, None] - b[None], axis=-1)
    rep0 = (dist.min(1) <= threshold).sum()
    rep1 = (dist.min(0) <= threshold).sum()
    return float((rep0 + rep1) / (n0 + n1))


def gt_rotation_scale(H: np.ndarray, image_size0: tuple[int, int]) -> tuple[float | None, float | None]:
    """In-plane rotation (degrees) and scale of a ground-truth homography at the centre of image 0.

    Args:
        H: (3, 3) image 0 -> image 1; image_size0: (H, W) of image 0.
    Returns:
        (angle in (-180, 180], scale), see :func:`featlab.geometry.homography.local_rotation_scale`; (None, None)
        when the homography has no orientation-preserving local affine there (such a pair is in no bin).
    """
    from ..errors import GeometryError
    from ..geometry.homography import local_rotation_scale

    h, w = image_size0
    try:
        return local_rotation_scale(H, (w / 2.0, h / 2.0))
    except GeometryError:
        return None, None


def bin_of(value: float | None, bins) -> str | None:
    """The label of the ``[lo, hi)`` bin of ``bins`` (:data:`ROTATION_BINS`, :data:`SCALE_BINS`) holding
    ``value``; None for None or a value outside every bin."""
    if value is None:
        return None
    for label, lo, hi in bins:
        if lo <= value < hi:
            return label
    return None


def pose_error(T_0to1: np.ndarray, R: np.ndarray | None, t: np.ndarray | None) -> float:
    """Relative pose error in degrees: ``max(rotation error, translation direction error)``; inf if failed.

    Args:
        T_0to1: (4, 4) ground truth; R: (3, 3) and t: (3,) estimate (t up to scale), or None.
    """
    from ..geometry.pose import relative_pose_error

    if R is None or t is None:
        return float("inf")
    err_R, err_t = relative_pose_error(np.asarray(T_0to1, dtype=np.float64), np.asarray(R, dtype=np.float64),
                                       np.asarray(t, dtype=np.float64).reshape(3))
    err = max(float(err_R), float(err_t))
    return err if np.isfinite(err) else float("inf")


def pose_auc(errors: Sequence[float], thresholds: Sequence[float] = POSE_THRESHOLDS) -> list[float]:
    """Area under the cumulative pose-error curve up to each threshold, normalised to [0, 1]; inf = failure.

    A thin alias of :func:`featlab.geometry.pose.pose_auc` so that all benchmark metrics live in one module.
    """
    from ..geometry.pose import pose_auc as _pose_auc

    errors = np.asarray(list(errors), dtype=np.float64)
    if len(errors) == 0:
        return [0.0 for _ in thresholds]
    return [float(a) for a in _pose_auc(errors, tuple(thresholds))]


def mean_or_zero(values) -> float:
    """Mean of a possibly empty sequence (0.0 when empty), as a plain float."""
    values = np.asarray(list(values), dtype=np.float64)
    return float(values.mean()) if len(values) else 0.0
