"""COLMAP sparse models as posed image collections (read with pycolmap).

Any photo collection reconstructed by COLMAP (``colmap mapper`` / ``pycolmap.incremental_mapping``, hloc, ...)
becomes training data: the registered images with their intrinsics, poses and the 3D points each one observes
(covisibility from shared tracks, see :class:`featlab.datasets.posed.PairSampler`).

Layout: a model folder with ``cameras``, ``images`` and ``points3D`` (``.bin`` or ``.txt``; COLMAP >= 3.12 also
writes ``rigs`` and ``frames``, older models without them read too), and an image folder holding the files named in
the model (names may contain sub-folders). Without ``image_dir`` the standard COLMAP project layouts are tried:
``<model>/../images`` and ``<model>/../../images`` (``project/sparse/0`` next to ``project/images``).

Conventions:

- **Pixels**: COLMAP puts the centre of the top-left pixel at (0.5, 0.5) (its documentation: "the upper left image
  corner has coordinate (0, 0) and the center of the upper left most pixel has coordinate (0.5, 0.5)"), which is
  featlab's convention: the principal point is used as is. Checked with pycolmap 4.2: a camera created for a 64x48
  image gets the principal point (32, 24), and COLMAP's SIFT puts a blob centred on pixel (row 40, col 50) at
  (50.5, 40.5).
- **Poses**: ``image.cam_from_world()`` is world-to-camera (``x_cam = R x_world + t``), stored as ``T_w2c``.
- **Camera models** accepted (K from the focal length(s) and principal point): SIMPLE_PINHOLE, PINHOLE,
  SIMPLE_RADIAL, RADIAL, OPENCV. The distortion terms of the last three are **ignored** (featlab geometry is
  pinhole): ``distortion: warn`` (default) logs the largest coefficient once, ``error`` refuses non-zero distortion,
  ``ignore`` is silent. For strongly distorted images run ``colmap image_undistorter`` first (it writes a PINHOLE
  model and undistorted images). Fisheye and other models raise an InputError.
- **Order**: images sorted by name (frame order for video frames named by number), registered images only.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..conf import resolve_conf
from ..errors import ConfigError, InputError
from .posed import PosedCollection

logger = logging.getLogger(__name__)

#: camera models read as pinhole; distortion parameters (if any) are ignored
SUPPORTED_MODELS = ("SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "RADIAL", "OPENCV")

default_conf = {
    "distortion": "warn",  # warn | error | ignore: what to do with non-zero distortion of a supported model
    "check_images": True,  # check that every registered image file exists (when an image folder is known)
}


def camera_matrix(camera) -> np.ndarray:
    """K (3, 3) float64 in featlab pixels of a pycolmap camera of a supported model (principal point as is).

    Raises:
        InputError: an unsupported camera model.
    """
    model = camera.model.name
    if model not in SUPPORTED_MODELS:
        raise InputError(f"COLMAP camera {camera.camera_id} has model {model}; featlab reads "
                         f"{', '.join(SUPPORTED_MODELS)} (run `colmap image_undistorter` to get a PINHOLE model)")
    return np.array([[camera.focal_length_x, 0.0, camera.principal_point_x],
                     [0.0, camera.focal_length_y, camera.principal_point_y],
                     [0.0, 0.0, 1.0]], dtype=np.float64)


def distortion_coefficients(camera) -> np.ndarray:
    """The distortion parameters of a pycolmap camera (empty for pinhole models)."""
    params = np.asarray(camera.params, np.float64)
    return params[list(camera.extra_params_idxs())]


def _cam_from_world(image) -> np.ndarray:
    pose = image.cam_from_world
    pose = pose() if callable(pose) else pose  # a method since pycolmap 3.12 (rigs), an attribute before
    T = np.eye(4)
    T[:3, :4] = np.asarray(pose.matrix(), np.float64)
    return T


def load_reconstruction(model_dir):
    """``pycolmap.Reconstruction`` of a model folder, with InputError for a missing or unreadable model."""
    import pycolmap

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"COLMAP model folder not found: {model_dir}")
    if not any((model_dir / f"images{ext}").is_file() for ext in (".bin", ".txt")):
        raise InputError(f"{model_dir} is not a COLMAP sparse model (no images.bin or images.txt)")
    try:
        return pycolmap.Reconstruction(str(model_dir))
    except (ValueError, RuntimeError) as e:  # pycolmap raises ValueError for missing/corrupt files
        raise InputError(f"cannot read COLMAP model {model_dir}: {e}") from None


def _default_image_dir(model_dir: Path) -> Path | None:
    for candidate in (model_dir.parent / "images", model_dir.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    return None


def read_colmap(model_dir, image_dir=None, conf=None, name: str | None = None) -> PosedCollection:
    """Read a COLMAP sparse model as a :class:`~featlab.datasets.posed.PosedCollection`.

    Args:
        model_dir: folder with cameras/images/points3D (.bin or .txt).
        image_dir: folder of the images (names in the model are relative to it); None: the standard project
            layouts (see the module docstring), or no images (poses, intrinsics and tracks only).
        conf: overrides of :data:`default_conf`.
        name: collection name (default: the project folder's name for ``project/sparse/0`` and
            ``project/sparse``, else the model folder's).
    Returns:
        a collection of the registered images, sorted by name: ``K`` per image, ``T_w2c`` from
        ``cam_from_world``, ``point_ids`` (the 3D points each image observes), ``image_sizes`` from the cameras.

    Raises:
        InputError: missing/unreadable model, no registered image, unsupported camera model, non-zero distortion
            with ``distortion: error``, missing image files (``check_images``).
        ConfigError: bad config values.
    """
    c = resolve_conf(default_conf, conf, "colmap")
    if c.distortion not in ("warn", "error", "ignore"):
        raise ConfigError(f"colmap.distortion must be warn, error or ignore, got '{c.distortion}'")
    model_dir = Path(model_dir)
    rec = load_reconstruction(model_dir)
    images = [im for im in rec.images.values() if im.has_pose]
    if not images:
        raise InputError(f"COLMAP model {model_dir} has no registered image")
    unregistered = rec.num_images() - len(images)
    if unregistered:
        logger.info("COLMAP model %s: %d unregistered images skipped", model_dir, unregistered)
    images.sort(key=lambda im: im.name)

    # cameras: K and distortion, checked once per camera
    Ks, distorted = {}, []
    for cam_id in {im.camera_id for im in images}:
        cam = rec.cameras[cam_id]
        Ks[cam_id] = camera_matrix(cam)
        coeffs = distortion_coefficients(cam)
        if len(coeffs) and np.abs(coeffs).max() > 0:
            distorted.append((cam_id, cam.model.name, float(np.abs(coeffs).max())))
    if distorted and c.distortion != "ignore":
        worst = max(distorted, key=lambda d: d[2])
        msg = (f"COLMAP model {model_dir}: {len(distorted)} camera(s) have lens distortion (largest coefficient "
               f"{worst[2]:.3g}, camera {worst[0]} {worst[1]}), which featlab ignores (pinhole geometry)")
        if c.distortion == "error":
            raise InputError(msg + "; undistort with `colmap image_undistorter` or set colmap.distortion=warn")
        logger.warning(msg + "; undistort with `colmap image_undistorter` for exact epipolar geometry")

    # 3D points observed by each image, from the tracks
    id_to_index = {im.image_id: k for k, im in enumerate(images)}
    observed: list[list[int]] = [[] for _ in images]
    for point_id, point in rec.points3D.items():
        for el in point.track.elements:
            k = id_to_index.get(el.image_id)
            if k is not None:
                observed[k].append(int(point_id))

    names = [im.name for im in images]
    if image_dir is None:
        image_dir = _default_image_dir(model_dir)
    else:
        image_dir = Path(image_dir)
        if not image_dir.is_dir():
            raise InputError(f"image folder not found: {image_dir}")
    if image_dir is not None and c.check_images:
        missing = [nm for nm in names if not (image_dir / nm).is_file()]
        if missing:
            raise InputError(f"{len(missing)} of {len(names)} images of COLMAP model {model_dir} are missing in "
                             f"{image_dir}, e.g. {', '.join(missing[:3])}")
    if name is None:  # the project folder's name for <project>/sparse/0 and <project>/sparse
        folder = model_dir.resolve()
        name = (folder.parent.parent.name if folder.parent.name == "sparse"
                else folder.parent.name if folder.name == "sparse" else folder.name)
    cams = [rec.cameras[im.camera_id] for im in images]
    return PosedCollection(
        names=names,
        images=None if image_dir is None else names,
        K=np.stack([Ks[im.camera_id] for im in images]),
        T_w2c=np.stack([_cam_from_world(im) for im in images]),
        point_ids=observed,
        image_sizes=[(cam.height, cam.width) for cam in cams],
        name=name,
        root=image_dir,
    )
