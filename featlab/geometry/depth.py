"""Depth-based geometry: back-projection, projection, rigid transforms, warping keypoints with a depth map.

Conventions (see :mod:`featlab.pixels` and the data contract in :mod:`featlab.extractors.base`): points are
featlab pixels (centre of the top-left pixel at (0.5, 0.5)), K maps camera coordinates to featlab pixels
(``x = K X / Z``, no extra offset), ``T_0to1`` maps camera-0 to camera-1 coordinates, depth maps are (B, H, W)
metric z-depth with 0 for invalid pixels. The depth of a keypoint is read with nearest sampling from the pixel
that contains it, ``depth[floor(y), floor(x)]`` (pixel (i, j) covers [j, j+1) x [i, i+1)).

Functions take torch tensors (``warp_points_depth`` and ``covisibility`` also numpy), with matrices either
batched (B, 3, 3) or shared (3, 3). Computation is float32 (float64 if an input is float64), autocast disabled.
"""
from __future__ import annotations

import numpy as np
import torch

from .homography import _compute_dtype, _safe_divisor, to_homogeneous
from ..pixels import from_opencv, inside_image

#: points with camera z at or below this are behind the camera (invalid)
_MIN_Z = 1e-6


def _tensor(x, device=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x if device is None else x.to(device)
    return torch.as_tensor(np.asarray(x), device=device)


def backproject(points: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Lift pixels with known z-depth to 3D camera coordinates, ``X = depth * K^-1 [x, y, 1]``.

    Args:
        points: (B, N, 2) featlab pixels.
        depth: (B, N) z-depth.
        K: (B, 3, 3) or (3, 3) intrinsics in featlab pixels.
    Returns:
        (B, N, 3) camera coordinates.
    """
    dtype = _compute_dtype(points, depth, K)
    with torch.autocast(device_type=points.device.type, enabled=False):
        rays = to_homogeneous(points.to(dtype)) @ torch.linalg.inv(K.to(dtype)).transpose(-1, -2)
        return rays * depth.to(dtype)[..., None]


def project(X: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Project camera coordinates to pixels.

    Args:
        X: (B, N, 3) camera coordinates.
        K: (B, 3, 3) or (3, 3) intrinsics in featlab pixels.
    Returns:
        points (B, N, 2) featlab pixels (finite even for z ~ 0; check ``z > 0``), z (B, N) depth in the camera.
    """
    dtype = _compute_dtype(X, K)
    with torch.autocast(device_type=X.device.type, enabled=False):
        x = X.to(dtype) @ K.to(dtype).transpose(-1, -2)
        z = X[..., 2].to(dtype)
        return x[..., :2] / _safe_divisor(x[..., 2:]), z


def transform_points(T: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Apply a rigid transform, ``R X + t``.

    Args:
        T: (B, 4, 4) (or (4, 4), or (B, 3, 4)) transforms.
        X: (B, N, 3) points.
    Returns:
        (B, N, 3).
    """
    dtype = _compute_dtype(T, X)
    with torch.autocast(device_type=X.device.type, enabled=False):
        T = T.to(dtype)
        return X.to(dtype) @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def sample_depth_nearest(depth: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Depth of the pixel containing each point, ``depth[floor(y), floor(x)]``; 0 for points outside the map.

    Args:
        depth: (B, H, W) depth map.
        points: (B, N, 2) featlab pixels.
    Returns:
        (B, N) depths (dtype of ``depth``); NaN/inf points give 0.
    """
    b, h, w = depth.shape
    finite = torch.isfinite(points).all(-1)
    p = torch.where(finite[..., None], points, torch.zeros_like(points))
    col = torch.floor(p[..., 0])
    row = torch.floor(p[..., 1])
    inside = finite & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    idx = row.clamp(0, h - 1).long() * w + col.clamp(0, w - 1).long()
    values = depth.reshape(b, h * w).gather(1, idx)
    return torch.where(inside, values, torch.zeros_like(values))


def warp_points_depth(points0, depth0, K0, K1, T_0to1, depth1=None, depth_tolerance: float = 0.1,
                      image_size1=None):
    """Transfer keypoints of image 0 into image 1 using the depth of view 0.

    Each point's depth is read (nearest) from the pixel of ``depth0`` that contains it, back-projected with
    ``K0``, moved by ``T_0to1`` and projected with ``K1``.

    Args:
        points0: (B, N, 2) featlab pixels in image 0.
        depth0: (B, H0, W0) depth of view 0 (0 = invalid).
        K0, K1: (B, 3, 3) or (3, 3) intrinsics.
        T_0to1: (B, 4, 4) or (4, 4) relative pose.
        depth1: optional (B, H1, W1) depth of view 1 for the visibility check.
        depth_tolerance: with ``depth1``, a point is kept if ``|z1 - depth1(p1)| <= depth_tolerance * depth1(p1)``
            (occlusion / inconsistency check).
        image_size1: optional (H1, W1) of image 1 for the inside check when ``depth1`` is not given.
    Returns:
        points1 (B, N, 2) featlab pixels in image 1 (meaningful only where valid), valid (B, N) bool: finite
        depth0 > 0 at the point, in front of camera 1, and, when depth1 or image_size1 is given, inside image 1,
        and, when depth1 is given, depth1 > 0 there and consistent with the transferred depth.
        Numpy inputs give numpy outputs.
    """
    was_numpy = isinstance(points0, np.ndarray)
    points0 = _tensor(points0)
    dev = points0.device
    depth0, K0, K1, T_0to1 = (_tensor(x, dev) for x in (depth0, K0, K1, T_0to1))
    depth1 = None if depth1 is None else _tensor(depth1, dev)
    with torch.autocast(device_type=dev.type, enabled=False):
        d0 = sample_depth_nearest(depth0, points0)
        valid = torch.isfinite(d0) & (d0 > 0)
        d0 = torch.where(valid, d0, torch.zeros_like(d0))
        X1 = transform_points(T_0to1, backproject(points0, d0, K0))
        points1, z1 = project(X1, K1)
        valid = valid & (z1 > _MIN_Z) & torch.isfinite(points1).all(-1)
        if depth1 is not None:
            image_size1 = depth1.shape[-2:]
        if image_size1 is not None:
            valid = valid & inside_image(points1, tuple(int(s) for s in image_size1))
        if depth1 is not None:
            d1 = sample_depth_nearest(depth1, points1).to(z1.dtype)
            valid = valid & (d1 > 0) & ((z1 - d1).abs() <= depth_tolerance * d1)
    if was_numpy:
        return points1.numpy(), valid.numpy()
    return points1, valid


def covisibility(depth0, depth1, K0, K1, T_0to1, stride: int = 8, depth_tolerance: float = 0.1):
    """Fraction of the valid pixels of view 0 that are visible in view 1.

    Pixel centres of view 0 on a grid of step ``stride`` (pixels (i, j) with i, j multiples of ``stride``) with
    depth > 0 are warped by :func:`warp_points_depth` with ``depth1``: a pixel counts as covisible when it lands
    inside image 1 with a consistent depth.

    Args:
        depth0: (H0, W0) or (B, H0, W0) depth of view 0 (numpy or torch, 0 = invalid).
        depth1: (H1, W1) or (B, H1, W1) depth of view 1.
        K0, K1: (3, 3) or (B, 3, 3); T_0to1: (4, 4) or (B, 4, 4).
        stride: grid step in pixels.
        depth_tolerance: relative depth tolerance of the consistency check.
    Returns:
        a float in [0, 1] for one pair (unbatched or B = 1), else a numpy array (B,). 0 when view 0 has no valid
        depth on the grid.
    """
    depth0, depth1 = _tensor(depth0), _tensor(depth1)
    dev = depth0.device
    depth1 = depth1.to(dev)
    single = depth0.ndim == 2 or depth0.shape[0] == 1
    if depth0.ndim == 2:
        depth0 = depth0[None]
    if depth1.ndim == 2:
        depth1 = depth1[None]
    b, h, w = depth0.shape
    stride = max(int(stride), 1)
    ys = from_opencv(torch.arange(0, h, stride, device=dev, dtype=torch.float64))  # pixel centres
    xs = from_opencv(torch.arange(0, w, stride, device=dev, dtype=torch.float64))
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack([gx, gy], -1).reshape(1, -1, 2).expand(b, -1, -1)
    has_depth = sample_depth_nearest(depth0, grid) > 0
    _, valid = warp_points_depth(grid, depth0, K0, K1, T_0to1, depth1=depth1, depth_tolerance=depth_tolerance)
    n_valid = has_depth.sum(-1).to(torch.float64)
    frac = torch.where(n_valid > 0, (valid & has_depth).sum(-1) / n_valid.clamp(min=1), torch.zeros_like(n_valid))
    frac = frac.cpu().numpy()
    return float(frac[0]) if single else frac
