"""Cameras for reconstruction: which images share one, its model and its initial focal length.

Rule (``featlab reconstruct --camera-mode``): ``per-folder`` (default) gives the images of one folder one shared
camera, ``single`` one camera for all, ``per-image`` one each. Images that share a camera must also have the same
size as read (EXIF orientation applied, :mod:`featlab.io.image`) and the same EXIF camera and focal length; a group
that differs in one of these is split, so a portrait shot never shares intrinsics with a landscape one.

Initial focal length (pixels of the image as read), first that applies: EXIF ``FocalLengthIn35mmFilm`` f35 gives
``f35 / 36 * max(W, H)`` (36 mm is the long side of the 35 mm frame); else EXIF ``FocalLength`` with
``FocalPlaneXResolution`` (pixels per unit of the sensor) gives ``f_mm * res / unit_mm`` scaled from the sensor
width to the image width; else ``1.2 * max(W, H)`` (COLMAP's default, about a 45 degree field of view). EXIF focal
lengths are marked as priors (``has_prior_focal_length``), which COLMAP trusts when initialising. The principal
point starts at the image centre (W/2, H/2) in featlab pixels, which are COLMAP's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath

from ..errors import ConfigError

#: camera models offered by ``--camera-model`` (COLMAP names); SIMPLE_RADIAL is COLMAP's default
CAMERA_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")
CAMERA_MODES = ("per-folder", "single", "per-image")
#: COLMAP's default focal length factor (ImageReaderOptions.default_focal_length_factor)
DEFAULT_FOCAL_FACTOR = 1.2
_FOCAL_PLANE_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}  # EXIF FocalPlaneResolutionUnit: inch, cm, mm, um


@dataclass(frozen=True)
class CameraInfo:
    """What is known about the camera of one image (as read: EXIF orientation applied)."""

    width: int
    height: int
    focal: float  # initial focal length (pixels)
    focal_source: str  # 'exif-35mm' | 'exif-focal-plane' | 'default'
    make_model: str  # EXIF Make + Model, '' when absent
    orientation: int  # EXIF orientation tag (1 when absent)

    @property
    def has_prior(self) -> bool:
        return self.focal_source != "default"


def _exif(path) -> dict:
    """EXIF tags of an image as {name: value} (base IFD and the Exif sub-IFD), {} without EXIF."""
    try:
        from PIL import ExifTags, Image

        with Image.open(path) as im:
            exif = im.getexif()
            tags = dict(exif)
            tags.update(exif.get_ifd(ExifTags.IFD.Exif))
        return {ExifTags.TAGS.get(k, k): v for k, v in tags.items()}
    except Exception:  # noqa: BLE001 - unreadable or absent EXIF: no prior
        return {}


def focal_from_exif(tags: dict, width: int, height: int, stored_width: int) -> tuple[float, str]:
    """Initial focal length in pixels of an image (W, H as read) and where it came from (see the module doc).

    Args:
        tags: EXIF tags by name (:func:`_exif`).
        width, height: the image as read (EXIF orientation applied).
        stored_width: the width of the image as stored (the sensor's x axis, which FocalPlaneXResolution uses).
    """
    try:
        f35 = float(tags.get("FocalLengthIn35mmFilm") or 0)
    except (TypeError, ValueError):
        f35 = 0.0
    if f35 > 0:
        return f35 / 36.0 * max(width, height), "exif-35mm"
    try:
        f_mm = float(tags.get("FocalLength") or 0)
        res = float(tags.get("FocalPlaneXResolution") or 0)
        unit = _FOCAL_PLANE_UNIT_MM.get(int(tags.get("FocalPlaneResolutionUnit") or 2))
        sensor_px = float(tags.get("ExifImageWidth") or 0)
    except (TypeError, ValueError):
        f_mm, res, unit, sensor_px = 0.0, 0.0, None, 0.0
    if f_mm > 0 and res > 0 and unit:
        f_px = f_mm * res / unit  # in pixels of the sensor's full-resolution frame
        if sensor_px > 0:  # the file may be downscaled from the sensor's frame
            f_px *= stored_width / sensor_px
        return f_px, "exif-focal-plane"
    return DEFAULT_FOCAL_FACTOR * max(width, height), "default"


def camera_info(path, width: int, height: int) -> CameraInfo:
    """:class:`CameraInfo` of an image file whose pixels as read are (H, W) = (``height``, ``width``)."""
    from ..io.image import exif_orientation

    orientation = exif_orientation(path)
    stored_width = height if orientation >= 5 else width  # tags 5-8 swap the axes
    tags = _exif(path)
    focal, source = focal_from_exif(tags, width, height, stored_width)
    make_model = " ".join(str(tags.get(k, "")).strip("\x00 ") for k in ("Make", "Model")).strip()
    return CameraInfo(int(width), int(height), float(focal), source, make_model, orientation)


def group_cameras(names: list[str], infos: list[CameraInfo], mode: str) -> list[int]:
    """Index of the shared camera of each image (0..C-1, in order of first use).

    Args:
        names: image names relative to the images folder (``/``-separated).
        infos: their :class:`CameraInfo`.
        mode: one of :data:`CAMERA_MODES`.
    """
    if mode not in CAMERA_MODES:
        raise ConfigError(f"camera mode must be one of {', '.join(CAMERA_MODES)}, got '{mode}'")
    keys: dict = {}
    out = []
    for k, (name, info) in enumerate(zip(names, infos)):
        where = {"single": "", "per-folder": str(PurePosixPath(name).parent), "per-image": str(k)}[mode]
        key = (where, info.width, info.height, info.make_model, round(info.focal, 3))
        out.append(keys.setdefault(key, len(keys)))
    return out


def make_camera(model: str, info: CameraInfo):
    """A pycolmap camera of ``model`` for an image described by ``info`` (no distortion, centred principal point)."""
    from . import import_pycolmap

    if model not in CAMERA_MODELS:
        raise ConfigError(f"--camera-model must be one of {', '.join(CAMERA_MODELS)}, got '{model}'")
    pycolmap = import_pycolmap()
    cam = pycolmap.Camera.create_from_model_name(0, model, info.focal, info.width, info.height)
    cam.has_prior_focal_length = info.has_prior
    return cam


__all__ = ["CAMERA_MODELS", "CAMERA_MODES", "CameraInfo", "camera_info", "focal_from_exif", "group_cameras",
           "make_camera", "image_size_as_read"]


def image_size_as_read(path) -> tuple[int, int]:
    """(W, H) of an image file as featlab reads it (EXIF orientation applied), from the header only."""
    from PIL import Image

    from ..errors import InputError
    from ..io.image import exif_orientation

    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - fall back to decoding (formats PIL cannot open, e.g. some PGM/TIFF)
        from ..io.image import read_image

        h, w = read_image(path).shape[:2]
        return int(w), int(h)
    if not (w > 0 and h > 0):
        raise InputError(f"{path}: image has no pixels")
    return (int(h), int(w)) if exif_orientation(path) >= 5 else (int(w), int(h))
