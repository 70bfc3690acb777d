"""Epipolar geometry: essential and fundamental matrices from poses, and point-to-epipolar-line distances.

Conventions: ``T_0to1`` (..., 4, 4) maps camera-0 coordinates to camera-1 coordinates, ``X1 = R X0 + t``; the
essential matrix is ``E = [t]_x R`` and the fundamental matrix ``F = K1^-T E K0^-1``, so that corresponding
points satisfy ``x1^T F x0 = 0`` with ``x = [x, y, 1]`` in featlab pixels (K in featlab pixels, see
:mod:`featlab.pixels`). ``F @ x0`` is the epipolar line of ``x0`` in image 1, ``F^T @ x1`` that of ``x1`` in image 0.

All functions take torch tensors with any leading batch dims (typically (B, N, 2) points and (B, 3, 3) matrices)
and also accept numpy arrays (returning numpy). Computation is float32 (float64 if an input is float64) with
autocast disabled.
"""
from __future__ import annotations

import numpy as np
import torch

from .homography import _compute_dtype, to_homogeneous


def _to_torch(*arrays):
    """Convert numpy inputs to float64 tensors; returns (tensors, was_numpy)."""
    was_numpy = any(isinstance(a, np.ndarray) for a in arrays)
    if was_numpy:
        return [torch.as_tensor(np.asarray(a, dtype=np.float64)) for a in arrays], True
    return list(arrays), False


def _back(x: torch.Tensor, was_numpy: bool):
    return x.numpy() if was_numpy else x


def skew(v):
    """Cross-product matrix: ``skew(v) @ w == cross(v, w)``.

    Args:
        v: (..., 3) numpy or torch.
    Returns:
        (..., 3, 3).
    """
    (v,), was_numpy = _to_torch(v)
    z = torch.zeros_like(v[..., 0])
    m = torch.stack([z, -v[..., 2], v[..., 1], v[..., 2], z, -v[..., 0], -v[..., 1], v[..., 0], z], -1)
    return _back(m.reshape(*v.shape[:-1], 3, 3), was_numpy)


def essential_from_pose(T_0to1):
    """Essential matrix ``E = [t]_x R`` of a relative pose.

    Args:
        T_0to1: (..., 4, 4) (or (..., 3, 4)) relative pose, numpy or torch.
    Returns:
        (..., 3, 3) essential matrix with ``x1n^T E x0n = 0`` for normalised camera coordinates.
    """
    (T,), was_numpy = _to_torch(T_0to1)
    dtype = _compute_dtype(T)
    with torch.autocast(device_type=T.device.type, enabled=False):
        T = T.to(dtype)
        E = skew(T[..., :3, 3]) @ T[..., :3, :3]
    return _back(E, was_numpy)


def fundamental_from_pose(K0, K1, T_0to1):
    """Fundamental matrix ``F = K1^-T [t]_x R K0^-1`` (x1^T F x0 = 0 in featlab pixels).

    Args:
        K0, K1: (..., 3, 3) intrinsics in featlab pixels.
        T_0to1: (..., 4, 4) relative pose.
    Returns:
        (..., 3, 3) fundamental matrix.
    """
    (K0, K1, T), was_numpy = _to_torch(K0, K1, T_0to1)
    dtype = _compute_dtype(K0, K1, T)
    with torch.autocast(device_type=T.device.type, enabled=False):
        E = essential_from_pose(T.to(dtype))
        F = torch.linalg.inv(K1.to(dtype)).transpose(-1, -2) @ E @ torch.linalg.inv(K0.to(dtype))
    return _back(F, was_numpy)


def fundamental_from_essential(E, K0, K1):
    """``F = K1^-T E K0^-1``. Shapes (..., 3, 3); numpy or torch."""
    (E, K0, K1), was_numpy = _to_torch(E, K0, K1)
    dtype = _compute_dtype(E, K0, K1)
    with torch.autocast(device_type=E.device.type, enabled=False):
        F = torch.linalg.inv(K1.to(dtype)).transpose(-1, -2) @ E.to(dtype) @ torch.linalg.inv(K0.to(dtype))
    return _back(F, was_numpy)


def normalize_points(points, K):
    """Pixel coordinates -> normalised camera coordinates ``K^-1 [x, y, 1]`` (first two entries).

    Args:
        points: (..., N, 2) featlab pixels; K: (..., 3, 3) in featlab pixels. numpy or torch.
    Returns:
        (..., N, 2).
    """
    (points, K), was_numpy = _to_torch(points, K)
    dtype = _compute_dtype(points, K)
    with torch.autocast(device_type=points.device.type, enabled=False):
        Ki = torch.linalg.inv(K.to(dtype))
        p = to_homogeneous(points.to(dtype)) @ Ki.transpose(-1, -2)
        out = p[..., :2] / p[..., 2:]
    return _back(out, was_numpy)


def hartley_normalization(points):
    """Similarity ``T`` that moves the centroid to 0 and makes the mean distance to it sqrt(2).

    Conditioning for linear (DLT / 8-point) solvers.

    Args:
        points: (..., N, 2) numpy or torch.
    Returns:
        (points_normalised (..., N, 2), T (..., 3, 3)) with ``points_normalised ~ T @ [points, 1]``. Identical
        points (zero spread) get scale 1 instead of infinity.
    """
    (points,), was_numpy = _to_torch(points)
    dtype = _compute_dtype(points)
    with torch.autocast(device_type=points.device.type, enabled=False):
        p = points.to(dtype)
        centre = p.mean(-2, keepdim=True)
        mean_dist = (p - centre).norm(dim=-1).mean(-1)
        scale = torch.where(mean_dist > 1e-12, 2**0.5 / mean_dist.clamp(min=1e-12), torch.ones_like(mean_dist))
        T = torch.zeros(*p.shape[:-2], 3, 3, dtype=dtype, device=p.device)
        T[..., 0, 0] = scale
        T[..., 1, 1] = scale
        T[..., :2, 2] = -scale[..., None] * centre[..., 0, :]
        T[..., 2, 2] = 1.0
        out = (p - centre) * scale[..., None, None]
    return _back(out, was_numpy), _back(T, was_numpy)


def _lines_and_residual(p0, p1, F):
    """Epipolar lines l1 = F x0 (in image 1), l0 = F^T x1 (in image 0), and the algebraic residual x1^T F x0."""
    dtype = _compute_dtype(p0, p1, F)
    x0 = to_homogeneous(p0.to(dtype))
    x1 = to_homogeneous(p1.to(dtype))
    F = F.to(dtype)
    l1 = x0 @ F.transpose(-1, -2)  # (..., N, 3): rows are F x0
    l0 = x1 @ F  # rows are F^T x1
    residual = (x1 * l1).sum(-1)
    return l0, l1, residual


def epipolar_distance(p0, p1, F, symmetric: bool = True):
    """Distance of corresponding points to their epipolar lines, in pixels.

    Args:
        p0: (..., N, 2) points in image 0, featlab pixels.
        p1: (..., N, 2) points in image 1.
        F: (..., 3, 3) fundamental matrix with ``x1^T F x0 = 0``.
        symmetric: if True, the mean of the distance of ``p1`` to the line ``F x0`` and of ``p0`` to the line
            ``F^T x1``; if False, only the distance of ``p1`` to ``F x0`` (in image 1).
    Returns:
        (..., N) non-negative distances (numpy if the inputs were numpy).
    """
    (p0, p1, F), was_numpy = _to_torch(p0, p1, F)
    with torch.autocast(device_type=p0.device.type, enabled=False):
        l0, l1, r = _lines_and_residual(p0, p1, F)
        tiny = torch.finfo(r.dtype).tiny
        d1 = r.abs() / l1[..., :2].norm(dim=-1).clamp(min=tiny)
        if symmetric:
            d0 = r.abs() / l0[..., :2].norm(dim=-1).clamp(min=tiny)
            d1 = 0.5 * (d0 + d1)
    return _back(d1, was_numpy)


def sampson_distance(p0, p1, F, squared: bool = False):
    """Sampson distance: first-order approximation of the geometric (reprojection) error of a correspondence.

    ``d^2 = (x1^T F x0)^2 / ((F x0)_1^2 + (F x0)_2^2 + (F^T x1)_1^2 + (F^T x1)_2^2)``.

    Args:
        p0, p1: (..., N, 2) featlab pixels; F: (..., 3, 3) with ``x1^T F x0 = 0``.
        squared: return ``d^2`` (the quantity usually minimised) instead of ``d`` in pixels.
    Returns:
        (..., N).
    """
    (p0, p1, F), was_numpy = _to_torch(p0, p1, F)
    with torch.autocast(device_type=p0.device.type, enabled=False):
        l0, l1, r = _lines_and_residual(p0, p1, F)
        denom = (l1[..., :2] ** 2).sum(-1) + (l0[..., :2] ** 2).sum(-1)
        d2 = r**2 / denom.clamp(min=torch.finfo(r.dtype).tiny)
        out = d2 if squared else (d2 + torch.finfo(r.dtype).tiny).sqrt()
    return _back(out, was_numpy)
