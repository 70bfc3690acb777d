"""RGB-D sequences with camera poses (Microsoft 7-Scenes, TUM RGB-D) and depth-checked image pairs.

Layouts (``conf.layout = "auto"`` picks the one present):

- **7-Scenes**: ``frame-XXXXXX.color.(jpg|png)``, ``frame-XXXXXX.depth.png`` (uint16 millimetres; 0 and 65535
  invalid), ``frame-XXXXXX.pose.txt`` (4x4 camera-to-world), optional ``camera-intrinsics.txt`` (3x3). The colour
  images are read with fx = fy = 525 and the principal point at the centre of the 640x480 frames (320, 240) when the
  file is absent or holds the published values (fx = fy = 585, cx = 320, cy = 240: the depth sensor's); any other
  file (a rendered sequence, your own calibration) is used as is.
- **TUM RGB-D**: ``rgb.txt`` / ``depth.txt`` (``timestamp path`` lines), ``groundtruth.txt`` (``timestamp tx ty tz
  qx qy qz qw``, camera-to-world), depth PNGs in units of 1/5000 m. Colour frames are associated with the nearest
  depth image and pose within ``conf.tum_max_dt`` seconds. Intrinsics default to TUM's ROS defaults (fx = fy = 525,
  principal point 319.5, 239.5 in OpenCV pixels = 320, 240 in featlab pixels).

Intrinsics are an explicit choice (``conf.focal``, ``conf.principal_point``), described in one line by
:attr:`RGBDSequence.intrinsics` (every benchmark output quotes it). 7-Scenes ships fx = fy = 585, the depth sensor's
focal length; the colour images fit a shorter one. Measured on redkitchen frames 0-499 (SIFT ratio-test matches, 20
pairs each at gaps 30 and 60, poses fixed to the ground truth, only the focal varied): the median Sampson distance of
the matches is smallest near f = 510-520 (gap 30: 1.76 px at 510, 1.87 at 520, ~4.5 at 585; gap 60: 3.7, 4.0 and ~9
px) and the per-pair best focal has median 510. The default for 7-Scenes colour images is therefore 525, the usual
Kinect v1 colour-camera value (TUM's ROS default); ``focal: 585`` (CLI ``--focal 585``) still reads the file's. The
principal point (320, 240) is the exact centre of a 640x480 image in featlab pixels.

Poses: ``T_c2w`` maps camera to world coordinates; ``T_0to1 = inv(T_c2w_1) @ T_c2w_0`` maps camera-0 to camera-1
coordinates (``x_cam1 = T_0to1 x_cam0``, the data contract's convention). The depth maps of 7-Scenes are registered to
the colour camera only approximately; treat depth-based correspondences as degree-level, not sub-pixel, ground truth.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np

from ..conf import none_or, resolve_conf
from ..io.text import read_matrix_file
from ..errors import ConfigError, InputError
from ..io.atomic import atomic_write_text
from ..io.image import read_image

default_conf = {
    "layout": "auto",  # auto | 7scenes | tum
    # focal length fx = fy in pixels. None: the layout's value (7-Scenes: 525, the colour camera's, unless the
    # intrinsics file holds other values than the published 585 of the depth sensor, see the module docstring;
    # TUM: 525)
    "focal": none_or(float),
    "principal_point": none_or(list),  # [cx, cy] in featlab pixels; None: the layout's value (image centre, 320, 240)
    "depth_scale": none_or(float),  # metres per depth unit; None: the layout's (7-Scenes 0.001, TUM 0.0002)
    "tum_max_dt": 0.02,  # TUM: largest time difference (s) accepted when associating colour, depth and pose
    "depth_cache_size": 64,  # depth maps kept in memory while sampling pairs
}

SEVEN_SCENES_K = (585.0, 320.0, 240.0)  # published 7-Scenes camera-intrinsics.txt (fx = fy, cx, cy): the depth sensor
SEVEN_SCENES_COLOUR_K = (525.0, 320.0, 240.0)  # the colour camera: focal 525, principal point at the image centre
TUM_K = (525.0, 320.0, 240.0)  # TUM ROS defaults, principal point converted to featlab pixels

_FRAME_RE = re.compile(r"^(frame-\d+)\.color\.(png|jpg|jpeg)$", re.IGNORECASE)


def quaternion_to_rotation(q) -> np.ndarray:
    """Unit quaternion (qx, qy, qz, qw) -> (3, 3) rotation matrix."""
    x, y, z, w = np.asarray(q, np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def relative_pose(T_c2w_0: np.ndarray, T_c2w_1: np.ndarray) -> np.ndarray:
    """``T_0to1 = inv(T_c2w_1) @ T_c2w_0``: camera-0 coordinates -> camera-1 coordinates."""
    return np.linalg.inv(T_c2w_1) @ T_c2w_0


def _read_tum_list(path: Path, min_fields: int) -> list[list[str]]:
    if not path.is_file():
        raise InputError(f"TUM RGB-D file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < min_fields:
            raise InputError(f"malformed line {n} in {path}: expected at least {min_fields} fields, got '{line}'")
        rows.append(fields)
    if not rows:
        raise InputError(f"no entries in {path}")
    return rows


def _nearest(times: np.ndarray, t: float) -> int:
    k = int(np.searchsorted(times, t))
    candidates = [c for c in (k - 1, k) if 0 <= c < len(times)]
    return min(candidates, key=lambda c: abs(times[c] - t))


def write_pairs_file(path, pairs, header: str | None = None) -> Path:
    """Write pairs (two tokens each) one per line, atomically. ``header`` becomes a leading ``#`` comment."""
    lines = [f"# {header}"] if header else []
    for a, b in pairs:
        a, b = str(a), str(b)
        if not a or not b or any(c.isspace() for c in a + b):
            raise InputError(f"pair entries must be non-empty and contain no whitespace: {a!r} {b!r}")
        lines.append(f"{a} {b}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_pairs_file(path) -> list[tuple[str, str]]:
    """Read a pairs text file: one ``a b`` pair per line, blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs file not found: {path}")
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 2:
            raise InputError(f"malformed line {n} in pairs file {path}: expected two entries, got '{line}'")
        pairs.append((fields[0], fields[1]))
    return pairs


class RGBDSequence:
    """One RGB-D sequence with poses.

    Args:
        root: the sequence folder.
        conf: overrides of :data:`default_conf`.

    Attributes:
        frames: list of frame names (7-Scenes "frame-000123", TUM the colour timestamp), indexed by ``i``.
        K: (3, 3) float64 intrinsics in featlab pixels, shared by all frames.
        intrinsics: one line naming K's values and where they come from (quoted by every benchmark output).
        poses_c2w: (N, 4, 4) float64 camera-to-world poses (NaN for a frame whose pose is not finite).

    Raises:
        InputError: missing folder, unknown layout, missing/malformed files.
        ConfigError: bad config values.
    """

    def __init__(self, root, conf=None):
        self.conf = resolve_conf(default_conf, conf, "rgbd")
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"RGB-D sequence folder not found: {self.root}")
        layout = self.conf.layout
        if layout == "auto":
            if (self.root / "rgb.txt").is_file() and (self.root / "groundtruth.txt").is_file():
                layout = "tum"
            elif any(_FRAME_RE.match(p.name) for p in self.root.iterdir()):
                layout = "7scenes"
            else:
                raise InputError(f"{self.root} is neither a 7-Scenes sequence (frame-XXXXXX.color.jpg ...) nor a "
                                 "TUM RGB-D sequence (rgb.txt, depth.txt, groundtruth.txt)")
        if layout == "7scenes":
            self._init_7scenes()
        elif layout == "tum":
            self._init_tum()
        else:
            raise ConfigError(f"rgbd.layout must be auto, 7scenes or tum, got '{layout}'")
        self.layout = layout
        self.name = self.root.name
        if self.conf.depth_scale is not None:
            self.depth_scale = float(self.conf.depth_scale)
        f, cx, cy = self._file_K
        given = []
        if self.conf.focal is not None:
            f = float(self.conf.focal)
            if f <= 0:
                raise ConfigError(f"rgbd.focal must be positive, got {f}")
            given.append("focal")
        if self.conf.principal_point is not None:
            if len(self.conf.principal_point) != 2:
                raise ConfigError(f"rgbd.principal_point must be [cx, cy], got {self.conf.principal_point}")
            cx, cy = (float(v) for v in self.conf.principal_point)
            given.append("principal point")
        self.K = np.array([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]])
        origin = self._K_origin if not given else "given" if len(given) == 2 else \
            f"{given[0]} given, otherwise {self._K_origin}"
        self.intrinsics = f"fx = fy = {f:g} px, principal point ({cx:g}, {cy:g}) ({origin})"
        self._index = {name: i for i, name in enumerate(self.frames)}
        self.covisibilities: dict[tuple[int, int], float] = {}
        self._make_cache()

    def _make_cache(self):
        self._load_depth = functools.lru_cache(maxsize=max(int(self.conf.depth_cache_size), 0))(self._read_depth)

    def __getstate__(self):  # picklable for DataLoader workers: the depth cache is not sent
        state = dict(self.__dict__)
        state.pop("_load_depth", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._make_cache()

    # ----------------------------------------------------------------------------------------------- layouts
    def _init_7scenes(self):
        colors = sorted((m.group(1), p) for p in self.root.iterdir() if (m := _FRAME_RE.match(p.name)))
        if not colors:
            raise InputError(f"no 7-Scenes frames (frame-XXXXXX.color.jpg) in {self.root}")
        self.frames, self._color_paths, self._depth_paths, poses = [], [], [], []
        for name, color in colors:
            depth = self.root / f"{name}.depth.png"
            if not depth.is_file():
                raise InputError(f"7-Scenes frame {name} has no depth image {depth}")
            poses.append(read_matrix_file(self.root / f"{name}.pose.txt", (4, 4), "pose"))
            self.frames.append(name)
            self._color_paths.append(color)
            self._depth_paths.append(depth)
        self.poses_c2w = self._clean_poses(poses)
        intr = self.root / "camera-intrinsics.txt"
        self._file_K = SEVEN_SCENES_COLOUR_K
        self._K_origin = "7-Scenes colour camera; no camera-intrinsics.txt"
        if intr.is_file():
            K = read_matrix_file(intr, (3, 3), "camera intrinsics")
            if abs(K[0, 0] - K[1, 1]) > 1e-6 * K[0, 0]:
                raise InputError(f"{intr}: fx != fy is not supported (fx={K[0, 0]}, fy={K[1, 1]})")
            file_K = (float(K[0, 0]), float(K[0, 2]), float(K[1, 2]))
            if np.allclose(file_K, SEVEN_SCENES_K):
                self._K_origin = "7-Scenes colour camera; camera-intrinsics.txt's 585 is the depth sensor's"
            else:
                self._file_K, self._K_origin = file_K, "camera-intrinsics.txt"
        self.depth_scale = 1e-3
        self._invalid_depth = (0, 65535)

    def _init_tum(self):
        rgb = _read_tum_list(self.root / "rgb.txt", 2)
        depth = _read_tum_list(self.root / "depth.txt", 2)
        gt = _read_tum_list(self.root / "groundtruth.txt", 8)
        try:
            d_times = np.array([float(r[0]) for r in depth])
            g = np.array([[float(v) for v in r[:8]] for r in gt])
            r_times = [float(r[0]) for r in rgb]
        except ValueError as e:
            raise InputError(f"malformed TUM RGB-D lists in {self.root}: {e}") from None
        d_order, g_order = np.argsort(d_times), np.argsort(g[:, 0])
        d_times, g = d_times[d_order], g[g_order]
        max_dt = float(self.conf.tum_max_dt)
        self.frames, self._color_paths, self._depth_paths, poses = [], [], [], []
        for (t_str, path, *_), t in zip(rgb, r_times):
            kd, kg = _nearest(d_times, t), _nearest(g[:, 0], t)
            if abs(d_times[kd] - t) > max_dt or abs(g[kg, 0] - t) > max_dt:
                continue
            T = np.eye(4)
            T[:3, :3] = quaternion_to_rotation(g[kg, 4:8])
            T[:3, 3] = g[kg, 1:4]
            self.frames.append(t_str)
            self._color_paths.append(self.root / path)
            self._depth_paths.append(self.root / depth[d_order[kd]][1])
            poses.append(T)
        if not self.frames:
            raise InputError(f"no TUM RGB-D frame of {self.root} has a depth image and a pose within "
                             f"{max_dt} s (rgbd.tum_max_dt)")
        self.poses_c2w = self._clean_poses(poses)
        self._file_K = TUM_K
        self._K_origin = "TUM RGB-D default"
        self.depth_scale = 1.0 / 5000.0
        self._invalid_depth = (0,)

    @staticmethod
    def _clean_poses(poses) -> np.ndarray:
        poses = np.stack(poses).astype(np.float64)
        bad = ~np.isfinite(poses).all((1, 2))
        poses[bad] = np.nan
        return poses

    # ----------------------------------------------------------------------------------------------- frames
    def __len__(self) -> int:
        return len(self.frames)

    def image_name(self, i: int) -> str:
        """The name of frame i ("frame-000123"; TUM: the colour timestamp)."""
        return self.frames[self._check_index(i)]

    def pose_valid(self, i: int) -> bool:
        """True if frame i has a finite pose."""
        return bool(np.isfinite(self.poses_c2w[i]).all())

    def _read_depth(self, i: int) -> np.ndarray:
        from ..io.depth import read_depth

        return read_depth(self._depth_paths[i], self.depth_scale, self._invalid_depth)

    def load_depth(self, i: int) -> np.ndarray:
        """(H, W) float32 depth in metres of frame i, 0 where invalid (a copy: the cached map stays intact)."""
        return self._load_depth(self._check_index(i)).copy()

    def _check_index(self, i: int) -> int:
        n = len(self.frames)
        if not -n <= int(i) < n:
            raise IndexError(f"frame index {i} out of range for {n} frames")
        return int(i) % n

    def load_image(self, i: int):
        """The colour image of frame i only (uint8 RGB), without decoding its depth map."""
        return read_image(self._color_paths[self._check_index(i)])

    def load_frame(self, i: int) -> dict:
        """Frame i.

        Returns:
            dict with ``name`` (str), ``image`` uint8 (H, W, 3) RGB, ``depth`` float32 (H, W) metres (0 invalid),
            ``T_c2w`` and ``T_w2c`` float64 (4, 4), ``K`` float64 (3, 3) featlab pixels.
        Raises:
            InputError: unreadable files, a frame without a finite pose, depth and colour of different sizes.
        """
        i = self._check_index(i)
        if not self.pose_valid(i):
            raise InputError(f"frame {self.frames[i]} of {self.root} has no valid (finite) pose")
        image = read_image(self._color_paths[i])
        depth = self.load_depth(i)
        if depth.shape != image.shape[:2]:
            raise InputError(f"frame {self.frames[i]} of {self.root}: depth {depth.shape[::-1]} and colour "
                             f"{image.shape[1::-1]} sizes differ")
        T_c2w = self.poses_c2w[i].copy()
        return {"name": self.frames[i], "image": image, "depth": depth, "T_c2w": T_c2w,
                "T_w2c": np.linalg.inv(T_c2w), "K": self.K.copy()}

    def relative_pose(self, i: int, j: int) -> np.ndarray:
        """``T_0to1`` (4, 4) from frame i's camera to frame j's camera."""
        return relative_pose(self.poses_c2w[self._check_index(i)], self.poses_c2w[self._check_index(j)])

    def pair(self, i: int, j: int) -> dict:
        """Two frames as a two-view item.

        Returns:
            dict with ``name`` "<sequence>/<frame i>_<frame j>", ``image0``/``image1`` uint8 (H, W, 3) RGB,
            ``depth0``/``depth1`` float32 (H, W) metres (0 invalid), ``K0``/``K1`` float64 (3, 3), ``T_0to1``
            float64 (4, 4) with ``x_cam1 = T_0to1 x_cam0``.
        """
        f0, f1 = self.load_frame(i), self.load_frame(j)
        return {
            "name": f"{self.name}/{f0['name']}_{f1['name']}",
            "image0": f0["image"], "image1": f1["image"],
            "depth0": f0["depth"], "depth1": f1["depth"],
            "K0": f0["K"], "K1": f1["K"],
            "T_0to1": relative_pose(f0["T_c2w"], f1["T_c2w"]),
        }

    # ----------------------------------------------------------------------------------------------- pairs
    def pair_covisibility(self, i: int, j: int, stride: int = 8) -> float:
        """Symmetric covisibility of frames i and j: the smaller of the two directions' fractions of valid depth
        pixels that land inside the other view with consistent depth (:func:`featlab.geometry.depth.covisibility`)."""
        from ..geometry.depth import covisibility

        if not (self.pose_valid(i) and self.pose_valid(j)):
            return 0.0
        d0, d1 = self._load_depth(self._check_index(i)), self._load_depth(self._check_index(j))
        T = self.relative_pose(i, j)
        c01 = covisibility(d0, d1, self.K, self.K, T, stride=stride)
        c10 = covisibility(d1, d0, self.K, self.K, np.linalg.inv(T), stride=stride)
        return float(min(c01, c10))

    def make_pairs(self, gaps=(10, 30, 60), min_covisibility: float = 0.3, max_pairs_per_gap: int | None = 50,
                   frame_range=(0, 500), seed: int = 0, max_covisibility: float = 1.0,
                   stride: int = 8) -> list[tuple[int, int]]:
        """Sample frame pairs ``(i, i + gap)`` whose covisibility is within bounds.

        For each gap, the candidate first frames ``i`` (both frames inside ``frame_range`` and with valid poses)
        are visited in an order shuffled by ``numpy.random.default_rng([seed, gap])``; a candidate is kept when
        ``min_covisibility <= covisibility <= max_covisibility`` (:meth:`pair_covisibility`), until
        ``max_pairs_per_gap`` pairs are kept. With ``max_pairs_per_gap=None`` every candidate is tested (the seed
        then plays no role); this costs ~25 ms a pair at 640x480 (depth decoding and two covisibility passes).

        Args:
            gaps: frame index differences.
            frame_range: (start, stop) frame indices, stop exclusive and clipped to the sequence; None: all.
        Returns:
            list of (i, j) frame indices, grouped by gap in the given order, sorted by i within a gap. The
            covisibility of each kept pair is stored in ``self.covisibilities[(i, j)]``.
        """
        if not 0.0 <= min_covisibility <= max_covisibility <= 1.0:
            raise ConfigError(f"need 0 <= min_covisibility <= max_covisibility <= 1, got {min_covisibility}, "
                              f"{max_covisibility}")
        n = len(self.frames)
        start, stop = (0, n) if frame_range is None else (max(0, int(frame_range[0])), min(n, int(frame_range[1])))
        pairs = []
        for gap in gaps:
            gap = int(gap)
            if gap < 1:
                raise ConfigError(f"pair gaps must be positive, got {gap}")
            candidates = np.array([i for i in range(start, stop - gap)
                                   if self.pose_valid(i) and self.pose_valid(i + gap)], dtype=np.int64)
            # with a cap the visiting order decides which pairs are kept: shuffle it; without one every candidate
            # is tested and the natural order reuses the cached depth maps
            if max_pairs_per_gap is not None:
                candidates = np.random.default_rng([int(seed), gap]).permutation(candidates)
            kept = []
            for i in candidates:
                if max_pairs_per_gap is not None and len(kept) >= int(max_pairs_per_gap):
                    break
                c = self.pair_covisibility(int(i), int(i) + gap, stride=stride)
                if min_covisibility <= c <= max_covisibility:
                    kept.append((int(i), int(i) + gap))
                    self.covisibilities[kept[-1]] = c
            pairs.extend(sorted(kept))
        return pairs

    def save_pairs(self, path, pairs) -> Path:
        """Write pairs of frame indices as lines of frame names ("frame-000000 frame-000030"), atomically."""
        names = [(self.frames[self._check_index(i)], self.frames[self._check_index(j)]) for i, j in pairs]
        return write_pairs_file(path, names, header=f"RGB-D pairs of {self.name} (frame names)")

    def load_pairs(self, path) -> list[tuple[int, int]]:
        """Read a pairs file of frame names (or integer frame indices) and return frame index pairs.

        Raises:
            InputError: missing file, malformed line, unknown frame name, index out of range.
        """
        out = []
        for a, b in read_pairs_file(path):
            out.append((self._resolve(a, path), self._resolve(b, path)))
        return out

    def _resolve(self, token: str, path) -> int:
        if token in self._index:
            return self._index[token]
        if token.lstrip("-").isdigit():
            i = int(token)
            if 0 <= i < len(self.frames):
                return i
            raise InputError(f"pairs file {path}: frame index {i} out of range for {len(self.frames)} frames")
        raise InputError(f"pairs file {path}: unknown frame '{token}' in sequence {self.root}")
