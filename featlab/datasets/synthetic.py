"""Synthetic image pairs: a photo and its warp by a random homography (self-supervised training, and the
"synthetic warps" benchmark on held-out photos; never call these pairs HPatches).

Item ``k`` is built from photo ``k // pairs_per_image`` with the generator ``featlab.rng.role_rng(seed, role, k)``
only, so any item can be rebuilt alone, in any order, in any worker process, and gives the same arrays every time;
the ``role`` (train / select / benchmark) keeps the warps of training, model selection and the benchmark apart even
with one seed. :func:`preset_conf` gives the warp section of a named benchmark preset
(:data:`featlab.datasets.homographies.PRESETS`).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..conf import none_or, resolve_conf, to_container
from ..errors import ConfigError
from ..io.image import list_images, read_image, resize_exact
from ..pixels import homography_to_opencv
from ..rng import ROLES, role_rng
from . import homographies

default_conf = {
    "seed": 0,  # base seed; item k draws from featlab.rng.role_rng(seed, role, k)
    "role": "benchmark",  # random stream: train | select | benchmark (same seed, different warps per role)
    "pairs_per_image": 1,  # pairs made from each photo (each with its own homography and augmentation)
    "resize": [240, 320],  # [H, W] of both images: the photo is scaled to cover it, then cropped
    "crop": "random",  # random | center: where the [H, W] window is cut from the scaled photo
    "max_images": none_or(int),  # use only the first N photos (sorted by path); None: all
    "homography": homographies.default_conf,  # see featlab.datasets.homographies.default_conf
    "photometric": homographies.photometric_default_conf,  # applied independently to image0 and image1
}


def resize_and_crop(image: np.ndarray, size, rng: np.random.Generator | None = None) -> np.ndarray:
    """Scale an (H, W, C) image (aspect kept) so that it covers ``size`` = (h, w), then cut an (h, w) window: at
    the centre, or at a position drawn from ``rng`` when given."""
    out_h, out_w = int(size[0]), int(size[1])
    h, w = image.shape[:2]
    s = max(out_h / h, out_w / w)
    new_h, new_w = max(out_h, int(round(h * s))), max(out_w, int(round(w * s)))
    image = resize_exact(image, (new_h, new_w))
    if rng is None:
        y0, x0 = (new_h - out_h) // 2, (new_w - out_w) // 2
    else:
        y0, x0 = int(rng.integers(0, new_h - out_h + 1)), int(rng.integers(0, new_w - out_w + 1))
    return np.ascontiguousarray(image[y0:y0 + out_h, x0:x0 + out_w])


def preset_conf(name: str) -> dict:
    """The ``homography`` and ``photometric`` sections of :data:`default_conf` for a named warp preset
    (:data:`featlab.datasets.homographies.PRESETS`: moderate | hard | zoom-in), photometric changes included.

    Raises:
        ConfigError: unknown preset.
    """
    if name not in homographies.PRESETS:
        raise ConfigError(f"unknown warp preset '{name}'; choose one of {', '.join(homographies.PRESETS)}")
    return {"homography": dict(homographies.PRESETS[name]), "photometric": homographies.photometric_default_conf}


_BORDERS = {"replicate": cv2.BORDER_REPLICATE, "constant": cv2.BORDER_CONSTANT}


def warp_image(image: np.ndarray, H_0to1: np.ndarray, out_size, border: str = "replicate") -> np.ndarray:
    """Warp a uint8 (H, W, C) image by a featlab-pixel homography into an ``out_size`` = (h, w) image (bilinear).

    Pixel centre p1 of the output takes the value of the input at ``inv(H_0to1) p1``; OpenCV's convention is
    converted once here. ``border``: 'replicate' (zoom-in warps: only the half pixel at the frame edge is read
    outside) or 'constant' (black, 0: the empty border of a zoom-out).
    """
    H_cv = homography_to_opencv(H_0to1)
    return cv2.warpPerspective(image, H_cv, (int(out_size[1]), int(out_size[0])), flags=cv2.INTER_LINEAR,
                               borderMode=_BORDERS[border], borderValue=0)


class SyntheticHomographyPairs:
    """Deterministic pairs ``(photo, warp of the photo)`` from a folder of photos.

    Args:
        folder: folder of images (searched recursively, see :func:`featlab.io.image.list_images`).
        conf: overrides of :data:`default_conf`.

    Items (``dataset[k]``, iteration, ``len(dataset)``)::

        name      str, "synthetic:<image path relative to folder>#<k>"
        image0    uint8 (H, W, 3) RGB, the photo resized/cropped to conf.resize, photometrically augmented
        image1    uint8 (H, W, 3) RGB, warp of the (un-augmented) crop by H_0to1, then augmented independently
        H_0to1    float64 (3, 3) featlab pixels, image0 -> image1; in zoom-in mode image1 has no empty border,
                  in overlap mode its empty border (pixels that see no part of image0) is black (0) after the
                  photometric changes too
        synthetic True

    Raises:
        InputError: missing folder or no image in it; an unreadable image (when its item is loaded).
        ConfigError: unknown key or bad value.
    """

    def __init__(self, folder, conf=None):
        self.conf = resolve_conf(default_conf, conf, "synthetic")
        c = self.conf
        if c.crop not in ("random", "center"):
            raise ConfigError(f"synthetic.crop must be 'random' or 'center', got '{c.crop}'")
        if int(c.seed) < 0:
            raise ConfigError(f"synthetic.seed must be >= 0, got {c.seed}")
        if c.role not in ROLES:
            raise ConfigError(f"synthetic.role must be one of {', '.join(ROLES)}, got '{c.role}'")
        if int(c.pairs_per_image) < 1:
            raise ConfigError(f"synthetic.pairs_per_image must be >= 1, got {c.pairs_per_image}")
        try:
            size = (int(c.resize[0]), int(c.resize[1]))
            ok = len(c.resize) == 2 and min(size) >= 8
        except (TypeError, ValueError, IndexError, KeyError):
            ok = False
        if not ok:
            raise ConfigError(f"synthetic.resize must be [H, W] with sides >= 8, got {c.resize}")
        if c.max_images is not None and int(c.max_images) < 1:
            raise ConfigError(f"synthetic.max_images must be >= 1 or null, got {c.max_images}")
        # validate the sub-sections once, not on every item
        self._overlap = homographies._resolve("homography", to_container(c.homography))["mode"] == "overlap"
        homographies._resolve("photometric", to_container(c.photometric))
        self.folder = Path(folder)
        paths = list_images(self.folder)
        if c.max_images is not None:
            paths = paths[: int(c.max_images)]
        self.paths = paths
        self.size = size
        self._homography_conf = to_container(c.homography)
        self._photometric_conf = to_container(c.photometric)

    def __len__(self) -> int:
        return len(self.paths) * int(self.conf.pairs_per_image)

    def __getitem__(self, k: int) -> dict:
        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"pair index {k} out of range for {n} synthetic pairs")
        k = int(k) % n
        path = self.paths[k // int(self.conf.pairs_per_image)]
        rng = role_rng(int(self.conf.seed), self.conf.role, k)
        photo = read_image(path)
        image0 = resize_and_crop(photo, self.size, rng if self.conf.crop == "random" else None)
        H_0to1 = homographies.sample_homography(rng, self.size, self._homography_conf)
        image1 = warp_image(image0, H_0to1, self.size, "constant" if self._overlap else "replicate")
        image0 = homographies.photometric_augment(rng, image0, self._photometric_conf)
        image1 = homographies.photometric_augment(rng, image1, self._photometric_conf)
        if self._overlap:  # the empty border stays black: brightness and noise must not paint it
            seen = warp_image(np.ones(self.size, np.uint8), H_0to1, self.size, "constant")
            image1[seen == 0] = 0
        rel = path.relative_to(self.folder).as_posix()
        return {
            "name": f"synthetic:{rel}#{k}",
            "image0": image0,
            "image1": image1,
            "H_0to1": H_0to1,
            "synthetic": True,
        }

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]
