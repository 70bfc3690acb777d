"""Posed image collections: images with intrinsics and camera poses, a pair sampler, and a two-view dataset.

One abstraction for every source of posed images (an RGB-D sequence, a COLMAP model, an IMU/VIO/ARKit pose log, the
CAPS MegaDepth layout, rendered synthetic scenes): :class:`PosedCollection`. Readers build one; :class:`PairSampler`
chooses image pairs from it; :class:`PosedPairs` serves the pairs as two-view items for training and evaluation.

Conventions (the same everywhere in featlab, see :mod:`featlab.pixels` and :mod:`featlab.extractors.base`):

- **Intrinsics** ``K`` (3, 3) per image, in featlab pixels: the centre of the top-left pixel is (0.5, 0.5) (as
  COLMAP), ``x = K X / Z`` with no extra offset. Resizing an image from (H, W) to (H', W') scales K exactly as
  ``K' = diag(W'/W, H'/H, 1) K``.
- **Poses** are stored **world-to-camera**: ``T_w2c`` (4, 4) with ``x_cam = T_w2c x_world`` (COLMAP's
  ``cam_from_world``); ``T_c2w = inv(T_w2c)``. Camera axes as OpenCV: x right, y down, z forward. A pose of NaNs
  marks an image without a pose (never paired). Rotations off by up to 1e-2 (text files with few digits) are snapped
  to the nearest rotation matrix; anything further is an InputError. The relative pose of a pair (i, j) is
  ``T_0to1 = T_w2c[j] @ inv(T_w2c[i])`` (``x_cam1 = T_0to1 x_cam0``, the data contract's ``T_0to1``).
- **Depth** (optional) per image: float32 (H, W) metric z-depth, 0 where invalid.
- **SfM visibility** (optional) per image: the ids of the 3D points (tracks) it observes.
- **Groups** (optional) per image: an integer scene id; images of different groups (different world frames, e.g.
  two MegaDepth scenes) are never paired.
- **Order**: the collection's image order (frame order for a sequence) defines the frame gap ``j - i`` of a pair.

Pair lists are text files of image names, one pair per line (``name0 name1``, the hloc/featlab pairs format), with
the sampler config in a header comment, written atomically (:meth:`PairSampler.save`); a run saves its list and
reloads it on resume (:meth:`PairSampler.sample_or_load`).
"""
from __future__ import annotations

import json
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Sequence

import numpy as np

from ..conf import none_or, resolve_conf, to_container
from ..errors import ConfigError, InputError
from ..geometry.pose import rotation_angle
from ..io.atomic import atomic_write_text
from ..io.depth import resize_depth_nearest  # the one nearest depth resize (also re-exported from here)
from ..io.image import as_rgb_uint8, read_image, resize_exact
from .rgbd import read_pairs_file

logger = logging.getLogger(__name__)

#: largest deviation of R^T R from the identity (and of det R from 1) accepted for a pose rotation; accepted
#: rotations are snapped to the nearest rotation matrix
ROTATION_TOLERANCE = 1e-2

PAIRS_HEADER = "featlab posed pairs"


# ------------------------------------------------------------------------------------------------ geometry
def relative_pose_w2c(T_w2c_0: np.ndarray, T_w2c_1: np.ndarray) -> np.ndarray:
    """``T_0to1 = T_w2c_1 @ inv(T_w2c_0)``: camera-0 coordinates -> camera-1 coordinates (rigid inverse)."""
    return T_w2c_1 @ invert_rigid(T_w2c_0)


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Inverse of rigid transforms (..., 4, 4): ``[R^T, -R^T t]``."""
    T = np.asarray(T, np.float64)
    R, t = T[..., :3, :3], T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -(Rt @ t[..., None])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def check_rigid(T: np.ndarray, what: str) -> np.ndarray:
    """Check that ``T`` (4, 4) is a finite rigid transform and return it with R projected onto the nearest rotation.

    Rotations within :data:`ROTATION_TOLERANCE` of orthonormal (pose files written with few digits: 7-Scenes poses
    deviate by up to 2.4e-4) are snapped to the nearest rotation (SVD), so that ``inv(T) = [R^T, -R^T t]`` holds.

    Raises:
        InputError: non-finite values, a matrix that is not a rotation (scale, shear, reflection), or a last row
            other than 0 0 0 1.
    """
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.isfinite(T).all():
        raise InputError(f"{what}: pose must be a finite 4x4 matrix, got {T.tolist()}")
    R = T[:3, :3]
    err = np.abs(R.T @ R - np.eye(3)).max()
    det = np.linalg.det(R)
    if err > ROTATION_TOLERANCE or abs(det - 1.0) > ROTATION_TOLERANCE:
        raise InputError(f"{what}: pose rotation is not a rotation matrix (|R^T R - I| = {err:.2g}, det = {det:.6f})")
    if np.abs(T[3] - [0, 0, 0, 1]).max() > 1e-9:
        raise InputError(f"{what}: last row of the pose must be 0 0 0 1, got {T[3].tolist()}")
    U, _, Vt = np.linalg.svd(R)
    out = T.copy()
    out[:3, :3] = U @ Vt
    out[3] = [0.0, 0.0, 0.0, 1.0]
    return out


def check_intrinsics(K: np.ndarray, what: str) -> None:
    """InputError unless ``K`` (3, 3) is finite with positive focal lengths and last row 0 0 1."""
    if K.shape != (3, 3) or not np.isfinite(K).all():
        raise InputError(f"{what}: intrinsics must be a finite 3x3 matrix, got {np.asarray(K).tolist()}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or np.abs(K[2] - [0, 0, 1]).max() > 1e-9 or K[1, 0] != 0:
        raise InputError(f"{what}: intrinsics must look like [[fx, s, cx], [0, fy, cy], [0, 0, 1]] with fx, fy > 0, "
                         f"got {K.tolist()}")


def read_depth_file(path: Path, depth_scale: float = 1e-3) -> np.ndarray:
    """Depth map from a file: ``.npy`` (float metres) or a 16-bit PNG in units of ``depth_scale`` metres (0 and
    65535 invalid). Returns float32 (H, W) metres, 0 where invalid."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"depth file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            depth = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise InputError(f"cannot read depth file {path}: {e}") from None
        if depth.ndim != 2:
            raise InputError(f"depth file {path} must hold a 2-D array, got shape {depth.shape}")
        depth = depth.astype(np.float32)
        depth[~np.isfinite(depth) | (depth < 0)] = 0.0
        return depth
    from ..io.depth import read_depth

    return read_depth(path, depth_scale)  # 16-bit PNG, 0 and 65535 invalid


def resize_view(image: np.ndarray, K: np.ndarray, size, depth: np.ndarray | None = None):
    """Resize an image (and its depth) to ``size`` = (H', W'), scaling the intrinsics: ``K' = diag(sx, sy, 1) K``
    with ``sx = W'/W``, ``sy = H'/H`` (exact in featlab's pixel convention: both images span [0, W] x [0, H]).

    Returns:
        (image', K', depth') with depth' None when depth is None.
    """
    h, w = image.shape[:2]
    out_h, out_w = int(size[0]), int(size[1])
    if (out_h, out_w) == (h, w):
        return image, K.copy(), depth
    image = resize_exact(image, (out_h, out_w))
    K = np.diag([out_w / w, out_h / h, 1.0]) @ K
    if depth is not None:
        depth = resize_depth_nearest(depth, (out_h, out_w))
    return image, K, depth


# ------------------------------------------------------------------------------------------------ collection
class PosedCollection:
    """Images with intrinsics and world-to-camera poses, optional depth, SfM visibility and scene groups.

    Args:
        names: N unique image names (no whitespace if the pairs are to be saved).
        images: N image sources: a path (str/Path, relative paths resolved against ``root``) or a uint8 array
            (H, W, 3) held in memory; or None when the images are not available (poses only; loading raises).
        K: (N, 3, 3) or shared (3, 3) intrinsics in featlab pixels.
        T_w2c: (N, 4, 4) world-to-camera poses (``x_cam = T_w2c x_world``); an all-NaN matrix marks a missing pose.
        depths: optional N depth sources (path to .npy metres or 16-bit PNG in ``depth_scale`` units, a float
            array (H, W) in metres, or None for an image without depth).
        point_ids: optional N integer arrays: ids of the 3D points observed by each image (SfM tracks).
        groups: optional (N,) integer scene ids; images of different groups are never paired.
        image_sizes: optional (N, 2) int (H, W) of each image; when given, a loaded image of another size raises
            (its K would be wrong).
        name: collection name (prefix of the pair names; ``synthetic:...`` for rendered data).
        root: folder that relative image/depth paths are resolved against.
        depth_scale: metres per unit of 16-bit depth PNGs.
        synthetic: True for generated data (labelled as such in every item).

    Raises:
        InputError: inconsistent lengths, duplicate names, non-rigid poses, bad intrinsics.
    """

    def __init__(self, names: Sequence[str], images, K, T_w2c, depths=None, point_ids=None, groups=None,
                 image_sizes=None, name: str = "posed", root=None, depth_scale: float = 1e-3,
                 synthetic: bool = False):
        self.names = [str(n) for n in names]
        n = len(self.names)
        if n == 0:
            raise InputError(f"posed collection '{name}' has no images")
        self.name = str(name)
        self.root = None if root is None else Path(root)
        self.synthetic = bool(synthetic)
        self.depth_scale = float(depth_scale)
        self._index = {}
        for i, nm in enumerate(self.names):
            if nm in self._index:
                raise InputError(f"posed collection '{name}': duplicate image name '{nm}'")
            self._index[nm] = i
        if images is not None and len(images) != n:
            raise InputError(f"posed collection '{name}': {len(images)} images for {n} names")
        self._images = None if images is None else list(images)
        K = np.asarray(K, np.float64)
        if K.shape == (3, 3):
            K = np.broadcast_to(K, (n, 3, 3))
        if K.shape != (n, 3, 3):
            raise InputError(f"posed collection '{name}': K must be (3, 3) or ({n}, 3, 3), got {K.shape}")
        self.K = np.ascontiguousarray(K)
        for i in range(n):
            check_intrinsics(self.K[i], f"image '{self.names[i]}'")
        T = np.array(T_w2c, np.float64)  # a copy: rotations are snapped to exact rotation matrices
        if T.shape != (n, 4, 4):
            raise InputError(f"posed collection '{name}': T_w2c must be ({n}, 4, 4), got {T.shape}")
        missing = np.isnan(T).all((1, 2))
        for i in np.flatnonzero(~missing):
            T[i] = check_rigid(T[i], f"image '{self.names[i]}'")
        self.T_w2c = T
        self.pose_valid = ~missing
        if depths is not None and len(depths) != n:
            raise InputError(f"posed collection '{name}': {len(depths)} depth maps for {n} images")
        self._depths = None if depths is None else list(depths)
        if point_ids is not None:
            if len(point_ids) != n:
                raise InputError(f"posed collection '{name}': {len(point_ids)} visibility lists for {n} images")
            point_ids = [np.unique(np.asarray(p, np.int64).reshape(-1)) for p in point_ids]
        self.point_ids = point_ids
        if groups is not None:
            groups = np.asarray(groups, np.int64).reshape(-1)
            if len(groups) != n:
                raise InputError(f"posed collection '{name}': {len(groups)} group ids for {n} images")
        self.groups = groups
        if image_sizes is not None:
            image_sizes = np.asarray(image_sizes, np.int64).reshape(n, 2)
        self.image_sizes = image_sizes

    # -------------------------------------------------------------------------------------------- basics
    def __len__(self) -> int:
        return len(self.names)

    def __repr__(self) -> str:
        extras = [k for k, v in (("depth", self.has_depth), ("tracks", self.has_tracks),
                                 ("groups", self.groups is not None), ("synthetic", self.synthetic)) if v]
        return (f"PosedCollection('{self.name}', {len(self)} images, {int(self.pose_valid.sum())} posed"
                + (f", {', '.join(extras)}" if extras else "") + ")")

    @property
    def has_depth(self) -> bool:
        """True when every image has a depth source."""
        return self._depths is not None and all(d is not None for d in self._depths)

    @property
    def has_tracks(self) -> bool:
        return self.point_ids is not None

    @property
    def T_c2w(self) -> np.ndarray:
        """(N, 4, 4) camera-to-world poses (NaN for images without a pose)."""
        out = np.full_like(self.T_w2c, np.nan)
        out[self.pose_valid] = invert_rigid(self.T_w2c[self.pose_valid])
        return out

    @property
    def camera_centers(self) -> np.ndarray:
        """(N, 3) camera centres in world coordinates, ``-R^T t`` (NaN without a pose)."""
        R, t = self.T_w2c[:, :3, :3], self.T_w2c[:, :3, 3]
        return -np.einsum("nba,nb->na", R, t)

    def index(self, name_or_index) -> int:
        """Image index from a name or an integer (or a string of digits that is not a name)."""
        if isinstance(name_or_index, (int, np.integer)):
            i = int(name_or_index)
            if not 0 <= i < len(self):
                raise IndexError(f"image index {i} out of range for {len(self)} images")
            return i
        token = str(name_or_index)
        if token in self._index:
            return self._index[token]
        if token.isdigit() and int(token) < len(self):
            return int(token)
        raise InputError(f"unknown image '{token}' in collection '{self.name}'")

    def relative_pose(self, i: int, j: int) -> np.ndarray:
        """``T_0to1`` (4, 4) from image i's camera to image j's camera."""
        for k in (i, j):
            if not self.pose_valid[k]:
                raise InputError(f"image '{self.names[k]}' of '{self.name}' has no pose")
        return relative_pose_w2c(self.T_w2c[i], self.T_w2c[j])

    # -------------------------------------------------------------------------------------------- loading
    def _resolve_path(self, p) -> Path:
        p = Path(p)
        return p if p.is_absolute() or self.root is None else self.root / p

    def image_path(self, i: int) -> Path | None:
        """Path of image i (None when it is held in memory or images are unavailable)."""
        if self._images is None or isinstance(self._images[i], np.ndarray):
            return None
        return self._resolve_path(self._images[i])

    def load_image(self, i: int) -> np.ndarray:
        """Image i as uint8 (H, W, 3) RGB. InputError when missing, unreadable, or of an unexpected size."""
        i = self.index(i)
        if self._images is None:
            raise InputError(f"collection '{self.name}' has poses but no images (give the image folder)")
        src = self._images[i]
        image = as_rgb_uint8(src, self.names[i]) if isinstance(src, np.ndarray) else read_image(
            self._resolve_path(src))
        if self.image_sizes is not None and tuple(image.shape[:2]) != tuple(self.image_sizes[i]):
            raise InputError(f"image '{self.names[i]}' of '{self.name}' is {image.shape[1]}x{image.shape[0]} but "
                             f"its intrinsics are for {self.image_sizes[i][1]}x{self.image_sizes[i][0]}")
        return image

    def load_depth(self, i: int) -> np.ndarray:
        """Depth of image i, float32 (H, W) metres, 0 where invalid (a copy). InputError when there is none."""
        i = self.index(i)
        src = None if self._depths is None else self._depths[i]
        if src is None:
            raise InputError(f"image '{self.names[i]}' of '{self.name}' has no depth")
        if isinstance(src, np.ndarray):
            if src.ndim != 2:
                raise InputError(f"depth of '{self.names[i]}' must be (H, W), got {src.shape}")
            return src.astype(np.float32, copy=True)
        return read_depth_file(self._resolve_path(src), self.depth_scale)

    def view(self, i: int, depth: bool = True) -> dict:
        """Image i with its geometry.

        Returns:
            dict with ``name`` str, ``image`` uint8 (H, W, 3), ``K`` (3, 3), ``T_w2c`` and ``T_c2w`` (4, 4) float64,
            and ``depth`` float32 (H, W) when ``depth`` and the image has one.
        """
        i = self.index(i)
        if not self.pose_valid[i]:
            raise InputError(f"image '{self.names[i]}' of '{self.name}' has no pose")
        out = {"name": self.names[i], "image": self.load_image(i), "K": self.K[i].copy(),
               "T_w2c": self.T_w2c[i].copy(), "T_c2w": invert_rigid(self.T_w2c[i])}
        if depth and self._depths is not None and self._depths[i] is not None:
            out["depth"] = self.load_depth(i)
        return out


class RGBDCollection(PosedCollection):
    """A :class:`featlab.datasets.rgbd.RGBDSequence` seen as a :class:`PosedCollection` (frames in sequence order,
    depth from the sequence's own reader, its intrinsics choice kept). Built by :func:`from_rgbd`. A folder holding
    ``synthetic.json`` (written by :func:`featlab.datasets.render.write_7scenes`) is labelled synthetic."""

    def __init__(self, sequence):
        self.sequence = sequence
        n = len(sequence)
        T_w2c = np.full((n, 4, 4), np.nan)
        valid = np.array([sequence.pose_valid(i) for i in range(n)], bool)
        T_w2c[valid] = invert_rigid(sequence.poses_c2w[valid])
        # a folder written by featlab.datasets.render.write_7scenes stays labelled synthetic
        synthetic = (Path(sequence.root) / "synthetic.json").is_file()
        name = sequence.name if not synthetic or sequence.name.startswith("synthetic") else f"synthetic:{sequence.name}"
        super().__init__(sequence.frames, None, sequence.K, T_w2c, name=name, root=sequence.root,
                         synthetic=synthetic)
        self._depths = [True] * n  # every frame has depth, read by the sequence (load_depth below)

    def load_image(self, i: int) -> np.ndarray:
        i = self.index(i)
        load = getattr(self.sequence, "load_image", None)
        if load is not None:
            return load(i)
        return self.sequence.load_frame(i)["image"]

    def load_depth(self, i: int) -> np.ndarray:
        return self.sequence.load_depth(self.index(i))


def from_rgbd(sequence) -> PosedCollection:
    """Adapt an RGB-D sequence (:class:`featlab.datasets.rgbd.RGBDSequence`, 7-Scenes / TUM layout): poses are
    converted to world-to-camera, the sequence's intrinsics (``rgbd.focal`` choice) and depth reader are kept."""
    return RGBDCollection(sequence)


# ------------------------------------------------------------------------------------------------ pair sampler
pair_default_conf = {
    "index_range": none_or(list),  # [start, stop): only images with start <= index < stop (collection order); None: all
    "min_gap": 1,  # smallest index difference j - i of a pair (the frame gap of a sequence)
    "max_gap": none_or(int),  # largest index difference; None: unbounded (every pair of the collection is a candidate)
    "max_rotation": 80.0,  # degrees: largest angle of the relative rotation of a pair
    "min_baseline": 0.0,  # smallest distance between the two camera centres (world units; metres if metric)
    "max_baseline": none_or(float),  # largest distance between the camera centres; None: unbounded
    "covisibility": "auto",  # auto | depth | tracks | none (auto: tracks when available, else depth, else none)
    "min_covisibility": 0.3,  # smallest covisibility of a kept pair (see PairSampler)
    "max_covisibility": 1.0,  # largest covisibility of a kept pair (e.g. 0.9 to drop near-duplicates)
    "min_shared_points": 0,  # tracks: smallest number of 3D points observed by both images
    "covisibility_stride": 8,  # depth: step (px) of the pixel grid tested for visibility
    "depth_tolerance": 0.1,  # depth: relative depth agreement for a pixel to count as visible in the other view
    "max_pairs": none_or(int),  # keep at most this many pairs (the first ones of a seeded shuffle); None: all
    "seed": 0,  # seed of that shuffle
    "depth_cache_size": 64,  # depth maps kept in memory while sampling
}

COVISIBILITY_SOURCES = ("auto", "depth", "tracks", "none")


class PairSampler:
    """Choose image pairs of a :class:`PosedCollection`: frame-gap range, relative-rotation bound, baseline range,
    covisibility range, deterministic.

    Candidates are the pairs (i, j), i < j, of posed images inside ``index_range``, of the same group, with
    ``min_gap <= j - i <= max_gap``, relative rotation ``<= max_rotation`` and camera distance within
    ``[min_baseline, max_baseline]``. Each candidate is then tested for covisibility:

    - ``depth``: :func:`featlab.geometry.depth.covisibility` in both directions (pixels of one view on a grid of
      step ``covisibility_stride`` that land inside the other view with a consistent depth), the smaller of the two;
    - ``tracks``: shared 3D points ``|P_i & P_j| / max(|P_i|, |P_j|)`` (the smaller of the two directed fractions)
      and at least ``min_shared_points`` shared points;
    - ``none``: every candidate passes (collections with neither depth nor tracks, e.g. a pose log).

    With ``max_pairs`` the candidates are visited in an order shuffled by ``numpy.random.default_rng(seed)`` and
    sampling stops after ``max_pairs`` pairs pass (the expensive depth test runs only as far as needed); without it
    every candidate is tested in order and the seed plays no role. The result is sorted by (i, j).

    Attributes (after :meth:`sample`): ``scores`` dict (i, j) -> {"covisibility", "rotation", "baseline"}.
    """

    default_conf = pair_default_conf

    def __init__(self, conf=None):
        self.conf = resolve_conf(pair_default_conf, conf, "pairs")
        c = self.conf
        if c.covisibility not in COVISIBILITY_SOURCES:
            raise ConfigError(f"pairs.covisibility must be one of {', '.join(COVISIBILITY_SOURCES)}, "
                              f"got '{c.covisibility}'")
        if not 0.0 <= float(c.min_covisibility) <= float(c.max_covisibility) <= 1.0:
            raise ConfigError(f"need 0 <= pairs.min_covisibility <= pairs.max_covisibility <= 1, got "
                              f"{c.min_covisibility}, {c.max_covisibility}")
        if int(c.min_gap) < 1 or (c.max_gap is not None and int(c.max_gap) < int(c.min_gap)):
            raise ConfigError(f"need 1 <= pairs.min_gap <= pairs.max_gap, got {c.min_gap}, {c.max_gap}")
        if not 0.0 <= float(c.max_rotation) <= 180.0:
            raise ConfigError(f"pairs.max_rotation must be in [0, 180] degrees, got {c.max_rotation}")
        if float(c.min_baseline) < 0 or (c.max_baseline is not None and float(c.max_baseline) < float(c.min_baseline)):
            raise ConfigError(f"need 0 <= pairs.min_baseline <= pairs.max_baseline, got {c.min_baseline}, "
                              f"{c.max_baseline}")
        if c.max_pairs is not None and int(c.max_pairs) < 1:
            raise ConfigError(f"pairs.max_pairs must be >= 1 or null, got {c.max_pairs}")
        if c.index_range is not None and (len(c.index_range) != 2 or int(c.index_range[0]) < 0
                                          or int(c.index_range[1]) <= int(c.index_range[0])):
            raise ConfigError(f"pairs.index_range must be [start, stop) with 0 <= start < stop, got "
                              f"{list(c.index_range)}")
        if int(c.covisibility_stride) < 1 or int(c.min_shared_points) < 0 or float(c.depth_tolerance) <= 0:
            raise ConfigError("pairs.covisibility_stride must be >= 1, pairs.min_shared_points >= 0 and "
                              "pairs.depth_tolerance > 0")
        self.scores: dict[tuple[int, int], dict] = {}

    # -------------------------------------------------------------------------------------------- sampling
    def covisibility_source(self, collection: PosedCollection) -> str:
        """The covisibility test used for ``collection`` ('depth', 'tracks' or 'none')."""
        mode = self.conf.covisibility
        if mode == "auto":
            return "tracks" if collection.has_tracks else "depth" if collection.has_depth else "none"
        if mode == "depth" and not collection.has_depth:
            raise ConfigError(f"pairs.covisibility=depth but collection '{collection.name}' has no depth maps")
        if mode == "tracks" and not collection.has_tracks:
            raise ConfigError(f"pairs.covisibility=tracks but collection '{collection.name}' has no SfM tracks")
        return mode

    def candidates(self, collection: PosedCollection) -> np.ndarray:
        """(M, 2) int64 candidate pairs (i < j) passing the gap, group, rotation and baseline bounds, sorted."""
        c = self.conf
        n = len(collection)
        start, stop = (0, n) if c.index_range is None else (int(c.index_range[0]), min(n, int(c.index_range[1])))
        idx = np.flatnonzero(collection.pose_valid[start:stop]) + start
        R = collection.T_w2c[:, :3, :3]
        centers = collection.camera_centers
        min_gap, max_gap = int(c.min_gap), (n if c.max_gap is None else int(c.max_gap))
        max_rot = float(c.max_rotation)
        min_b, max_b = float(c.min_baseline), (np.inf if c.max_baseline is None else float(c.max_baseline))
        out = []
        for k, i in enumerate(idx):
            js = idx[k + 1:]
            js = js[(js - i >= min_gap) & (js - i <= max_gap)]
            if collection.groups is not None:
                js = js[collection.groups[js] == collection.groups[i]]
            if len(js) == 0:
                continue
            rot = rotation_angle(R[js] @ R[i].T)  # (M,) degrees
            base = np.linalg.norm(centers[js] - centers[i], axis=1)
            keep = (rot <= max_rot) & (base >= min_b) & (base <= max_b)
            js = js[keep]
            out.append(np.stack([np.full(len(js), i), js], 1))
        if not out:
            return np.zeros((0, 2), np.int64)
        return np.concatenate(out).astype(np.int64)

    def sample(self, collection: PosedCollection) -> list[tuple[int, int]]:
        """Pairs (i, j), i < j, of ``collection`` within all bounds, sorted (see the class docstring).

        Raises:
            ConfigError: a covisibility source the collection lacks.
            InputError: unreadable depth maps.
        """
        from ..geometry.depth import covisibility as depth_covisibility

        c = self.conf
        source = self.covisibility_source(collection)
        cand = self.candidates(collection)
        if c.max_pairs is not None:
            cand = cand[np.random.default_rng(int(c.seed)).permutation(len(cand))]
        shared = track_overlaps(collection, cand) if source == "tracks" else None
        cache: OrderedDict[int, np.ndarray] = OrderedDict()
        cache_size = max(int(c.depth_cache_size), 2)

        def depth(i):
            if i in cache:
                cache.move_to_end(i)
                return cache[i]
            d = collection.load_depth(i)
            cache[i] = d
            if len(cache) > cache_size:
                cache.popitem(last=False)
            return d

        lo, hi = float(c.min_covisibility), float(c.max_covisibility)
        R, centers = collection.T_w2c[:, :3, :3], collection.camera_centers
        kept, self.scores = [], {}
        for m, (i, j) in enumerate(cand):
            if c.max_pairs is not None and len(kept) >= int(c.max_pairs):
                break
            i, j = int(i), int(j)
            if source == "tracks":
                count, cov = shared[m]
                ok = count >= int(c.min_shared_points) and lo <= cov <= hi
            elif source == "depth":
                T = collection.relative_pose(i, j)
                Ki, Kj = collection.K[i], collection.K[j]
                kw = {"stride": int(c.covisibility_stride), "depth_tolerance": float(c.depth_tolerance)}
                cov = min(depth_covisibility(depth(i), depth(j), Ki, Kj, T, **kw),
                          depth_covisibility(depth(j), depth(i), Kj, Ki, invert_rigid(T), **kw))
                ok = lo <= cov <= hi
            else:
                cov, ok = float("nan"), True
            if ok:
                kept.append((i, j))
                self.scores[(i, j)] = {
                    "covisibility": float(cov),
                    "rotation": rotation_angle(R[j] @ R[i].T),
                    "baseline": float(np.linalg.norm(centers[i] - centers[j]))}
        return sorted(kept)

    # -------------------------------------------------------------------------------------------- files
    def conf_json(self) -> str:
        return json.dumps(to_container(self.conf), sort_keys=True)

    def save(self, path, collection: PosedCollection, pairs) -> Path:
        """Write pairs as ``name0 name1`` lines (with their scores as a trailing comment when known), atomically.

        The header records the collection name, its size and the sampler config (JSON), which
        :meth:`sample_or_load` compares on reload.
        """
        lines = [f"# {PAIRS_HEADER}", f"# collection: {collection.name} ({len(collection)} images)",
                 f"# sampler: {self.conf_json()}"]
        for i, j in pairs:
            a, b = collection.names[collection.index(i)], collection.names[collection.index(j)]
            if not a or not b or any(ch.isspace() or ch == "#" for ch in a + b):
                raise InputError(f"image names in a pairs file must be non-empty and contain no whitespace or '#': "
                                 f"{a!r} {b!r}")
            s = self.scores.get((int(i), int(j)))
            note = (f"  # covisibility={s['covisibility']:.4f} rotation={s['rotation']:.2f} "
                    f"baseline={s['baseline']:.4f}") if s else ""
            lines.append(f"{a} {b}{note}")
        return atomic_write_text(path, "\n".join(lines) + "\n")

    @staticmethod
    def load(path, collection: PosedCollection) -> list[tuple[int, int]]:
        """Read a pairs file (``name0 name1`` lines, ``#`` comments; integer indices also accepted) as index pairs.

        Raises:
            InputError: missing file, malformed line, unknown image name.
        """
        out = []
        for a, b in read_pairs_file(path):
            try:
                out.append((collection.index(a), collection.index(b)))
            except InputError as e:
                raise InputError(f"pairs file {path}: {e}") from None
        return out

    @staticmethod
    def saved_conf(path) -> dict | None:
        """The sampler config recorded in a pairs file's header (None if absent)."""
        for line in Path(path).read_text().splitlines():
            if line.startswith("# sampler: "):
                try:
                    return json.loads(line[len("# sampler: "):])
                except json.JSONDecodeError:
                    return None
            if line and not line.startswith("#"):
                break
        return None

    def sample_or_load(self, collection: PosedCollection, path) -> list[tuple[int, int]]:
        """Load the pairs saved at ``path`` if it exists (after checking that they were made with this sampler
        config), otherwise sample them and save them there. How a run keeps its pairs across resumes.

        Raises:
            ConfigError: the file was written with a different sampler config.
        """
        path = Path(path)
        if path.is_file():
            saved = self.saved_conf(path)
            if saved is not None and saved != json.loads(self.conf_json()):
                raise ConfigError(f"pairs file {path} was made with another sampler config ({saved}); delete it or "
                                  f"choose another path to sample again")
            return self.load(path, collection)
        pairs = self.sample(collection)
        self.save(path, collection, pairs)
        return pairs


def track_overlaps(collection: PosedCollection, pairs: np.ndarray) -> np.ndarray:
    """Shared 3D points of image pairs.

    Args:
        collection: with ``point_ids``.
        pairs: (M, 2) image index pairs.
    Returns:
        (M, 2) float64: the number of shared points, and ``shared / max(|P_i|, |P_j|)`` (0 when both are empty).
    """
    out = np.zeros((len(pairs), 2))
    if len(pairs) == 0:
        return out
    n = len(collection)
    # every observation (image, point); images that share a point form pairs: count them per image pair
    img = np.concatenate([np.full(len(p), k, np.int64) for k, p in enumerate(collection.point_ids)])
    pts = np.concatenate(collection.point_ids) if len(img) else np.zeros(0, np.int64)
    order = np.lexsort((img, pts))
    img, pts = img[order], pts[order]
    starts = np.flatnonzero(np.r_[True, pts[1:] != pts[:-1]]) if len(pts) else np.zeros(0, np.int64)
    ends = np.r_[starts[1:], len(pts)]
    keys = []
    for s, e in zip(starts, ends):
        if e - s >= 2:
            a, b = np.triu_indices(int(e - s), 1)
            keys.append(img[s + a] * n + img[s + b])  # img sorted within a point: img[s + a] < img[s + b]
    uniq, counts = (np.unique(np.concatenate(keys), return_counts=True) if keys
                    else (np.zeros(0, np.int64), np.zeros(0, np.int64)))
    sizes = np.array([len(p) for p in collection.point_ids])
    pairs = np.asarray(pairs, np.int64)
    lo, hi = pairs.min(1), pairs.max(1)
    wanted = lo * n + hi
    if len(uniq):
        pos = np.minimum(np.searchsorted(uniq, wanted), len(uniq) - 1)
        shared = np.where(uniq[pos] == wanted, counts[pos], 0)
    else:
        shared = np.zeros(len(wanted), np.int64)
    denom = np.maximum(sizes[lo], sizes[hi])
    out[:, 0] = shared
    out[:, 1] = np.where(denom > 0, shared / np.maximum(denom, 1), 0.0)
    return out


# ------------------------------------------------------------------------------------------------ dataset
default_conf = {
    "resize": none_or(int, list),  # [H, W] of both images, or an int: the longest side of each image, aspect kept
    # (rounded); K scaled by diag(W'/W, H'/H, 1), depth resized nearest; None: native
    "depth": True,  # include depth0/depth1 when the collection has depth
}


class PosedPairs:
    """Two-view items from pairs of a :class:`PosedCollection` (torch-style dataset: ``len``, indexing).

    Args:
        collection: the posed images.
        pairs: (i, j) image index pairs or (name0, name1) name pairs (e.g. from :meth:`PairSampler.sample`).
        conf: overrides of :data:`default_conf`.

    Items::

        name            str, "<collection name>/<name0>_<name1>" ("synthetic:..." for rendered collections)
        image0, image1  uint8 (H, W, 3) RGB (resized to conf.resize when set)
                        (``pair(i, j)`` gives the same item for any two posed images)
        K0, K1          float64 (3, 3) featlab pixels of the returned images
        T_0to1          float64 (4, 4), x_cam1 = T_0to1 x_cam0
        depth0, depth1  float32 (H, W) metres, 0 invalid (only when the collection has depth and conf.depth)
        synthetic       bool, True for generated collections

    Raises:
        InputError: an unknown image or one without a pose in ``pairs``; unreadable files (when loaded).
    """

    def __init__(self, collection: PosedCollection, pairs, conf=None):
        self.conf = resolve_conf(default_conf, conf, "posed_pairs")
        resize = self.conf.resize
        if isinstance(resize, int):
            if resize < 8:
                raise ConfigError(f"posed_pairs.resize must be a longest side >= 8, [H, W] or null, got {resize}")
            self.size = None
            self.longest_side = resize
        elif resize is not None:
            try:
                size = (int(resize[0]), int(resize[1]))
                ok = len(resize) == 2 and min(size) >= 8
            except (TypeError, ValueError, IndexError):
                ok = False
            if not ok:
                raise ConfigError(f"posed_pairs.resize must be [H, W] with sides >= 8, an int or null, got {resize}")
            self.size, self.longest_side = size, None
        else:
            self.size = self.longest_side = None
        self.collection = collection
        self.pairs = [(collection.index(a), collection.index(b)) for a, b in pairs]
        for i, j in self.pairs:
            for k in (i, j):
                if not collection.pose_valid[k]:
                    raise InputError(f"pair ({collection.names[i]}, {collection.names[j]}): image "
                                     f"'{collection.names[k]}' has no pose")

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict:
        n = len(self.pairs)
        if not -n <= k < n:
            raise IndexError(f"pair index {k} out of range for {n} pairs")
        return self.pair(*self.pairs[int(k) % n])

    def image_name(self, i: int) -> str:
        """The name of image i of the collection."""
        return self.collection.names[self.collection.index(i)]

    def output_size(self, image_size) -> tuple[int, int] | None:
        """(H', W') that an image of ``image_size`` (H, W) is resized to, or None to keep it."""
        if self.longest_side is not None:
            scale = self.longest_side / max(image_size)
            return max(1, round(image_size[0] * scale)), max(1, round(image_size[1] * scale))
        return self.size

    def pair(self, i: int, j: int) -> dict:
        """The item of images i and j (indices or names; see the class docstring)."""
        c = self.collection
        i, j = c.index(i), c.index(j)
        with_depth = bool(self.conf.depth) and c.has_depth
        item = {"name": f"{c.name}/{c.names[i]}_{c.names[j]}", "T_0to1": c.relative_pose(i, j),
                "synthetic": c.synthetic}
        for s, idx in (("0", i), ("1", j)):
            image, K = c.load_image(idx), c.K[idx].copy()
            depth = c.load_depth(idx) if with_depth else None
            if depth is not None and depth.shape != image.shape[:2]:
                raise InputError(f"image '{c.names[idx]}' of '{c.name}': depth {depth.shape[::-1]} and colour "
                                 f"{image.shape[1::-1]} sizes differ")
            size = self.output_size(image.shape[:2])
            if size is not None:
                image, K, depth = resize_view(image, K, size, depth)
            item[f"image{s}"], item[f"K{s}"] = image, K
            if depth is not None:
                item[f"depth{s}"] = depth
        return item

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]
