"""Homographies in featlab pixels: warping points and images, resized images, local rotation and scale, and the
HPatches corner error.

Every homography in featlab maps featlab pixel coordinates (centre of the top-left pixel at (0.5, 0.5), see
:mod:`featlab.pixels`) of image 0 to those of image 1: ``p1 ~ H_0to1 @ [x0, y0, 1]``. Homographies read from
OpenCV-convention files are converted once with :func:`featlab.pixels.homography_from_opencv`.

Torch functions run in float32 (float64 if an input is float64) with autocast disabled, whatever the caller's
autocast state: projective division is too sensitive for bfloat16.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import GeometryError
from ..pixels import from_opencv, pixel_grid, warp_image_grid

#: |w| below this is clamped (keeping its sign) before the projective division, so points at infinity stay finite
_EPS_W = 1e-12


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (never a half type: geometry is not done in bf16/fp16)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _safe_divisor(w):
    """Keep the sign of ``w`` but bound its magnitude away from 0 (numpy or torch)."""
    if isinstance(w, np.ndarray):
        sign = np.where(w >= 0, 1.0, -1.0)
        return np.where(np.abs(w) < _EPS_W, sign * _EPS_W, w)
    sign = torch.where(w >= 0, torch.ones_like(w), -torch.ones_like(w))
    return torch.where(w.abs() < _EPS_W, sign * _EPS_W, w)


def to_homogeneous(points):
    """(..., D) -> (..., D+1) by appending ones. numpy or torch."""
    if isinstance(points, np.ndarray):
        return np.concatenate([points, np.ones_like(points[..., :1])], -1)
    return torch.cat([points, torch.ones_like(points[..., :1])], -1)


def from_homogeneous(points):
    """(..., D+1) -> (..., D) by dividing by the last coordinate (sign-preserving clamp near 0). numpy or torch."""
    return points[..., :-1] / _safe_divisor(points[..., -1:])


def warp_points_homography(points, H):
    """Map points through a homography.

    Args:
        points: (..., N, 2) featlab pixels, numpy array or torch tensor.
        H: (..., 3, 3) homography (batch dims broadcast against those of ``points``), same kind as ``points``
            (a numpy H is accepted with torch points).
    Returns:
        (..., N, 2) warped points. numpy: float64. torch: float32, or float64 if an input is float64. Points
        mapped to infinity (w ~ 0) get large finite coordinates.
    """
    if isinstance(points, np.ndarray):
        H = np.asarray(H, dtype=np.float64)
        p = to_homogeneous(points.astype(np.float64)) @ np.swapaxes(H, -1, -2)
        return from_homogeneous(p)
    H = torch.as_tensor(H, device=points.device)
    dtype = _compute_dtype(points, H)
    with torch.autocast(device_type=points.device.type, enabled=False):
        p = to_homogeneous(points.to(dtype)) @ H.to(dtype).transpose(-1, -2)
        return from_homogeneous(p)


def warp_image_homography(image: torch.Tensor, H_0to1, out_size, mode: str = "bilinear") -> torch.Tensor:
    """Warp image 0 into the frame of image 1 (backward warping with ``inv(H_0to1)``).

    Output pixel centres are mapped by ``inv(H_0to1)`` into image 0 and sampled with
    :func:`featlab.pixels.warp_image_grid` (zeros outside image 0). A pure translation by integer (dx, dy) therefore
    moves content by exactly (dx, dy) pixels, and ``H = diag(0.5, 0.5, 1)`` is a 2x2 average pooling.

    Args:
        image: (B, C, H, W) float tensor.
        H_0to1: (B, 3, 3) or (3, 3) homography (numpy or torch) mapping image-0 pixels to image-1 pixels.
        out_size: (out_h, out_w) of image 1.
        mode: 'bilinear' or 'nearest'.
    Returns:
        (B, C, out_h, out_w) tensor, dtype of ``image``.
    """
    if image.ndim != 4:
        raise ValueError(f"image must be (B, C, H, W), got {tuple(image.shape)}")
    b = image.shape[0]
    out_h, out_w = int(out_size[0]), int(out_size[1])
    H = torch.as_tensor(np.asarray(H_0to1) if not isinstance(H_0to1, torch.Tensor) else H_0to1)
    H_inv = torch.linalg.inv(H.to(device=image.device, dtype=torch.float64))
    if H_inv.ndim == 2:
        H_inv = H_inv.expand(b, 3, 3)
    if H_inv.shape != (b, 3, 3):
        raise ValueError(f"H_0to1 must be (3, 3) or ({b}, 3, 3), got {tuple(H.shape)}")
    grid = pixel_grid(out_h, out_w, device=image.device).to(torch.float64)  # (out_h * out_w, 2) pixel centres
    src = warp_points_homography(grid.expand(b, -1, -1), H_inv)
    src = src.reshape(b, out_h, out_w, 2)  # float64: normalised before the cast to the image dtype
    return warp_image_grid(image, src, mode=mode)


def image_corners(image_size) -> np.ndarray:
    """Centres of the four corner pixels of an (H, W) image in featlab pixels, shape (4, 2), float64.

    These are the corners of the HPatches protocol (OpenCV ``[0, 0], [W-1, 0], ...`` plus 0.5).
    """
    h, w = image_size
    return from_opencv(np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], dtype=np.float64))


def homography_corner_error(H_est, H_gt, image_size) -> float:
    """Mean distance between the image corners warped by the estimated and the ground-truth homography.

    The HPatches homography-estimation metric (SuperPoint protocol). The corners are the centres of the four
    corner pixels of image 0 (:func:`image_corners`).

    Args:
        H_est: (3, 3) estimated homography or None (failed estimation).
        H_gt: (3, 3) ground truth.
        image_size: (H, W) of image 0.
    Returns:
        the mean corner distance in pixels; ``inf`` if ``H_est`` is None or not finite.
    """
    if H_est is None:
        return float("inf")
    H_est = np.asarray(H_est, dtype=np.float64)
    if H_est.shape != (3, 3) or not np.all(np.isfinite(H_est)):
        return float("inf")
    corners = image_corners(image_size)
    err = np.linalg.norm(warp_points_homography(corners, H_est) - warp_points_homography(corners, H_gt), axis=-1)
    mean = float(err.mean())
    return mean if np.isfinite(mean) else float("inf")


def symmetric_transfer_error(p0, p1, H):
    """Per-correspondence symmetric transfer error 0.5 (|H p0 - p1| + |H^-1 p1 - p0|) in pixels.

    Args:
        p0, p1: (..., N, 2) featlab pixels (numpy or torch).
        H: (..., 3, 3) homography from image 0 to image 1.
    Returns:
        (..., N) errors.
    """
    if isinstance(p0, np.ndarray):
        H = np.asarray(H, dtype=np.float64)
        H_inv = np.linalg.inv(H)
        e01 = np.linalg.norm(warp_points_homography(p0, H) - p1, axis=-1)
        e10 = np.linalg.norm(warp_points_homography(np.asarray(p1), H_inv) - p0, axis=-1)
        return 0.5 * (e01 + e10)
    H = torch.as_tensor(H, device=p0.device)
    dtype = _compute_dtype(p0, p1, H)
    with torch.autocast(device_type=p0.device.type, enabled=False):
        H = H.to(dtype)
        e01 = (warp_points_homography(p0.to(dtype), H) - p1.to(dtype)).norm(dim=-1)
        e10 = (warp_points_homography(p1.to(dtype), torch.linalg.inv(H)) - p0.to(dtype)).norm(dim=-1)
        return 0.5 * (e01 + e10)


def rescale_homography(H_0to1, scale0, scale1) -> np.ndarray:
    """The homography between resized images: ``S1 @ H_0to1 @ inv(S0)``.

    In featlab pixels an image of width W spans [0, W], so resizing image i by ``(sx_i, sy_i)`` (new coordinates =
    old coordinates * scale, e.g. ``sx = W'/W``) is the pure scaling ``S_i = diag(sx_i, sy_i, 1)``, exactly.

    Args:
        H_0to1: (3, 3) homography between the original images.
        scale0, scale1: (sx, sy) of image 0 and image 1, resized size over original size.
    Returns:
        (3, 3) float64 homography between the resized images.
    """
    S0_inv = np.diag([1.0 / float(scale0[0]), 1.0 / float(scale0[1]), 1.0])
    S1 = np.diag([float(scale1[0]), float(scale1[1]), 1.0])
    return S1 @ np.asarray(H_0to1, dtype=np.float64) @ S0_inv


def local_affine(H, point) -> np.ndarray:
    """The Jacobian of ``x -> H(x)`` at ``point``: the local affine part of a homography, (2, 2) float64.

    With ``(u, v, w) = H @ (x, y, 1)``: ``J = (H[:2, :2] - H(p) H[2, :2]) / w``.

    Raises:
        GeometryError: the point is mapped to infinity (w ~ 0).
    """
    H = np.asarray(H, dtype=np.float64)
    ph = H @ np.array([float(point[0]), float(point[1]), 1.0])
    if abs(ph[2]) < 1e-12 * max(1.0, np.abs(ph[:2]).max()):
        raise GeometryError(f"the homography maps {tuple(point)} to infinity: no local affine there")
    mapped = ph[:2] / ph[2]
    return (H[:2, :2] - np.outer(mapped, H[2, :2])) / ph[2]


def local_rotation_scale(H, point) -> tuple[float, float]:
    """In-plane rotation and scale of a homography at a point, from its local affine ``J`` (:func:`local_affine`).

    Polar decomposition ``J = R P`` (R a rotation, P symmetric positive definite, from the SVD ``J = U S V^T``:
    ``R = U V^T``): the angle of R, and ``sqrt(|det J|)`` (the square root of the local area ratio).

    Args:
        H: (3, 3) homography image 0 -> image 1; point: (x, y) in image 0 (benchmarks use the image-0 centre).
    Returns:
        (angle in degrees in (-180, 180], ``atan2(R[1, 0], R[0, 0])``: positive turns the x axis towards the y
        axis, i.e. clockwise on screen where y points down; scale, > 1 when image 1 is magnified).
    Raises:
        GeometryError: the point is mapped to infinity, or the local affine is singular or a reflection.
    """
    J = local_affine(H, point)
    det = float(np.linalg.det(J))
    if not np.isfinite(det) or det <= 0.0:
        raise GeometryError(f"the homography is singular or mirrors the image at {tuple(point)} (det J = {det:g})")
    U, _, Vt = np.linalg.svd(J)
    R = U @ Vt
    return float(np.degrees(np.arctan2(R[1, 0], R[0, 0]))), float(np.sqrt(det))
