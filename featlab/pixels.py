"""featlab's single pixel convention, and every conversion to and from it.

Convention (the same as COLMAP): a pixel coordinate (x, y) is continuous, x to the right, y down, and the
**centre of the top-left pixel is (0.5, 0.5)**. An image of width W spans x in [0, W]. Intrinsics K, homographies
and keypoints inside featlab all use it.

Other conventions exist at the boundaries and are converted exactly once, here:
- OpenCV (`cv2.KeyPoint.pt`, `cv2.findHomography` on OpenCV points) and hloc's HDF5 files put the centre of the
  top-left pixel at (0, 0): use :func:`from_opencv` / :func:`to_opencv` (and :func:`to_hloc`, :func:`from_hloc`).
  So do integer (or sub-pixel) indices into an image array: pixel (row i, column j) is OpenCV (j, i), centred at
  ``from_opencv((j, i))``. Code outside this module writes no +-0.5 shift (tests/test_review_fixes.py checks).
- Integer array indices (row i, column j) of a dense map at stride s: :func:`from_grid_indices`.
- ``torch.nn.functional.grid_sample`` with ``align_corners=False``: -1 is the left edge of the left pixel, i.e.
  coordinate 0 here, so the normalisation is simply ``2 x / W - 1`` for any map that covers the image extent.
  All sampling of dense maps goes through :func:`sample_map`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

OPENCV_OFFSET = 0.5  # featlab = OpenCV + 0.5


def from_opencv(points):
    """OpenCV/hloc coordinates (centre of top-left pixel at 0,0) -> featlab. Works on numpy and torch."""
    return points + OPENCV_OFFSET


def to_opencv(points):
    """featlab coordinates -> OpenCV/hloc coordinates (centre of top-left pixel at 0,0)."""
    return points - OPENCV_OFFSET


from_hloc = from_opencv
to_hloc = to_opencv


def homography_from_opencv(H):
    """Convert a homography that maps OpenCV-convention pixels into one that maps featlab pixels.

    With T = translate(+0.5): p_featlab = T p_cv, so H_featlab = T H_cv T^-1.
    """
    T = np.array([[1, 0, OPENCV_OFFSET], [0, 1, OPENCV_OFFSET], [0, 0, 1]], dtype=np.float64)
    Ti = np.array([[1, 0, -OPENCV_OFFSET], [0, 1, -OPENCV_OFFSET], [0, 0, 1]], dtype=np.float64)
    return T @ np.asarray(H, dtype=np.float64) @ Ti


def homography_to_opencv(H):
    """Inverse of :func:`homography_from_opencv`."""
    T = np.array([[1, 0, OPENCV_OFFSET], [0, 1, OPENCV_OFFSET], [0, 0, 1]], dtype=np.float64)
    Ti = np.array([[1, 0, -OPENCV_OFFSET], [0, 1, -OPENCV_OFFSET], [0, 0, 1]], dtype=np.float64)
    return Ti @ np.asarray(H, dtype=np.float64) @ T


def from_grid_indices(ij: torch.Tensor, stride: float = 1.0) -> torch.Tensor:
    """Integer (row, col) indices of a map with the given stride -> featlab (x, y) of the cell centres.

    Shape: ij (..., 2) as (row, col) -> (..., 2) as (x, y).
    """
    xy = ij.flip(-1).to(torch.float32)
    return (xy + 0.5) * stride


def pixel_grid(height: int, width: int, stride: float = 1.0, device=None) -> torch.Tensor:
    """Centres of all cells of a (height, width) map with the given stride, featlab (x, y); shape (H*W, 2),
    row-major (index = row * width + col)."""
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) * stride
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(-1, 2)


def normalize_coordinates(points: torch.Tensor, image_size) -> torch.Tensor:
    """featlab pixels -> [-1, 1] for ``grid_sample(align_corners=False)``.

    Args:
        points: (..., 2) as (x, y) in pixels of an image of size ``image_size`` = (H, W) (or a (..., 2) tensor of
            (W, H) per batch element, broadcastable).
    """
    if isinstance(image_size, torch.Tensor):
        wh = image_size.to(points)
    else:
        h, w = image_size
        wh = points.new_tensor([w, h])
    return points * (2.0 / wh) - 1.0


def sample_map(feature_map: torch.Tensor, points: torch.Tensor, image_size, mode: str = "bilinear",
               normalize: bool = False) -> torch.Tensor:
    """Sample a dense map at sub-pixel image locations. The one place where featlab calls ``grid_sample``.

    The map is assumed to cover the whole image extent (a stride-s map of an H x W image has H/s x W/s cells).

    Args:
        feature_map: (B, C, h, w).
        points: (B, N, 2) featlab pixel coordinates in the image of size ``image_size`` = (H, W).
        mode: 'bilinear' or 'nearest'.
        normalize: L2-normalise the sampled vectors.
    Returns:
        (B, N, C) sampled values (zeros padding outside the map's border is replaced by border clamping).
    """
    grid = normalize_coordinates(points, image_size).to(feature_map.dtype)[:, None]  # B,1,N,2
    out = F.grid_sample(feature_map, grid, mode=mode, padding_mode="border", align_corners=False)
    out = out[:, :, 0].transpose(1, 2)  # B,N,C
    if normalize:
        out = F.normalize(out, dim=-1)
    return out


def warp_image_grid(image: torch.Tensor, source_points: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Resample ``image`` at a dense grid of source locations (backward warping).

    Args:
        image: (B, C, H, W).
        source_points: (B, H', W', 2) featlab pixel coordinates in ``image`` for each output pixel.
    Returns:
        (B, C, H', W'), zero outside the source image.
    """
    h, w = image.shape[-2:]
    grid = normalize_coordinates(source_points, (h, w)).to(image.dtype)
    return F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)


def inside_image(points, image_size, border: float = 0.0):
    """Boolean mask of points inside an image of size (H, W), keeping ``border`` pixels away from the edge."""
    h, w = image_size
    x, y = points[..., 0], points[..., 1]
    return (x >= border) & (y >= border) & (x <= w - border) & (y <= h - border)


def scale_points(points, scale_xy):
    """Map points between a resized image and the original: p_orig = p_resized * scale (pure scaling of the
    continuous coordinate, valid in this convention because both images span [0, W] x [0, H])."""
    if isinstance(points, np.ndarray):
        return points * np.asarray(scale_xy, dtype=points.dtype)
    return points * points.new_tensor(scale_xy)
