"""Random homographies and photometric augmentation for synthetic image pairs.

:func:`sample_homography` draws ``H_0to1`` (featlab pixels, see :mod:`featlab.pixels`) such that the warped image
``image1 = warp(image0, H_0to1)`` of the same size has **no empty border**: every pixel of image 1, mapped back with
``inv(H_0to1)``, lands inside image 0. Equivalently, the four corners of the image-1 frame, mapped by
``inv(H_0to1)``, lie inside the image-0 frame ``[0, W] x [0, H]`` (and the mapped frame is a convex quadrilateral,
so checking the corners is enough).

Construction, in the coordinates of image 0 centred on the image centre ``c = (W/2, H/2)``: the image-1 frame
corners ``u_k`` are (1) perturbed by a keystone (perspective) displacement, (2) rotated, (3) shrunk by the zoom
``z`` about the centre and (4) translated::

    q_k = c + t + R(theta) (u_k + d_k) / z        (the source quadrilateral of image 1 in image 0)
    H_0to1 maps q_k -> c + u_k                    (four-point homography)

The zoom is ``z = z_fit * s``: ``z_fit`` is the smallest zoom for which the rotated, keystoned frame fits inside
image 0 when centred (1 with no rotation and no perspective), and ``s >= 1`` is the sampled extra zoom
(``scale``). This keeps every sample valid without rejection (no pair is silently dropped and the rotation range is
honoured exactly); the price is that large rotations come with large zooms, which is unavoidable when the warped
image must be filled and both images have the same size. The translation is drawn inside the room left over.
With the defaults on a 4:3 image the zoom (square root of the area ratio) has median ~1.6 and 5-95 % range
~1.26-1.97; without rotation and perspective it is exactly the ``scale`` range.

:func:`photometric_augment` applies brightness, contrast, saturation, hue and Gaussian-noise changes to a uint8 RGB
image. Both functions draw all their randomness from the ``numpy.random.Generator`` passed in, so they are
deterministic given its seed.
"""
from __future__ import annotations

import functools
import json
import math

import cv2
import numpy as np

from ..conf import resolve_conf, to_container
from ..errors import ConfigError, GeometryError, InputError

default_conf = {
    "rotation": 30.0,  # max |in-plane rotation| in degrees, uniform in [-rotation, rotation]
    "scale": [1.0, 1.3],  # extra zoom of image 1 on top of the tightest fit, log-uniform in [min, max], min >= 1
    "perspective": 0.1,  # max keystone shift of a corner, as a fraction of the image side (< 0.25), per axis
    "translation": 1.0,  # fraction (0..1) of the free room (after zoom) in which the centre shift is drawn
}

photometric_default_conf = {
    "enabled": True,  # False: return the image unchanged (no randomness drawn)
    "brightness": {"prob": 0.5, "max": 0.15},  # additive shift, uniform in [-max, max] x 255 grey levels
    "contrast": {"prob": 0.5, "range": [0.7, 1.3]},  # factor about the mean grey level, uniform in range
    "saturation": {"prob": 0.5, "range": [0.6, 1.4]},  # factor on the distance to the grey image, uniform
    "hue": {"prob": 0.3, "max": 0.04},  # hue rotation, uniform in [-max, max] of the full hue circle
    "noise": {"prob": 0.5, "std": [0.0, 6.0]},  # Gaussian noise, std in grey levels uniform in range
}

# corners of the output frame, centred, in the order top-left, top-right, bottom-right, bottom-left
_CORNER_SIGNS = np.array([[-1.0, -1.0], [1.0, -1.0], [1.0, 1.0], [-1.0, 1.0]])


def homography_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Exact homography from four point correspondences (direct linear solve, ``H[2, 2] = 1``).

    Args:
        src: (4, 2) points, no three collinear.
        dst: (4, 2) points.
    Returns:
        (3, 3) float64 ``H`` with ``dst ~ H src``.
    Raises:
        GeometryError: degenerate configuration (collinear points).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    A = np.zeros((8, 8))
    b = np.zeros(8)
    for k, ((x, y), (u, v)) in enumerate(zip(src, dst)):
        A[2 * k] = [x, y, 1, 0, 0, 0, -u * x, -u * y]
        A[2 * k + 1] = [0, 0, 0, x, y, 1, -v * x, -v * y]
        b[2 * k], b[2 * k + 1] = u, v
    if np.linalg.cond(A) > 1e12:
        raise GeometryError("cannot fit a homography: degenerate (collinear) point configuration")
    h = np.linalg.solve(A, b)
    return np.append(h, 1.0).reshape(3, 3)


def _apply(H: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp (N, 2) points by H; returns the points and the homogeneous denominators."""
    ph = np.concatenate([points, np.ones((len(points), 1))], 1) @ H.T
    return ph[:, :2] / ph[:, 2:], ph[:, 2]


def _check_conf(conf) -> None:
    lo, hi = (float(v) for v in conf["scale"])
    if not 1.0 <= lo <= hi:
        raise ConfigError(
            f"homography scale range {list(conf['scale'])} must satisfy 1 <= min <= max: it is the extra zoom on "
            "top of the tightest zoom that keeps the warped image filled (a zoom-out would leave an empty border)"
        )
    if not 0.0 <= float(conf["rotation"]) < 90.0:
        raise ConfigError(f"homography rotation must be in [0, 90) degrees, got {conf['rotation']}")
    if not 0.0 <= float(conf["perspective"]) < 0.25:
        raise ConfigError(f"homography perspective must be in [0, 0.25), got {conf['perspective']}")
    if not 0.0 <= float(conf["translation"]) <= 1.0:
        raise ConfigError(f"homography translation must be in [0, 1], got {conf['translation']}")


@functools.lru_cache(maxsize=64)
def _resolve_cached(which: str, conf_json: str) -> dict:
    defaults = default_conf if which == "homography" else photometric_default_conf
    conf = to_container(resolve_conf(defaults, json.loads(conf_json), which))
    if which == "homography":
        _check_conf(conf)
    return conf


def _resolve(which: str, conf) -> dict:
    """Resolved config as a plain dict, memoised: these functions run once per training sample, and merging with
    OmegaConf costs milliseconds."""
    user = to_container(conf) if conf is not None else {}
    try:
        key = json.dumps(user, sort_keys=True)
    except TypeError:
        raise ConfigError(f"{which} config must hold plain values, got {user!r}") from None
    return _resolve_cached(which, key)


def frame_corners(image_size) -> np.ndarray:
    """The four corners of an (H, W) image frame in featlab pixels, (4, 2): TL, TR, BR, BL."""
    h, w = image_size
    return np.array([[0.0, 0.0], [w, 0.0], [w, h], [0.0, h]])


def corners_inside(H_0to1: np.ndarray, image_size, tolerance: float = 1e-6) -> bool:
    """True if the corners of the image-1 frame, mapped by ``inv(H_0to1)``, lie inside the image-0 frame (both of
    size ``image_size`` = (H, W)) with positive homogeneous depth, i.e. ``warp(image0, H_0to1)`` has no empty
    border. ``tolerance`` is in pixels."""
    h, w = image_size
    q, den = _apply(np.linalg.inv(H_0to1), frame_corners(image_size))
    inside = (q >= -tolerance).all(1) & (q[:, 0] <= w + tolerance) & (q[:, 1] <= h + tolerance)
    return bool(np.all(inside) and (np.all(den > 0) or np.all(den < 0)))


def sample_homography(rng: np.random.Generator, image_size, conf=None) -> np.ndarray:
    """Draw a random homography whose warped image is fully covered by the source image.

    Guarantee (the precise direction): with ``H = sample_homography(...)`` and both images of size ``image_size``,
    the four corners of the image-1 frame mapped by ``inv(H)`` lie inside the image-0 frame ``[0, W] x [0, H]``,
    so ``image1 = warp(image0, H)`` has no empty border. Image 1 is therefore a zoom into image 0 (see the module
    docstring for the construction and the meaning of each config key).

    Args:
        rng: numpy random generator; the only source of randomness (6 uniform draws per call).
        image_size: (H, W) of both images.
        conf: overrides of :data:`default_conf`.
    Returns:
        H_0to1: (3, 3) float64 in featlab pixels mapping image-0 points to image-1 points, ``H[2, 2] = 1``.
    Raises:
        ConfigError: unknown key or a range that cannot keep the warped image filled.
    """
    conf = _resolve("homography", conf)
    h, w = (float(v) for v in image_size)
    if h <= 0 or w <= 0:
        raise InputError(f"image size must be positive, got {tuple(image_size)}")
    half = np.array([w / 2.0, h / 2.0])
    u = _CORNER_SIGNS * half  # centred output-frame corners

    # always draw the same number of values so that the stream consumed does not depend on the config
    a_x, a_y, theta_u, s_u, t_x, t_y = rng.uniform(-1.0, 1.0, size=6)

    # (1) keystone: the top/bottom edges (a_x) and left/right edges (a_y) get shorter/longer
    p = float(conf["perspective"])
    d = np.zeros((4, 2))
    d[:, 0] = -_CORNER_SIGNS[:, 0] * _CORNER_SIGNS[:, 1] * a_x * p * w  # top edge wider, bottom narrower for a_x > 0
    d[:, 1] = -_CORNER_SIGNS[:, 1] * _CORNER_SIGNS[:, 0] * a_y * p * h  # left edge longer for a_y > 0
    # (2) rotation
    theta = math.radians(float(conf["rotation"])) * theta_u
    R = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    v = (u + d) @ R.T
    # (3) zoom: tightest fit times the sampled extra zoom (log-uniform)
    z_fit = max(np.max(np.abs(v[:, 0])) / half[0], np.max(np.abs(v[:, 1])) / half[1])
    lo, hi = (float(x) for x in conf["scale"])
    s = math.exp(math.log(lo) + (s_u + 1.0) / 2.0 * (math.log(hi) - math.log(lo)))
    z = z_fit * s * (1.0 + 1e-9)  # tiny margin against rounding
    q = v / z
    # (4) translation inside the free room [lo, hi] per axis
    room_lo = -half - q.min(0)
    room_hi = half - q.max(0)
    tu = (np.array([t_x, t_y]) + 1.0) / 2.0  # in [0, 1]
    mid = (room_lo + room_hi) / 2.0  # 0 unless the quad is asymmetric
    t = mid + float(conf["translation"]) * (room_lo + tu * (room_hi - room_lo) - mid)
    q = q + t + half  # source quadrilateral in image-0 pixels

    H_1to0 = homography_from_points(u + half, q)
    H_0to1 = np.linalg.inv(H_1to0)
    H_0to1 /= H_0to1[2, 2]
    return H_0to1


def _gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) float -> (H, W, 1) grey (BT.601)."""
    return (img @ np.array([0.299, 0.587, 0.114], dtype=img.dtype))[..., None]


def photometric_augment(rng: np.random.Generator, image: np.ndarray, conf=None) -> np.ndarray:
    """Random brightness, contrast, saturation, hue and Gaussian-noise changes (applied in that order).

    Each change is applied with its probability ``prob``; its strength is drawn from its range. Saturation and hue
    are skipped for grey (H, W) images.

    Args:
        rng: numpy random generator, the only source of randomness.
        image: uint8 (H, W, 3) RGB or (H, W) grey.
        conf: overrides of :data:`photometric_default_conf`.
    Returns:
        uint8 image of the same shape.
    Raises:
        InputError: not a uint8 (H, W) or (H, W, 3) array.
    """
    conf = _resolve("photometric", conf)
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise InputError(f"photometric_augment needs a uint8 (H, W) or (H, W, 3) image, got {image.dtype} "
                         f"{image.shape}")
    if not conf["enabled"]:
        return image.copy()
    color = image.ndim == 3
    img = image.astype(np.float32)
    if not color:
        img = img[..., None]

    if rng.uniform() < conf["brightness"]["prob"]:
        img = img + rng.uniform(-1.0, 1.0) * float(conf["brightness"]["max"]) * 255.0
    if rng.uniform() < conf["contrast"]["prob"]:
        mean = float(_gray(img).mean()) if color else float(img.mean())
        img = mean + rng.uniform(*conf["contrast"]["range"]) * (img - mean)
    if color and rng.uniform() < conf["saturation"]["prob"]:
        g = _gray(img)
        img = g + rng.uniform(*conf["saturation"]["range"]) * (img - g)
    if color and rng.uniform() < conf["hue"]["prob"]:
        shift = rng.uniform(-1.0, 1.0) * float(conf["hue"]["max"]) * 360.0
        hsv = cv2.cvtColor(np.clip(img, 0, 255) / 255.0, cv2.COLOR_RGB2HSV)  # float32: H in [0, 360)
        hsv[..., 0] = np.mod(hsv[..., 0] + shift, 360.0)
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB) * 255.0
    if rng.uniform() < conf["noise"]["prob"]:
        std = rng.uniform(*conf["noise"]["std"])
        img = img + rng.normal(0.0, 1.0, size=img.shape).astype(np.float32) * std

    out = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return out if color else out[..., 0]
