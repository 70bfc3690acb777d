"""Plain pose logs of IMU / VIO / ARKit-style captures as posed image collections.

Two small files next to (or anywhere relative to) the images:

**Pose log** (CSV, one line per image, header required; ``#`` comment lines and blank lines are skipped; extra
columns such as ``timestamp`` are allowed and ignored)::

    image,tx,ty,tz,qw,qx,qy,qz
    frame_0000.jpg,0.0,0.0,0.0,1.0,0.0,0.0,0.0
    frame_0001.jpg,0.10,0.0,0.0,0.9990482,0.0,0.0436194,0.0

- ``image``: file name relative to the image folder (default: the CSV's folder).
- ``tx, ty, tz``: the camera centre in world coordinates (camera-to-world translation, world units: metres for
  VIO/ARKit).
- ``qw, qx, qy, qz``: the camera-to-world orientation as a unit quaternion (Hamilton, scalar first):
  ``x_world = R(q) x_cam + t``. Quaternions whose norm is within ``unit_tolerance`` of 1 are normalised (a warning
  if any is off by more than 1e-6); a zero, non-finite or clearly non-unit quaternion is an InputError.
- Camera axes (``convention``): ``opencv`` (default): x right, y down, z forward (the viewing direction), as OpenCV,
  COLMAP and featlab. ``arkit``: x right, y up, z backward (the camera looks along -z), as ARKit's
  ``ARCamera.transform``, OpenGL and many VIO exports; converted with ``R_opencv = R_arkit @ diag(1, -1, -1)``
  (flip y and z; position unchanged). The world frame can be anything (ARKit: gravity-aligned, y up): only
  relative poses are used.

**Intrinsics** (shared by all images), YAML::

    fx: 500.0
    fy: 500.0
    cx: 320.0
    cy: 240.0
    width: 640
    height: 480
    pixel_convention: featlab   # featlab | opencv

or one line of text ``fx fy cx cy width height pixel_convention``. ``pixel_convention`` must be stated: ``featlab``
(= COLMAP: the centre of the top-left pixel is (0.5, 0.5); a centred principal point is ``width / 2``) or
``opencv`` (centre of the top-left pixel at (0, 0), as OpenCV calibration and ROS camera_info; a centred
principal point is ``(width - 1) / 2``): opencv values get +0.5. ARKit does not document the convention of its
``ARCamera.intrinsics``; the two differ by half a pixel, which matters little for training (state your choice).
Images of another size than ``width x height`` raise when loaded (their K would be wrong); ARKit's intrinsics refer to
the captured (landscape) image.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from ..conf import resolve_conf
from ..errors import ConfigError, InputError
from ..pixels import from_opencv
from .posed import PosedCollection, invert_rigid
from .rgbd import quaternion_to_rotation

logger = logging.getLogger(__name__)

COLUMNS = ("image", "tx", "ty", "tz", "qw", "qx", "qy", "qz")
#: camera axes of ARKit / OpenGL (x right, y up, z backward) -> OpenCV (x right, y down, z forward)
ARKIT_TO_OPENCV = np.diag([1.0, -1.0, -1.0])

default_conf = {
    "convention": "opencv",  # opencv | arkit: camera axes of the logged orientations (see the module docstring)
    "unit_tolerance": 0.01,  # largest |norm(q) - 1| normalised silently-ish (warning); beyond it: InputError
    "missing_images": "error",  # error | skip: what to do with log lines whose image file does not exist
}


def read_intrinsics(path) -> tuple[np.ndarray, tuple[int, int]]:
    """Read a pose-log intrinsics file (YAML keys or one text line, see the module docstring).

    Returns:
        K (3, 3) float64 in featlab pixels, (height, width).
    Raises:
        InputError: missing file, missing/extra/non-numeric values, unknown pixel convention, non-positive focal
            length or size, principal point outside the image.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"intrinsics file not found: {path}")
    text = path.read_text()
    values = None
    try:
        import yaml

        data = yaml.safe_load(text)
    except Exception:  # noqa: BLE001 - not YAML: try the text form
        data = None
    keys = ("fx", "fy", "cx", "cy", "width", "height", "pixel_convention")
    if isinstance(data, dict):
        unknown = sorted(set(map(str, data)) - set(keys))
        missing = [k for k in keys if k not in data]
        if unknown or missing:
            raise InputError(f"intrinsics file {path}: expected keys {', '.join(keys)}"
                             + (f"; missing {', '.join(missing)}" if missing else "")
                             + (f"; unknown {', '.join(unknown)}" if unknown else ""))
        values = [data[k] for k in keys]
    else:
        lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
        lines = [ln for ln in lines if ln]
        if len(lines) != 1 or len(lines[0].split()) != 7:
            raise InputError(f"intrinsics file {path}: expected YAML keys {', '.join(keys)} or one line "
                             f"'fx fy cx cy width height pixel_convention', got {len(lines)} line(s)")
        values = lines[0].split()
    try:
        fx, fy, cx, cy = (float(v) for v in values[:4])
        width, height = (int(float(v)) for v in values[4:6])
    except (TypeError, ValueError):
        raise InputError(f"intrinsics file {path}: fx fy cx cy width height must be numbers, got {values[:6]}") \
            from None
    convention = str(values[6]).strip().lower()
    if convention not in ("featlab", "colmap", "opencv"):
        raise InputError(f"intrinsics file {path}: pixel_convention must be featlab (= colmap) or opencv, got "
                         f"'{values[6]}'")
    if convention == "opencv":
        cx, cy = from_opencv(cx), from_opencv(cy)
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0 and width > 0 and height > 0):
        raise InputError(f"intrinsics file {path}: need finite fx, fy > 0 and width, height > 0")
    if not (0 < cx < width and 0 < cy < height):
        raise InputError(f"intrinsics file {path}: principal point ({cx}, {cy}) lies outside the "
                         f"{width}x{height} image")
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    return K, (height, width)


def _parse_float(value: str, column: str, line: int, path: Path) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path} line {line}: column '{column}' must be a number, got '{value}'") from None
    if not np.isfinite(v):
        raise InputError(f"{path} line {line}: column '{column}' is not finite ({value})")
    return v


def read_pose_log(csv_path, intrinsics_path, image_dir=None, conf=None, name: str | None = None) -> PosedCollection:
    """Read a pose log (CSV) and its intrinsics file as a :class:`~featlab.datasets.posed.PosedCollection`.

    Args:
        csv_path: the pose log (see the module docstring for the format and frame conventions).
        intrinsics_path: the intrinsics file.
        image_dir: folder of the images; None: the CSV's folder.
        conf: overrides of :data:`default_conf`.
        name: collection name (default: the CSV file's stem).
    Returns:
        a collection in log order (the frame gap of a pair is the difference of line indices), poses
        ``T_w2c = inv(T_c2w)`` in OpenCV camera axes, shared K, no depth, no tracks.

    Raises:
        InputError: missing files; a header without the required columns; a malformed line (wrong number of fields,
            non-numeric value, zero or non-unit quaternion; the message names the line number); duplicate image
            names; missing images (``missing_images: error``); an empty log.
        ConfigError: bad config values.
    """
    c = resolve_conf(default_conf, conf, "pose_log")
    if c.convention not in ("opencv", "arkit"):
        raise ConfigError(f"pose_log.convention must be opencv or arkit, got '{c.convention}'")
    if c.missing_images not in ("error", "skip"):
        raise ConfigError(f"pose_log.missing_images must be error or skip, got '{c.missing_images}'")
    tol = float(c.unit_tolerance)
    if not 0 <= tol < 1:
        raise ConfigError(f"pose_log.unit_tolerance must be in [0, 1), got {tol}")
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise InputError(f"pose log not found: {csv_path}")
    K, size = read_intrinsics(intrinsics_path)
    image_dir = csv_path.parent if image_dir is None else Path(image_dir)
    if not image_dir.is_dir():
        raise InputError(f"image folder not found: {image_dir}")

    with open(csv_path, newline="") as f:
        rows = list(enumerate(csv.reader(f), 1))
    rows = [(n, [v.strip() for v in r]) for n, r in rows if r and any(v.strip() for v in r)
            and not r[0].lstrip().startswith("#")]
    if not rows:
        raise InputError(f"pose log {csv_path} is empty (expected a header '{','.join(COLUMNS)}' and one line per "
                         "image)")
    header_line, header = rows[0]
    missing_cols = [k for k in COLUMNS if k not in header]
    if missing_cols:
        raise InputError(f"{csv_path} line {header_line}: header must name the columns {','.join(COLUMNS)} "
                         f"(missing {', '.join(missing_cols)}), got '{','.join(header)}'")
    col = {k: header.index(k) for k in COLUMNS}

    names, poses, missing, warned = [], [], [], []
    seen: dict[str, int] = {}
    for n, r in rows[1:]:
        if len(r) != len(header):
            raise InputError(f"{csv_path} line {n}: expected {len(header)} fields ({','.join(header)}), got "
                             f"{len(r)}: '{','.join(r)}'")
        image = r[col["image"]]
        if not image:
            raise InputError(f"{csv_path} line {n}: empty image name")
        if image in seen:
            raise InputError(f"{csv_path} line {n}: image '{image}' already listed on line {seen[image]}")
        seen[image] = n
        t = np.array([_parse_float(r[col[k]], k, n, csv_path) for k in ("tx", "ty", "tz")])
        q = np.array([_parse_float(r[col[k]], k, n, csv_path) for k in ("qw", "qx", "qy", "qz")])
        norm = float(np.linalg.norm(q))
        if norm == 0.0:
            raise InputError(f"{csv_path} line {n}: zero quaternion (qw, qx, qy, qz all 0) is not a rotation")
        if abs(norm - 1.0) > tol:
            raise InputError(f"{csv_path} line {n}: quaternion norm {norm:.6g} is not 1 (tolerance "
                             f"pose_log.unit_tolerance={tol}); write unit quaternions (qw, qx, qy, qz)")
        if abs(norm - 1.0) > 1e-6:
            warned.append((n, norm))
        if not (image_dir / image).is_file():
            missing.append((n, image))
            if c.missing_images == "skip":
                continue
        R = quaternion_to_rotation([q[1], q[2], q[3], q[0]])  # normalises; takes (qx, qy, qz, qw)
        if c.convention == "arkit":
            R = R @ ARKIT_TO_OPENCV
        T_c2w = np.eye(4)
        T_c2w[:3, :3], T_c2w[:3, 3] = R, t
        names.append(image)
        poses.append(T_c2w)
    if missing and c.missing_images == "error":
        listed = ", ".join(f"'{im}' (line {n})" for n, im in missing[:5])
        raise InputError(f"pose log {csv_path}: {len(missing)} image(s) not found in {image_dir}: {listed}"
                         + (" ..." if len(missing) > 5 else "") + " (pose_log.missing_images=skip drops them)")
    if missing:
        logger.warning("pose log %s: %d image(s) not found in %s were skipped", csv_path, len(missing), image_dir)
    if warned:
        n, norm = max(warned, key=lambda w: abs(w[1] - 1))
        logger.warning("pose log %s: %d quaternion(s) were not unit and were normalised (worst: line %d, norm %.6g)",
                       csv_path, len(warned), n, norm)
    if not names:
        raise InputError(f"pose log {csv_path} lists no image with an existing file")
    return PosedCollection(names, names, K, invert_rigid(np.stack(poses)), image_sizes=[size] * len(names),
                           name=name or csv_path.stem, root=image_dir)
