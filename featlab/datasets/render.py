"""Synthetic posed scenes: a textured room with boxes rendered from random camera poses, exact K, poses and depth.

Everything made here is **synthetic** and labelled so: collection names start with ``synthetic:``, every pair item
carries ``synthetic: True``, and a folder written with :func:`write_7scenes` holds ``synthetic.json``.

Scene (world frame: z up, metres): a closed room (floor, four walls, ceiling) of ``room_size`` with ``num_boxes``
boxes standing on the floor near its centre, random sizes and yaw. Every planar face carries its own texture: a
random crop of a photo (from ``photos``, or scikit-image's bundled photos when none is given), flipped at random,
sampled at ``texture_density`` texels per metre so that near and far faces have similar detail. No lighting: a
surface point has the same colour in every view.

Cameras: pinhole, ``fx = fy = W / (2 tan(hfov / 2))``, principal point at the image centre ``(W/2, H/2)`` in
featlab pixels. Each camera stands at ``camera_radius`` from the room centre and ``camera_height`` above the floor,
looks at a point near the centre (``target_jitter``) with a small roll. ``trajectory: smooth`` moves the camera
around the centre by ``step`` degrees a frame with slowly varying radius, height, target and roll (a sequence:
frame gaps matter); ``random`` draws every pose independently.

Renderer (numpy, exact): for every pixel centre, the ray ``K^-1 [x, y, 1]`` (camera z = 1, so the ray parameter at a
hit *is* the z-depth) is intersected with every face's plane; the nearest hit inside a face wins (z-buffer) and its
texture is sampled bilinearly. Measured on one CPU core of the 2-core development machine (shared, +-30%): a
240x320 frame takes ~50 ms with 4 boxes (26 faces) and ~75 ms with 8 boxes (46 faces); 480x640 ~200 ms.
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..conf import none_or, parse_overrides, resolve_conf, to_container
from ..errors import ConfigError, InputError
from ..io.atomic import atomic_write_bytes, atomic_write_text
from ..io.image import as_rgb_uint8, list_images, read_image, resize_exact
from ..pixels import from_opencv, to_opencv
from .posed import PosedCollection, invert_rigid

logger = logging.getLogger(__name__)

default_conf = {
    "seed": 0,  # every random choice (scene, textures, poses) comes from numpy.random.default_rng(seed)
    "num_frames": 30,  # number of rendered views
    "image_size": [240, 320],  # [H, W] of the frames
    "hfov": 65.0,  # horizontal field of view (degrees): fx = fy = W / (2 tan(hfov / 2)), principal point at the centre
    "room_size": [6.0, 6.0, 3.0],  # [x, y, height] of the room (m)
    "num_boxes": 4,  # boxes standing on the floor
    "box_size": [0.3, 0.9],  # [min, max] side length of a box (m)
    "box_region": 0.8,  # box centres lie within this distance (m) of the room centre
    "trajectory": "smooth",  # smooth (a sequence, consecutive frames close) | random (independent poses)
    "step": 3.0,  # smooth: degrees travelled around the room centre per frame
    "camera_radius": [1.7, 2.4],  # [min, max] horizontal distance (m) of the camera from the room centre
    "camera_height": [0.9, 2.0],  # [min, max] camera height (m) above the floor
    "target_jitter": 0.5,  # the camera looks at a point within this horizontal distance (m) of the room centre
    "max_roll": 8.0,  # largest roll about the viewing direction (degrees)
    "texture_density": 128.0,  # texels per metre of every face's texture
    "max_texture_size": 1024,  # cap of a texture side (px)
    "photos": none_or(str, Path),  # folder of photos for the textures; None: scikit-image's bundled photos
    "name": "room",  # the collection is named "synthetic:<name>-<seed>"
}

#: scikit-image photos bundled with the package (no download), used when no photo folder is given
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "brick", "grass", "gravel",
                  "camera", "coins", "cat", "text")  # well-textured ones (not hubble_deep_field, moon, colorwheel)

_NEAR = 1e-3  # hits closer than this (m) are ignored


@dataclass
class Scene:
    """Planar rectangular faces: face f spans ``origins[f] + a us[f] + b vs[f]`` for a, b in [0, 1]; its texture
    (uint8 (h, w, 3)) covers it with texture x along ``us`` and texture y along ``vs``."""

    origins: np.ndarray  # (F, 3)
    us: np.ndarray  # (F, 3)
    vs: np.ndarray  # (F, 3)
    textures: list = field(default_factory=list)
    _float_textures: list | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.origins)

    def float_textures(self) -> list:
        """The textures as float32 arrays (converted once: the renderer samples them for every frame)."""
        if self._float_textures is None:
            self._float_textures = [np.ascontiguousarray(t, np.float32) for t in self.textures]
        return self._float_textures


# ------------------------------------------------------------------------------------------------ textures
def load_photos(folder=None) -> list[np.ndarray]:
    """RGB uint8 photos for textures: every image of ``folder``, or scikit-image's bundled photos."""
    if folder is not None:
        return [read_image(p) for p in list_images(folder)]
    import skimage.data

    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            img = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001 - a photo missing from this scikit-image version: use the others
            continue
        photos.append(as_rgb_uint8(img, f"skimage.data.{name}"))
    if not photos:
        raise InputError("no scikit-image photo could be loaded; pass a photo folder (render.photos)")
    return photos


def make_texture(rng: np.random.Generator, photo: np.ndarray, size) -> np.ndarray:
    """A random crop of ``photo`` with the aspect ratio of ``size`` = (h, w) (the most detailed of three draws, by
    mean absolute gray-level difference between neighbours), resized to it, randomly flipped."""
    out_h, out_w = int(size[0]), int(size[1])
    h, w = photo.shape[:2]
    aspect = out_w / out_h
    # largest crop of that aspect, then a random fraction of it
    ch, cw = (h, h * aspect) if h * aspect <= w else (w / aspect, w)
    crop, detail = None, -1.0
    for _ in range(3):  # keep the most detailed of a few crops (avoid plain sky or background)
        s = rng.uniform(0.5, 1.0)
        ch_s, cw_s = max(2, int(ch * s)), max(2, int(cw * s))
        y0, x0 = int(rng.integers(0, h - ch_s + 1)), int(rng.integers(0, w - cw_s + 1))
        candidate = photo[y0:y0 + ch_s, x0:x0 + cw_s]
        gray = candidate.mean(-1)
        d = float(np.abs(np.diff(gray, axis=0)).mean() + np.abs(np.diff(gray, axis=1)).mean())
        if d > detail:
            crop, detail = candidate, d
    ch, cw = crop.shape[:2]
    tex = resize_exact(crop, (out_h, out_w))
    if rng.random() < 0.5:
        tex = tex[:, ::-1]
    if rng.random() < 0.5:
        tex = tex[::-1]
    return np.ascontiguousarray(tex)


# ------------------------------------------------------------------------------------------------ scene
def _box_faces(center_xy, size, yaw):
    """Five visible faces (top and four sides) of a box standing on the floor."""
    c, s = np.cos(yaw), np.sin(yaw)
    ex = np.array([c, s, 0.0]) * size[0]
    ey = np.array([-s, c, 0.0]) * size[1]
    ez = np.array([0.0, 0.0, size[2]])
    o = np.array([center_xy[0], center_xy[1], 0.0]) - ex / 2 - ey / 2
    top = o + ez
    # sides: origin at the top edge, v pointing down (textures upright)
    return [(top, ex, ey), (top, ex, -ez), (top + ey, ex, -ez), (top, ey, -ez), (top + ex, ey, -ez)]


def build_scene(rng: np.random.Generator, conf, photos: list[np.ndarray]) -> Scene:
    """A textured room with boxes (see the module docstring)."""
    X, Y, H = (float(v) for v in conf.room_size)
    x0, y0 = -X / 2, -Y / 2
    faces = [
        ((x0, y0, 0.0), (X, 0, 0), (0, Y, 0)),  # floor
        ((x0, y0, H), (X, 0, 0), (0, Y, 0)),  # ceiling
        ((x0, y0, H), (X, 0, 0), (0, 0, -H)),  # walls (origin on the top edge, v down)
        ((x0, -y0, H), (X, 0, 0), (0, 0, -H)),
        ((x0, y0, H), (0, Y, 0), (0, 0, -H)),
        ((-x0, y0, H), (0, Y, 0), (0, 0, -H)),
    ]
    faces = [tuple(np.asarray(v, np.float64) for v in f) for f in faces]
    lo, hi = (float(v) for v in conf.box_size)
    centers = []
    for _ in range(int(conf.num_boxes)):
        for _attempt in range(20):  # keep box centres apart (boxes may still touch)
            r, a = float(conf.box_region) * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            cxy = np.array([r * np.cos(a), r * np.sin(a)])
            if all(np.linalg.norm(cxy - c) > lo for c in centers):
                break
        centers.append(cxy)
        faces += _box_faces(cxy, rng.uniform(lo, hi, size=3), rng.uniform(0, np.pi / 2))
    density, cap = float(conf.texture_density), int(conf.max_texture_size)
    textures = []
    for _, u, v in faces:
        size = [min(cap, max(8, int(round(np.linalg.norm(v) * density)))),
                min(cap, max(8, int(round(np.linalg.norm(u) * density))))]
        textures.append(make_texture(rng, photos[int(rng.integers(len(photos)))], size))
    return Scene(np.stack([f[0] for f in faces]), np.stack([f[1] for f in faces]), np.stack([f[2] for f in faces]),
                 textures)


# ------------------------------------------------------------------------------------------------ cameras
def intrinsics(conf) -> np.ndarray:
    """K (3, 3) in featlab pixels: fx = fy from the horizontal field of view, principal point at the centre."""
    h, w = (int(v) for v in conf.image_size)
    f = w / (2.0 * np.tan(np.radians(float(conf.hfov)) / 2.0))
    return np.array([[f, 0.0, w / 2.0], [0.0, f, h / 2.0], [0.0, 0.0, 1.0]])


def look_at(center, target, roll_deg: float = 0.0) -> np.ndarray:
    """World-to-camera pose (4, 4) of a camera at ``center`` looking at ``target`` (world z up; camera x right,
    y down, z forward), rolled by ``roll_deg`` about the viewing direction."""
    fwd = np.asarray(target, np.float64) - center
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    if np.linalg.norm(right) < 1e-9:
        raise ConfigError("camera looks straight up or down; cannot define its roll")
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    a = np.radians(roll_deg)
    Rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    T_c2w = np.eye(4)
    T_c2w[:3, :3] = np.stack([right, down, fwd], 1) @ Rz
    T_c2w[:3, 3] = center
    return invert_rigid(T_c2w)


def camera_poses(rng: np.random.Generator, conf) -> np.ndarray:
    """(N, 4, 4) world-to-camera poses along the configured trajectory."""
    n = int(conf.num_frames)
    r_lo, r_hi = (float(v) for v in conf.camera_radius)
    h_lo, h_hi = (float(v) for v in conf.camera_height)
    jitter, max_roll = float(conf.target_jitter), float(conf.max_roll)
    if conf.trajectory == "random":
        theta = rng.uniform(0, 2 * np.pi, n)
        radius, height = rng.uniform(r_lo, r_hi, n), rng.uniform(h_lo, h_hi, n)
        ta, tr = rng.uniform(0, 2 * np.pi, n), jitter * np.sqrt(rng.random(n))
        tz, roll = rng.uniform(0.3, 1.2, n), rng.uniform(-max_roll, max_roll, n)
    else:  # smooth: slow sinusoids of random phase around the mid values
        k = np.arange(n, dtype=np.float64)

        def wave(lo, hi):
            w, phase = rng.uniform(0.03, 0.12), rng.uniform(0, 2 * np.pi)
            return (lo + hi) / 2 + (hi - lo) / 2 * np.sin(w * k + phase)

        theta = rng.uniform(0, 2 * np.pi) + np.radians(float(conf.step)) * k
        radius, height = wave(r_lo, r_hi), wave(h_lo, h_hi)
        ta, tr = rng.uniform(0, 2 * np.pi) + 0.05 * k, wave(0.0, jitter)
        tz, roll = wave(0.3, 1.2), wave(-max_roll, max_roll)
    poses = []
    for m in range(n):
        center = np.array([radius[m] * np.cos(theta[m]), radius[m] * np.sin(theta[m]), height[m]])
        target = np.array([tr[m] * np.cos(ta[m]), tr[m] * np.sin(ta[m]), tz[m]])
        poses.append(look_at(center, target, roll[m]))
    return np.stack(poses)


# ------------------------------------------------------------------------------------------------ renderer
def _sample_bilinear(texture: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear lookup in a float32 (h, w, 3) texture at featlab texel coordinates (x, y) (texel (i, j) centred at
    (j + 0.5, i + 0.5)), clamped at the border. Returns float32 (N, 3)."""
    h, w = texture.shape[:2]
    x = np.clip(to_opencv(x), 0.0, w - 1.0)  # texel indices
    y = np.clip(to_opencv(y), 0.0, h - 1.0)
    x0 = np.minimum(x.astype(np.int64), w - 2) if w > 1 else np.zeros(len(x), np.int64)
    y0 = np.minimum(y.astype(np.int64), h - 2) if h > 1 else np.zeros(len(y), np.int64)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    t = texture
    top = t[y0, x0] * (1 - fx) + t[y0, x1] * fx
    bottom = t[y1, x0] * (1 - fx) + t[y1, x1] * fx
    return top * (1 - fy) + bottom * fy


def render(scene: Scene, K: np.ndarray, T_w2c: np.ndarray, image_size) -> tuple[np.ndarray, np.ndarray]:
    """Render one view.

    Args:
        scene: the faces and their textures.
        K: (3, 3) intrinsics in featlab pixels.
        T_w2c: (4, 4) world-to-camera pose.
        image_size: (H, W).
    Returns:
        image uint8 (H, W, 3) RGB, depth float32 (H, W) camera z-depth in metres at each pixel centre (0 where the
        ray hits nothing).
    """
    h, w = int(image_size[0]), int(image_size[1])
    T_c2w = invert_rigid(T_w2c)
    R, C = T_c2w[:3, :3], T_c2w[:3, 3]
    xs, ys = np.meshgrid(from_opencv(np.arange(w)), from_opencv(np.arange(h)))  # pixel centres
    pix = np.stack([xs.ravel(), ys.ravel(), np.ones(h * w)], 0)  # (3, P)
    d = (R @ np.linalg.inv(K) @ pix).astype(np.float32)  # world ray directions (3, P), camera z component 1
    normals = np.cross(scene.us, scene.vs)
    rel = scene.origins - C  # (F, 3) face origins relative to the camera centre
    # per face f and pixel p: ray parameter t = (rel . n) / (d . n) (= z-depth); the hit is C + t d, at face
    # coordinates a = (t d . u - rel . u) / |u|^2, b likewise with v
    dots = (np.concatenate([normals, scene.us, scene.vs], 0).astype(np.float32) @ d)  # (3F, P)
    nf = len(scene)
    num = np.einsum("fk,fk->f", rel, normals)
    ru, rv = np.einsum("fk,fk->f", rel, scene.us), np.einsum("fk,fk->f", rel, scene.vs)
    uu, vv = np.einsum("fk,fk->f", scene.us, scene.us), np.einsum("fk,fk->f", scene.vs, scene.vs)
    depth = np.full(h * w, np.inf, np.float32)
    best = np.full(h * w, -1, np.int64)
    a_best = np.zeros(h * w, np.float32)
    b_best = np.zeros(h * w, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        for f in range(nf):  # z-buffer: keep the nearest hit inside a face
            t = np.float32(num[f]) / dots[f]
            closer = (t > _NEAR) & (t < depth)
            idx = np.flatnonzero(closer)
            if len(idx) == 0:
                continue
            t = t[idx]
            a = (t * dots[nf + f, idx] - np.float32(ru[f])) / np.float32(uu[f])
            b = (t * dots[2 * nf + f, idx] - np.float32(rv[f])) / np.float32(vv[f])
            inside = (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
            idx = idx[inside]
            depth[idx], best[idx], a_best[idx], b_best[idx] = t[inside], f, a[inside], b[inside]
    valid = best >= 0
    color = np.zeros((h * w, 3), np.float32)
    textures = scene.float_textures()
    order = np.argsort(best, kind="stable")
    bounds = np.searchsorted(best[order], np.arange(-1, nf + 1))
    for f in range(nf):
        sel = order[bounds[f + 1]:bounds[f + 2]]
        if len(sel) == 0:
            continue
        tex = textures[f]
        color[sel] = _sample_bilinear(tex, a_best[sel] * tex.shape[1], b_best[sel] * tex.shape[0])
    depth = np.where(valid, depth, 0.0).astype(np.float32).reshape(h, w)
    image = np.clip(np.rint(color), 0, 255).astype(np.uint8).reshape(h, w, 3)
    return image, depth


# ------------------------------------------------------------------------------------------------ collection
def _check_conf(c):
    if c.trajectory not in ("smooth", "random"):
        raise ConfigError(f"render.trajectory must be smooth or random, got '{c.trajectory}'")
    if int(c.num_frames) < 1 or int(c.num_boxes) < 0 or int(c.seed) < 0:
        raise ConfigError("render.num_frames must be >= 1, render.num_boxes >= 0 and render.seed >= 0")
    if len(c.image_size) != 2 or min(int(v) for v in c.image_size) < 8:
        raise ConfigError(f"render.image_size must be [H, W] with sides >= 8, got {list(c.image_size)}")
    if not 1.0 <= float(c.hfov) <= 150.0:
        raise ConfigError(f"render.hfov must be in [1, 150] degrees, got {c.hfov}")
    if len(c.room_size) != 3 or min(float(v) for v in c.room_size) <= 0:
        raise ConfigError(f"render.room_size must be [x, y, height] > 0, got {list(c.room_size)}")
    X, Y, H = (float(v) for v in c.room_size)
    r_lo, r_hi = (float(v) for v in c.camera_radius)
    h_lo, h_hi = (float(v) for v in c.camera_height)
    b_lo, b_hi = (float(v) for v in c.box_size)
    if not (0 < b_lo <= b_hi) or float(c.box_region) < 0:
        raise ConfigError(f"render.box_size must be [min, max] with 0 < min <= max, got {list(c.box_size)}")
    # the camera must stay inside the room and outside the boxes (a box reaches box_region + max side / sqrt 2)
    reach = float(c.box_region) + b_hi / np.sqrt(2) if int(c.num_boxes) else 0.0
    if not (reach < r_lo <= r_hi < min(X, Y) / 2 - 0.1):
        raise ConfigError(f"render.camera_radius {list(c.camera_radius)} must lie between the boxes' reach "
                          f"({reach:.2f} m) and the walls ({min(X, Y) / 2 - 0.1:.2f} m)")
    if not (0.05 < h_lo <= h_hi < H - 0.05):
        raise ConfigError(f"render.camera_height {list(c.camera_height)} must lie inside the room (0, {H})")


def render_collection(conf=None) -> PosedCollection:
    """Render a synthetic posed collection (in memory).

    Args:
        conf: overrides of :data:`default_conf`.
    Returns:
        a :class:`PosedCollection` named ``synthetic:<name>-<seed>``, ``synthetic=True``, frames
        ``frame-000000``... with uint8 images, exact depth (metres), shared K and world-to-camera poses. The scene
        is kept as ``collection.scene`` (faces and textures) for tests.

    Raises:
        ConfigError: bad config values; InputError: an unreadable photo folder.
    """
    c = resolve_conf(default_conf, conf, "render")
    _check_conf(c)
    rng = np.random.default_rng(int(c.seed))
    photos = load_photos(c.photos)
    scene = build_scene(rng, c, photos)
    poses = camera_poses(rng, c)
    K = intrinsics(c)
    size = tuple(int(v) for v in c.image_size)
    images, depths = [], []
    for T in poses:
        image, depth = render(scene, K, T, size)
        images.append(image)
        depths.append(depth)
    names = [f"frame-{k:06d}" for k in range(len(poses))]
    coll = PosedCollection(names, images, K, poses, depths=depths, image_sizes=[size] * len(names),
                           name=f"synthetic:{c.name}-{int(c.seed)}", synthetic=True)
    coll.scene = scene
    coll.render_conf = to_container(c)
    return coll


def write_7scenes(collection: PosedCollection, root, overwrite: bool = False) -> Path:
    """Write a collection with depth in the 7-Scenes layout, readable by
    :class:`featlab.datasets.rgbd.RGBDSequence` (``featlab eval relpose --rgbd``, ``featlab train caps --data``).

    Files: ``frame-XXXXXX.color.png``, ``frame-XXXXXX.depth.png`` (uint16 millimetres, 0 invalid),
    ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world), ``camera-intrinsics.txt`` (K in featlab pixels, as the reader
    uses it), and ``synthetic.json`` (``"synthetic": true``, the collection name and the render config). Each file
    is written atomically. Frames are renumbered 0..N-1 in collection order.

    Raises:
        InputError: no depth, intrinsics that differ between images or have fx != fy (one 7-Scenes intrinsics file
            holds one focal length), images without a pose, or a non-empty folder without ``overwrite``.
    """
    root = Path(root)
    if not collection.has_depth:
        raise InputError(f"collection '{collection.name}' has no depth: the 7-Scenes layout needs depth maps")
    K = collection.K[0]
    if np.abs(collection.K - K).max() > 1e-9 or abs(K[0, 0] - K[1, 1]) > 1e-9 * K[0, 0]:
        raise InputError("the 7-Scenes layout needs one shared K with fx = fy")
    if not collection.pose_valid.all():
        raise InputError(f"collection '{collection.name}' has images without a pose")
    if root.exists() and any(root.iterdir()) and not overwrite:
        raise InputError(f"output folder {root} is not empty (pass overwrite=True to write into it)")
    root.mkdir(parents=True, exist_ok=True)
    if not root.name.startswith("synthetic") and collection.synthetic:
        logger.warning("writing synthetic frames to %s: name the folder synthetic-... so that results computed on it "
                       "are labelled synthetic", root)
    T_c2w = collection.T_c2w
    for k in range(len(collection)):
        stem = root / f"frame-{k:06d}"
        image = collection.load_image(k)
        ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        depth = collection.load_depth(k)
        mm = np.clip(np.rint(depth * 1000.0), 0, 65534).astype(np.uint16)
        ok_d, png_d = cv2.imencode(".png", mm)
        if not (ok and ok_d):  # pragma: no cover - OpenCV always encodes uint8/uint16 PNGs
            raise InputError(f"cannot encode frame {k} as PNG")
        atomic_write_bytes(f"{stem}.color.png", png.tobytes())
        atomic_write_bytes(f"{stem}.depth.png", png_d.tobytes())
        atomic_write_text(f"{stem}.pose.txt", "\n".join(" ".join(f"{v:.9f}" for v in row) for row in T_c2w[k]) + "\n")
    atomic_write_text(root / "camera-intrinsics.txt", "\n".join(" ".join(f"{v:.9f}" for v in row) for row in K) + "\n")
    meta = {"synthetic": True, "name": collection.name, "generator": "featlab.datasets.render",
            "frames": len(collection), "pixel_convention": "featlab (centre of the top-left pixel at (0.5, 0.5))",
            "depth": "uint16 millimetres, 0 invalid", "poses": "camera-to-world",
            "render_conf": getattr(collection, "render_conf", None)}
    atomic_write_text(root / "synthetic.json", json.dumps(meta, indent=2) + "\n")
    return root


def main(argv=None) -> int:
    """``python -m featlab.datasets.render OUT_DIR [key=value ...]``: render a synthetic scene to disk."""
    p = argparse.ArgumentParser(prog="python -m featlab.datasets.render",
                                description="Render a synthetic textured room with boxes from moving cameras and "
                                            "write it in the 7-Scenes layout (labelled synthetic).")
    p.add_argument("output", type=Path, help="output folder (name it synthetic-...)")
    p.add_argument("overrides", nargs="*", metavar="key=value",
                   help="render config, e.g. num_frames=200 seed=3 photos=photos/train image_size=[480,640]")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    args = p.parse_args(argv)
    coll = render_collection(parse_overrides(args.overrides))
    write_7scenes(coll, args.output, overwrite=args.overwrite)
    print(f"wrote {len(coll)} synthetic frames of {coll.name} to {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    from ..errors import FeatlabError

    try:
        raise SystemExit(main())
    except FeatlabError as e:
        raise SystemExit(f"error: {e}")
