"""Image reading with clear errors, and conversion to featlab's image tensors.

Every image enters featlab through :func:`read_image`: it returns an RGB ``uint8`` array (H, W, 3) whatever the
file holds (grayscale, 16-bit, RGBA, palette), or raises :class:`~featlab.errors.InputError` naming the file.

EXIF orientation rule (one rule, everywhere): an image is read **as displayed**, i.e. with its EXIF orientation
tag (0x0112, values 2-8) applied, as OpenCV's ``imread`` (which hloc uses), PIL's ``exif_transpose`` and image
viewers do. Keypoints, ``image_size`` in features files, cameras written by ``featlab reconstruct`` and every
picture featlab draws are therefore in the pixels of the upright image. COLMAP's own reader does the opposite
(pixels as stored, so that rotated shots share one camera): a COLMAP tool that re-reads the files (e.g. the dense
``image_undistorter``) must be given physically rotated copies of images whose tag is not 1
(``mogrify -auto-orient``). :func:`exif_orientation` reads the tag.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
MIN_IMAGE_SIDE = 8


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16:
        return (img.astype(np.float32) / 257.0).round().clip(0, 255).astype(np.uint8)
    if np.issubdtype(img.dtype, np.floating):
        finite = np.nan_to_num(img.astype(np.float32))
        hi = 1.0 if finite.max(initial=0) <= 1.0 else 255.0
        return (finite / hi * 255.0).round().clip(0, 255).astype(np.uint8)
    return img.clip(0, 255).astype(np.uint8)


def as_rgb_uint8(img: np.ndarray, name: str = "image") -> np.ndarray:
    """Any 2-D/3-D array (gray, gray+alpha, RGB, RGBA; uint8/uint16/float) -> (H, W, 3) uint8 RGB."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] in (1, 2):
        img = np.repeat(img[..., :1], 3, axis=2)
    elif img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    elif not (img.ndim == 3 and img.shape[2] == 3):
        raise InputError(f"{name}: unsupported image shape {img.shape}")
    img = _to_uint8(img)
    h, w = img.shape[:2]
    if min(h, w) < MIN_IMAGE_SIDE:
        raise InputError(f"{name}: image is too small ({w}x{h}); featlab needs at least {MIN_IMAGE_SIDE} px a side")
    return np.ascontiguousarray(img)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3).

    Raises:
        InputError: missing file, a folder, an empty/corrupt file, or an unsupported layout.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"image not found: {path}")
    if not path.is_file():
        raise InputError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise InputError(f"empty image file: {path}")
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)  # UNCHANGED keeps 16-bit and alpha, and ignores EXIF: see below
    if img is None:
        img = _read_with_pil(path)
    else:
        if img.ndim == 3 and img.shape[2] == 3:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        elif img.ndim == 3 and img.shape[2] == 4:
            img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
    img = apply_exif_orientation(img, exif_orientation(path))  # the module's one rule: read as displayed
    return as_rgb_uint8(img, name=str(path))


def exif_orientation(path: str | Path) -> int:
    """The EXIF orientation tag of an image file (1-8), 1 when absent, invalid or unreadable."""
    try:
        from PIL import Image

        with Image.open(path) as im:  # reads the header only
            value = int(im.getexif().get(0x0112, 1))
    except Exception:  # noqa: BLE001 - no or broken EXIF: the stored orientation is the displayed one
        return 1
    return value if 1 <= value <= 8 else 1


def apply_exif_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an (H, W[, C]) array as stored into the array as displayed under EXIF ``orientation`` (1-8; the
    transposing values 5-8 give (W, H[, C])). Same result as PIL's ``ImageOps.exif_transpose``."""
    ops = {2: lambda a: a[:, ::-1], 3: lambda a: a[::-1, ::-1], 4: lambda a: a[::-1],
           5: lambda a: a.swapaxes(0, 1), 6: lambda a: np.rot90(a, -1), 7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
           8: lambda a: np.rot90(a, 1)}
    op = ops.get(int(orientation))
    return img if op is None else np.ascontiguousarray(op(img))


def _read_with_pil(path: Path) -> np.ndarray:
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            return np.asarray(im.convert("RGB"))
    except Exception:  # noqa: BLE001 - PIL raises many kinds of errors for corrupt files
        raise InputError(f"cannot decode image (corrupt or unsupported format): {path}") from None


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Sorted image files under ``folder``; InputError if the folder is missing or holds no image.

    Symbolic links to sub-folders are followed; a link to a folder already listed (a loop, or a second way into
    the same folder) is skipped with a warning, so each folder's images are listed once, under its first path in
    sorted order.
    """
    import logging
    import os

    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise InputError(f"not a folder: {folder}")
    if recursive:
        files, seen = [], set()
        for root, dirs, names in os.walk(folder, followlinks=True):
            st = os.stat(root)
            if (st.st_dev, st.st_ino) in seen:
                logging.getLogger(__name__).warning("skipping %s: a link to a folder already listed (%s)", root,
                                                    os.path.realpath(root))
                dirs[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
            dirs.sort()
            files.extend(Path(root) / n for n in names)
    else:
        files = list(folder.iterdir())
    files = sorted(p for p in files if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found in {folder}")
    return files


def image_to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)


def tensor_to_image(t: torch.Tensor) -> np.ndarray:
    """(3, H, W) or (1, 3, H, W) float in [0, 1] -> (H, W, 3) uint8."""
    if t.ndim == 4:
        t = t[0]
    if t.shape[0] == 1:
        t = t.expand(3, -1, -1)
    return (t.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()


def rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W), ITU-R BT.601 weights (as OpenCV)."""
    if image.shape[1] == 1:
        return image
    w = image.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def resize_exact(img: np.ndarray, size) -> np.ndarray:
    """Resize an (H, W[, C]) array to exactly ``size`` = (h, w): the one place that picks the interpolation
    (INTER_AREA when shrinking, which averages and so does not alias; INTER_LINEAR when enlarging)."""
    out_h, out_w = int(size[0]), int(size[1])
    h, w = img.shape[:2]
    if (out_h, out_w) == (h, w):
        return img
    interp = cv2.INTER_AREA if out_h * out_w < h * w else cv2.INTER_LINEAR
    return cv2.resize(img, (out_w, out_h), interpolation=interp)


def resize_image(img: np.ndarray, resize) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize an (H, W, C) array.

    ``resize``: None (keep), an int (longest side), or (H, W). Returns the image and the scale (sx, sy) that maps
    resized coordinates back to the original: p_orig = p_resized * scale.
    """
    h, w = img.shape[:2]
    new_h, new_w = resized_shape((h, w), resize)
    if (new_h, new_w) == (h, w):
        return img, (1.0, 1.0)
    return resize_exact(img, (new_h, new_w)), (w / new_w, h / new_h)


def resized_shape(shape, resize) -> tuple[int, int]:
    """(H, W) after ``resize``: None (keep), an int (longest side, aspect ratio kept, rounded), or (H, W)."""
    h, w = int(shape[0]), int(shape[1])
    if resize is None:
        return h, w
    if isinstance(resize, (int, float)):
        s = float(resize) / max(h, w)
        return max(1, int(round(h * s))), max(1, int(round(w * s)))
    return int(resize[0]), int(resize[1])
