"""Depth maps as input: 16-bit PNG reading (never squashed to 8 bits), depth folders and intrinsics.

Every depth map enters featlab through :func:`read_depth`: a single-channel uint16 PNG (7-Scenes / TUM / Kinect
style: millimetres for 7-Scenes, 1/5000 m for TUM) becomes float32 (H, W) metres with 0 for invalid pixels. The raw
value 0 is always invalid; 65535 (7-Scenes' "no reading") is invalid by default. 8-bit images, colour images,
corrupt and missing files raise :class:`~featlab.errors.InputError`: an 8-bit "depth" image has lost the precision
that depth extractors need, so it is refused rather than guessed at.

Intrinsics of depth maps are (3, 3) float64 in featlab pixels (centre of the top-left pixel at (0.5, 0.5), see
:mod:`featlab.pixels`). The default, :func:`default_depth_intrinsics`, suits Kinect-v1-style 640x480 depth (7-Scenes'
published ``camera-intrinsics.txt``): fx = fy = 585 with the principal point at the image centre (W/2, H/2). An
intrinsics file (:func:`read_intrinsics_file`) holds 3x3 numbers in featlab pixels, as 7-Scenes' file and
COLMAP's principal points are read elsewhere in featlab.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

#: metres per unit of a 7-Scenes / Kinect depth PNG (millimetres)
DEFAULT_DEPTH_SCALE = 0.001
#: raw values that mean "no depth" (7-Scenes writes 65535 where the sensor gave nothing)
DEFAULT_INVALID = (0, 65535)
#: focal length (px) of the default depth intrinsics: 7-Scenes' published value, the Kinect v1 depth camera's
DEFAULT_DEPTH_FOCAL = 585.0
DEPTH_EXTENSIONS = (".png",)


def read_depth(path: str | Path, scale: float = DEFAULT_DEPTH_SCALE,
               invalid: tuple[int, ...] = DEFAULT_INVALID) -> np.ndarray:
    """Read a 16-bit depth PNG as metres.

    Args:
        path: single-channel uint16 PNG.
        scale: metres per raw unit (0.001: millimetres, 7-Scenes; 0.0002: TUM RGB-D).
        invalid: raw values that mean "no depth" (always includes 0).
    Returns:
        float32 (H, W) depth in metres, 0 where invalid. Every raw value is kept (uint16 -> float32 is exact).
    Raises:
        InputError: missing / empty / corrupt file, or not a single-channel 16-bit image (e.g. an 8-bit PNG).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"depth image not found: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"empty depth image file: {path}")
    if not scale > 0:
        raise InputError(f"depth scale must be positive, got {scale}")
    raw = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise InputError(f"cannot decode depth image (corrupt or not a PNG): {path}")
    if raw.ndim != 2 or raw.dtype != np.uint16:
        channels = 1 if raw.ndim == 2 else raw.shape[2]
        raise InputError(f"depth image {path} must be a single-channel 16-bit PNG, got {channels} channel(s) of "
                         f"{raw.dtype} (8-bit depth has lost its precision; write depth as uint16)")
    depth = raw.astype(np.float32) * np.float32(scale)
    bad = raw == 0
    for value in invalid:
        bad |= raw == int(value)
    depth[bad] = 0.0
    return depth


def list_depth_images(folder: str | Path) -> list[Path]:
    """Sorted depth PNGs under ``folder`` (recursive). In a 7-Scenes-layout folder (any ``*.depth.png``), only those
    (the colour frames are left out).

    Raises:
        InputError: missing folder, or no PNG in it.
    """
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in DEPTH_EXTENSIONS)
    seven_scenes = [p for p in files if p.name.lower().endswith(".depth.png")]
    files = seven_scenes or files
    if not files:
        raise InputError(f"no depth images (16-bit {', '.join(DEPTH_EXTENSIONS)}) found in {folder}")
    return files


def default_depth_intrinsics(height: int, width: int, focal: float = DEFAULT_DEPTH_FOCAL) -> np.ndarray:
    """(3, 3) float64 K in featlab pixels: fx = fy = ``focal``, principal point at the image centre (W/2, H/2)."""
    return np.array([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def read_intrinsics_file(path: str | Path) -> np.ndarray:
    """A 3x3 intrinsics text file (whitespace-separated, featlab pixels) -> (3, 3) float64.

    Raises:
        InputError: missing or malformed file, a non-positive focal length, or a last row other than (0, 0, 1).
    """
    from .text import read_matrix_file

    K = read_matrix_file(Path(path), (3, 3), "intrinsics")
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])):
        raise InputError(f"intrinsics file {path} must hold a 3x3 K with positive focal lengths and last row 0 0 1")
    return K


def depth_checksum(depth: np.ndarray, K: np.ndarray) -> str:
    """Checksum of what a depth extractor sees: the depth map in metres (shape, dtype, every value) and K.

    Feature caches key depth features on this, not on a colour image or an 8-bit rendering of the depth."""
    depth = np.ascontiguousarray(depth, dtype=np.float32)
    h = hashlib.blake2b(digest_size=10)
    h.update(f"depth{depth.shape}".encode())
    h.update(depth.tobytes())
    h.update(np.ascontiguousarray(K, dtype=np.float64).tobytes())
    return h.hexdigest()


class DepthFolderInput:
    """How ``featlab extract`` reads a folder of depth PNGs for a depth extractor (``inputs = "depth"``).

    Args:
        intrinsics: path of a 3x3 intrinsics file (featlab pixels) or None for :func:`default_depth_intrinsics`
            of each map's size.
        scale: metres per raw unit.
    """

    def __init__(self, intrinsics: str | Path | None = None, scale: float = DEFAULT_DEPTH_SCALE):
        if not scale > 0:
            raise InputError(f"--depth-scale must be positive, got {scale}")
        self.scale = float(scale)
        self.K = None if intrinsics is None else read_intrinsics_file(intrinsics)
        self.intrinsics_file = None if intrinsics is None else str(intrinsics)

    def record(self) -> dict:
        """What decides the features besides the extractor (part of the output's resume record)."""
        K = "default: fx = fy = 585, principal point at the centre" if self.K is None else self.K.tolist()
        return {"inputs": "depth", "depth_scale": self.scale, "intrinsics": K}

    list_files = staticmethod(list_depth_images)

    def read(self, path) -> np.ndarray:
        return read_depth(path, self.scale)

    def intrinsics_for(self, depth: np.ndarray) -> np.ndarray:
        return default_depth_intrinsics(*depth.shape[:2]) if self.K is None else self.K

    def extract(self, extractor, depth: np.ndarray) -> dict[str, np.ndarray]:
        from ..extractors.base import extract_depth

        return extract_depth(extractor, depth, self.intrinsics_for(depth))


def resize_depth_nearest(depth: np.ndarray, size) -> np.ndarray:
    """Nearest-neighbour resize of a depth map to ``size`` = (H', W') that keeps pixel centres aligned: output pixel
    (i, j) takes input pixel ``(floor((i + 0.5) H / H'), floor((j + 0.5) W / W'))``. Averaging would blend depths
    across an edge, or with invalid zeros, into surfaces that do not exist."""
    from ..pixels import from_opencv

    h, w = depth.shape
    out_h, out_w = int(size[0]), int(size[1])
    rows = np.minimum((from_opencv(np.arange(out_h)) * (h / out_h)).astype(np.int64), h - 1)
    cols = np.minimum((from_opencv(np.arange(out_w)) * (w / out_w)).astype(np.int64), w - 1)
    return np.ascontiguousarray(depth[rows[:, None], cols[None, :]])


def resize_depth(depth: np.ndarray, resize) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize a depth map by the size rule of :func:`featlab.io.image.resize_image`, with
    :func:`resize_depth_nearest`.

    Args:
        depth: (H, W) float32 metres.
        resize: None (keep), an int (longest side) or (H, W).
    Returns:
        the resized map and the scale (sx, sy) with p_orig = p_resized * scale (intrinsics of the resized map:
        ``diag(1/sx, 1/sy, 1) @ K``).
    """
    from .image import resized_shape

    h, w = depth.shape[:2]
    new_h, new_w = resized_shape((h, w), resize)
    if (new_h, new_w) == (h, w):
        return depth, (1.0, 1.0)
    return resize_depth_nearest(depth, (new_h, new_w)), (w / new_w, h / new_h)
