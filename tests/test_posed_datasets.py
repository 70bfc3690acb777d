"""Posed image collections: COLMAP models, pose logs, CAPS MegaDepth layout, rendered synthetic scenes, the pair
sampler and the two-view dataset (tiny fixtures made in the tests)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from featlab.datasets import posed
from featlab.datasets.colmap import read_colmap
from featlab.datasets.megadepth import read_megadepth_caps
from featlab.datasets.posed import PairSampler, PosedCollection, PosedPairs, from_rgbd, invert_rigid
from featlab.datasets.poselog import read_intrinsics, read_pose_log
from featlab.datasets.render import render, render_collection, write_7scenes
from featlab.datasets.rgbd import RGBDSequence
from featlab.errors import ConfigError, InputError
from featlab.geometry.depth import covisibility, warp_points_depth

DOCS = Path(__file__).resolve().parents[1] / "docs" / "examples"


def rot_y(deg: float) -> np.ndarray:
    """Rotation about the y axis (camera y points down: positive angles turn the view to the right)."""
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def c2w(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def write_png(path: Path, size=(48, 64), value: int = 128):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((*size, 3), value, np.uint8))


# ------------------------------------------------------------------------------------------------ COLMAP
def make_colmap_model(root: Path, model: str = "PINHOLE", params=(100.0, 110.0, 32.5, 24.0), write_images=True):
    """Two cameras' views of five 3D points: image a sees points 0-4, image b sees points 0-2."""
    import pycolmap

    w, h = 64, 48
    X = np.array([[0.0, 0.0, 5.0], [0.5, 0.2, 5.0], [-0.4, 0.3, 4.0], [0.3, -0.3, 6.0], [-0.2, -0.1, 5.5]])
    poses = {"a.png": c2w(np.eye(3), [0, 0, 0]), "b.png": c2w(rot_y(10.0), [0.3, 0.05, 0.1])}  # camera-to-world
    K = np.array([[params[0], 0, params[2]], [0, params[1], params[3]], [0, 0, 1]]) if model == "PINHOLE" else None
    rec = pycolmap.Reconstruction()
    rec.add_camera_with_trivial_rig(pycolmap.Camera(model=model, width=w, height=h, params=list(params), camera_id=1))
    seen = {"a.png": [0, 1, 2, 3, 4], "b.png": [0, 1, 2]}
    projections = {}
    for image_id, (name, T_c2w) in enumerate(poses.items(), 1):
        T_w2c = np.linalg.inv(T_c2w)
        Xc = X[seen[name]] @ T_w2c[:3, :3].T + T_w2c[:3, 3]
        uv = Xc @ (K if K is not None else np.eye(3)).T
        uv = uv[:, :2] / uv[:, 2:]
        projections[name] = uv
        image = pycolmap.Image(name=name, keypoints=uv, camera_id=1, image_id=image_id)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(T_w2c[:3, :4]))
        if write_images:
            write_png(root / "images" / name, (h, w))
    for k in range(len(X)):
        track = pycolmap.Track()
        for image_id, name in ((1, "a.png"), (2, "b.png")):
            if k in seen[name]:
                track.add_element(image_id, seen[name].index(k))
        rec.add_point3D(X[k], track)
    model_dir = root / "sparse" / "0"
    model_dir.mkdir(parents=True)
    rec.write(str(model_dir))
    return model_dir, poses, X, projections


class TestColmap:
    def test_reads_intrinsics_poses_and_tracks(self, tmp_path):
        model_dir, poses, X, projections = make_colmap_model(tmp_path)
        coll = read_colmap(model_dir)  # images found in the standard project layout (sparse/0 next to images)
        assert coll.names == ["a.png", "b.png"]
        assert coll.root == tmp_path / "images"
        K = np.array([[100.0, 0, 32.5], [0, 110.0, 24.0], [0, 0, 1]])
        np.testing.assert_allclose(coll.K, [K, K])
        T_0to1 = np.linalg.inv(poses["b.png"]) @ poses["a.png"]
        np.testing.assert_allclose(coll.relative_pose(0, 1), T_0to1, atol=1e-12)
        # the read model reprojects its points onto the stored keypoints (pixel convention unchanged)
        for i, name in enumerate(coll.names):
            Xc = X[: len(projections[name])] @ coll.T_w2c[i, :3, :3].T + coll.T_w2c[i, :3, 3]
            uv = Xc @ coll.K[i].T
            np.testing.assert_allclose(uv[:, :2] / uv[:, 2:], projections[name], atol=1e-9)
        assert [len(p) for p in coll.point_ids] == [5, 3]
        np.testing.assert_array_equal(coll.image_sizes, [[48, 64], [48, 64]])
        assert coll.load_image(1).shape == (48, 64, 3)

    def test_track_covisibility_and_sampler(self, tmp_path):
        coll = read_colmap(make_colmap_model(tmp_path)[0])
        np.testing.assert_allclose(posed.track_overlaps(coll, np.array([[0, 1]])), [[3, 0.6]])
        assert PairSampler({"min_covisibility": 0.5}).sample(coll) == [(0, 1)]  # auto: tracks
        assert PairSampler({"min_covisibility": 0.7}).sample(coll) == []
        assert PairSampler({"min_covisibility": 0.5, "min_shared_points": 4}).sample(coll) == []

    def test_unknown_camera_model(self, tmp_path):
        model_dir = make_colmap_model(tmp_path, "OPENCV_FISHEYE", (100, 100, 32, 24, 0.1, 0, 0, 0))[0]
        with pytest.raises(InputError, match="OPENCV_FISHEYE"):
            read_colmap(model_dir)

    def test_distortion_policy(self, tmp_path, caplog):
        model_dir = make_colmap_model(tmp_path, "SIMPLE_RADIAL", (100, 32, 24, 0.05))[0]
        with pytest.raises(InputError, match="distortion"):
            read_colmap(model_dir, conf={"distortion": "error"})
        with caplog.at_level(logging.WARNING):
            coll = read_colmap(model_dir)
        assert "distortion" in caplog.text
        np.testing.assert_allclose(coll.K[0], [[100, 0, 32], [0, 100, 24], [0, 0, 1]])

    def test_missing_inputs(self, tmp_path):
        with pytest.raises(InputError, match="not found"):
            read_colmap(tmp_path / "nope")
        (tmp_path / "empty").mkdir()
        with pytest.raises(InputError, match="not a COLMAP sparse model"):
            read_colmap(tmp_path / "empty")
        model_dir = make_colmap_model(tmp_path, write_images=False)[0]
        (tmp_path / "images").mkdir()
        with pytest.raises(InputError, match="missing"):
            read_colmap(model_dir, image_dir=tmp_path / "images")


# ------------------------------------------------------------------------------------------------ pose log
def example_log(tmp_path: Path) -> Path:
    """The documented example (docs/examples) with tiny images of the size stated in its intrinsics file."""
    shutil.copy(DOCS / "poselog_example.csv", tmp_path / "log.csv")
    shutil.copy(DOCS / "poselog_intrinsics.yaml", tmp_path / "intrinsics.yaml")
    for k in range(3):
        write_png(tmp_path / f"frame_000{k}.jpg", (480, 640))
    return tmp_path / "log.csv"


def write_log(tmp_path: Path, lines: list[str], header="image,tx,ty,tz,qw,qx,qy,qz", images=("a.png", "b.png")):
    for name in images:
        write_png(tmp_path / name)
    (tmp_path / "K.txt").write_text("100 100 32 24 64 48 featlab\n")
    path = tmp_path / "log.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path, tmp_path / "K.txt"


class TestPoseLog:
    def test_documented_example(self, tmp_path):
        csv_path = example_log(tmp_path)
        coll = read_pose_log(csv_path, tmp_path / "intrinsics.yaml")
        assert coll.names == ["frame_0000.jpg", "frame_0001.jpg", "frame_0002.jpg"]
        np.testing.assert_allclose(coll.K[0], [[525, 0, 320], [0, 525, 240], [0, 0, 1]])  # opencv +0.5
        # hand computation: T_0to1 = inv(T_c2w_1) T_c2w_0 = [R^T, -R^T t] with R = R_y(-10 deg), t = (0.1, 0, 0)
        R = rot_y(-10.0)
        expected = np.eye(4)
        expected[:3, :3], expected[:3, 3] = R.T, -R.T @ [0.1, 0.0, 0.0]
        np.testing.assert_allclose(coll.relative_pose(0, 1), expected, atol=1e-6)
        np.testing.assert_allclose(expected[:3, 3], [-0.0984808, 0.0, 0.0173648], atol=1e-7)  # numbers in the docs
        T_1to2 = np.array([[0.984808, 0, 0.173648, -0.11107], [0, 1, 0, 0], [-0.173648, 0, 0.984808, -0.012783],
                           [0, 0, 0, 1]])
        np.testing.assert_allclose(coll.relative_pose(1, 2), T_1to2, atol=2e-6)
        assert coll.load_image(2).shape == (480, 640, 3)

    def test_arkit_vs_opencv_convention(self, tmp_path):
        # camera 1 is 10 cm higher along world y: down in OpenCV-axis logs, up in ARKit-axis logs
        path, K = write_log(tmp_path, ["a.png,0,0,0,1,0,0,0", "b.png,0,0.1,0,1,0,0,0"])
        cv = read_pose_log(path, K)
        ar = read_pose_log(path, K, conf={"convention": "arkit"})
        np.testing.assert_allclose(cv.T_c2w[0][:3, :3], np.eye(3))
        np.testing.assert_allclose(ar.T_c2w[0][:3, :3], np.diag([1.0, -1.0, -1.0]))  # looks along world -z, y up
        np.testing.assert_allclose(cv.relative_pose(0, 1)[:3, 3], [0, -0.1, 0], atol=1e-12)
        np.testing.assert_allclose(ar.relative_pose(0, 1)[:3, 3], [0, 0.1, 0], atol=1e-12)  # moved up = image y up
        np.testing.assert_allclose(ar.relative_pose(0, 1)[:3, :3], np.eye(3), atol=1e-12)

    def test_quaternion_checks(self, tmp_path, caplog):
        path, K = write_log(tmp_path, ["a.png,0,0,0,1.004,0,0,0", "b.png,0,0,0,0,0,0.7071068,0.7071068"])
        with caplog.at_level(logging.WARNING):
            coll = read_pose_log(path, K)
        assert "normalised" in caplog.text
        np.testing.assert_allclose(coll.T_w2c[0], np.eye(4), atol=1e-12)
        path, K = write_log(tmp_path, ["a.png,0,0,0,1,0,0,0", "b.png,0,0,0,0,0,0,0"])
        with pytest.raises(InputError, match="line 3: zero quaternion"):
            read_pose_log(path, K)
        path, K = write_log(tmp_path, ["a.png,0,0,0,2,0,0,0", "b.png,0,0,0,1,0,0,0"])
        with pytest.raises(InputError, match="line 2: quaternion norm 2"):
            read_pose_log(path, K)

    @pytest.mark.parametrize("line, message", [
        ("b.png,0,0,0,1,0,0", "line 3: expected 8 fields"),
        ("b.png,0,zero,0,1,0,0,0", "line 3: column 'ty' must be a number"),
        ("b.png,0,0,nan,1,0,0,0", "line 3: column 'tz' is not finite"),
        ("a.png,0,0,0,1,0,0,0", "line 3: image 'a.png' already listed on line 2"),
        ("c.png,0,0,0,1,0,0,0", "not found.*'c.png' \\(line 3\\)"),
    ])
    def test_malformed_lines(self, tmp_path, line, message):
        path, K = write_log(tmp_path, ["a.png,0,0,0,1,0,0,0", line])
        with pytest.raises(InputError, match=message):
            read_pose_log(path, K)

    def test_missing_files_and_bad_header(self, tmp_path):
        path, K = write_log(tmp_path, ["a.png,0,0,0,1,0,0,0", "c.png,0,0,0,1,0,0,0"])
        assert read_pose_log(path, K, conf={"missing_images": "skip"}).names == ["a.png"]
        with pytest.raises(InputError, match="pose log not found"):
            read_pose_log(tmp_path / "none.csv", K)
        with pytest.raises(InputError, match="intrinsics file not found"):
            read_pose_log(path, tmp_path / "none.yaml")
        path, K = write_log(tmp_path, ["a.png,0,0,0,1,0,0,0"], header="image,x,y,z,qw,qx,qy,qz")
        with pytest.raises(InputError, match="line 1: header must name the columns.*missing tx, ty, tz"):
            read_pose_log(path, K)
        with pytest.raises(ConfigError):
            read_pose_log(path, K, conf={"convention": "opengl"})

    def test_intrinsics_formats(self, tmp_path):
        f = tmp_path / "k.txt"
        f.write_text("# fx fy cx cy w h convention\n500 510 319.5 239.5 640 480 opencv\n")
        K, size = read_intrinsics(f)
        np.testing.assert_allclose(K, [[500, 0, 320], [0, 510, 240], [0, 0, 1]])
        assert size == (480, 640)
        f.write_text("fx: 500\nfy: 500\ncx: 320\ncy: 240\nwidth: 640\nheight: 480\n")
        with pytest.raises(InputError, match="missing pixel_convention"):
            read_intrinsics(f)
        f.write_text("500 500 320 240 640 480\n")
        with pytest.raises(InputError, match="one line"):
            read_intrinsics(f)
        f.write_text("500 500 900 240 640 480 featlab\n")
        with pytest.raises(InputError, match="outside"):
            read_intrinsics(f)

    def test_wrong_image_size_is_caught(self, tmp_path):
        path, _ = write_log(tmp_path, ["a.png,0,0,0,1,0,0,0"], images=("a.png",))
        (tmp_path / "K2.txt").write_text("100 100 40 30 80 60 featlab\n")
        coll = read_pose_log(path, tmp_path / "K2.txt")
        with pytest.raises(InputError, match="intrinsics are for 80x60"):
            coll.load_image(0)


# ------------------------------------------------------------------------------------------------ MegaDepth
def make_megadepth(root: Path):
    """Two scenes in the CAPS layout; returns the world-to-camera poses by image name."""
    poses = {}
    for scene, names in (("0001", ["p.jpg", "q.jpg", "r.jpg"]), ("0002", ["s.jpg", "t.jpg"])):
        folder = root / "train" / scene / "dense0" / "aligned"
        lines = ["# name w h fx fy cx cy R t"]
        for k, name in enumerate(names):
            T = np.linalg.inv(c2w(rot_y(5.0 * k), [0.2 * k, 0, 0]))
            poses[name] = T
            write_png(folder / "images" / name, (48, 64))
            values = [64, 48, 50, 52, 32, 24] + T[:3, :3].ravel().tolist() + T[:3, 3].tolist()
            lines.append(" ".join([name] + [repr(float(v)) if i > 1 else str(v) for i, v in enumerate(values)]))
        (folder / "img_cam.txt").write_text("\n".join(lines) + "\n")
        (folder / "pairs.txt").write_text(f"{names[0]} {names[1]}\n")
    return poses


class TestMegaDepth:
    def test_reads_caps_layout(self, tmp_path):
        poses = make_megadepth(tmp_path)
        coll, pairs = read_megadepth_caps(tmp_path)
        assert coll.names[0] == "0001/dense0/p.jpg" and len(coll) == 5
        np.testing.assert_array_equal(coll.groups, [0, 0, 0, 1, 1])
        assert [(coll.names[i], coll.names[j]) for i, j in pairs] == [
            ("0001/dense0/p.jpg", "0001/dense0/q.jpg"), ("0002/dense0/s.jpg", "0002/dense0/t.jpg")]
        np.testing.assert_allclose(coll.K[0], [[50, 0, 32], [0, 52, 24], [0, 0, 1]])
        # CAPS: relative = E_2 inv(E_1) with E the world-to-camera [R t]
        np.testing.assert_allclose(coll.relative_pose(0, 1), poses["q.jpg"] @ np.linalg.inv(poses["p.jpg"]),
                                   atol=1e-12)
        sampled = PairSampler({"max_rotation": 180.0}).sample(coll)
        assert sampled == [(0, 1), (0, 2), (1, 2), (3, 4)]  # never across reconstructions
        assert len(PosedPairs(coll, pairs)[1]["image0"]) == 48

    def test_errors(self, tmp_path):
        with pytest.raises(InputError, match="split folder not found"):
            read_megadepth_caps(tmp_path)
        make_megadepth(tmp_path)
        f = tmp_path / "train" / "0002" / "dense0" / "aligned" / "img_cam.txt"
        f.write_text(f.read_text() + "u.jpg 64 48 50\n")
        with pytest.raises(InputError, match="line 4: expected 19 fields"):
            read_megadepth_caps(tmp_path)


# ------------------------------------------------------------------------------------------------ pair sampler
def line_collection(groups=None) -> PosedCollection:
    """Six cameras along world x (baselines and yaw angles chosen by hand, see test_bounds)."""
    xs = [0.0, 0.1, 0.2, 0.5, 1.0, 1.05]
    yaws = [0.0, 0.0, 30.0, 60.0, 100.0, 0.0]
    T_w2c = np.stack([np.linalg.inv(c2w(rot_y(a), [x, 0, 0])) for x, a in zip(xs, yaws)])
    K = np.array([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]])
    return PosedCollection([f"im{k}" for k in range(6)], None, K, T_w2c, groups=groups, name="line")


class TestPairSampler:
    base = {"max_gap": 3, "min_baseline": 0.15, "max_rotation": 80.0, "covisibility": "none"}

    def test_bounds(self):
        coll = line_collection()
        # pairs with gap <= 3: baseline / rotation by hand, e.g. (0, 1) 0.1 m, (1, 4) 100 deg, (4, 5) 0.05 m
        sampler = PairSampler(self.base)
        assert sampler.sample(coll) == [(0, 2), (0, 3), (1, 3), (2, 3), (2, 4), (2, 5), (3, 4), (3, 5)]
        assert sampler.scores[(2, 4)]["rotation"] == pytest.approx(70.0)  # yaw 30 -> 100 degrees
        assert sampler.scores[(2, 5)]["rotation"] == pytest.approx(30.0)
        assert PairSampler({**self.base, "min_gap": 2}).sample(coll) == [(0, 2), (0, 3), (1, 3), (2, 4), (2, 5),
                                                                         (3, 5)]
        assert PairSampler({**self.base, "max_rotation": 45.0}).sample(coll) == [(0, 2), (2, 3), (2, 5), (3, 4)]
        assert PairSampler({**self.base, "max_baseline": 0.45}).sample(coll) == [(0, 2), (1, 3), (2, 3)]
        assert PairSampler({**self.base, "index_range": [1, 4]}).sample(coll) == [(1, 3), (2, 3)]
        assert PairSampler({**self.base, "max_gap": None, "max_rotation": 180.0}).sample(coll) == [
            (i, j) for i in range(6) for j in range(i + 1, 6) if (i, j) not in ((0, 1), (1, 2), (4, 5))]
        grouped = line_collection(groups=[0, 0, 0, 1, 1, 1])
        assert PairSampler(self.base).sample(grouped) == [(0, 2), (3, 4), (3, 5)]

    def test_max_pairs_is_a_seeded_subset(self):
        coll = line_collection()
        full = set(PairSampler(self.base).sample(coll))
        subsets = [PairSampler({**self.base, "max_pairs": 3, "seed": s}).sample(coll) for s in range(8)]
        assert all(len(p) == 3 and set(p) <= full and p == sorted(p) for p in subsets)
        assert PairSampler({**self.base, "max_pairs": 3, "seed": 5}).sample(coll) == subsets[5]
        assert len({tuple(p) for p in subsets}) > 1

    def test_track_covisibility(self):
        coll = line_collection()
        coll.point_ids = [np.array(p) for p in ([1, 2, 3, 4], [3, 4, 5, 6], [1, 2, 3, 4, 5], [9], [9], [9, 10])]
        overlaps = posed.track_overlaps(coll, np.array([[0, 1], [0, 2], [1, 2], [3, 4], [4, 5], [0, 3]]))
        np.testing.assert_allclose(overlaps, [[2, 0.5], [4, 0.8], [3, 0.6], [1, 1.0], [1, 0.5], [0, 0.0]])
        conf = {"max_gap": None, "max_rotation": 180.0, "min_covisibility": 0.5}
        assert PairSampler(conf).sample(coll) == [(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)]
        with pytest.raises(ConfigError, match="no depth"):
            PairSampler({"covisibility": "depth"}).sample(coll)

    def test_depth_covisibility_exact(self):
        # three cameras facing a wall at z = 2 m, shifted along x by 0, 2 and 5 m; each sees x in [-2, 2] m around
        # its centre (W = 64, f = 32): overlaps 1/2 (0-1), 1/4 (1-2), 0 (0-2) on the stride-8 pixel grid
        K = np.array([[32.0, 0, 32], [0, 32, 24], [0, 0, 1]])
        T_w2c = np.stack([np.linalg.inv(c2w(np.eye(3), [x, 0, 0])) for x in (0.0, 2.0, 5.0)])
        depth = np.full((48, 64), 2.0, np.float32)
        coll = PosedCollection(["a", "b", "c"], None, K, T_w2c, depths=[depth] * 3, name="wall")
        sampler = PairSampler({"min_covisibility": 0.2, "max_rotation": 10.0})
        assert sampler.covisibility_source(coll) == "depth"
        assert sampler.sample(coll) == [(0, 1), (1, 2)]
        assert sampler.scores[(0, 1)]["covisibility"] == pytest.approx(0.5)
        assert sampler.scores[(1, 2)]["covisibility"] == pytest.approx(0.25)
        assert sampler.scores[(0, 1)]["baseline"] == pytest.approx(2.0)
        assert PairSampler({"min_covisibility": 0.4}).sample(coll) == [(0, 1)]

    def test_save_load_and_resume(self, tmp_path):
        coll = line_collection()
        sampler = PairSampler(self.base)
        path = tmp_path / "run" / "pairs.txt"
        pairs = sampler.sample_or_load(coll, path)
        text = path.read_text()
        assert text.startswith("# featlab posed pairs") and "im0 im2  # covisibility=nan rotation=30.00" in text
        assert PairSampler.load(path, coll) == pairs
        assert PairSampler(self.base).sample_or_load(coll, path) == pairs  # a resumed run reloads its pairs
        with pytest.raises(ConfigError, match="another sampler config"):
            PairSampler({**self.base, "max_rotation": 20.0}).sample_or_load(coll, path)
        (tmp_path / "bad.txt").write_text("im0 im9\n")
        with pytest.raises(InputError, match="unknown image 'im9'"):
            PairSampler.load(tmp_path / "bad.txt", coll)
        with pytest.raises(InputError, match="not found"):
            PairSampler.load(tmp_path / "none.txt", coll)
        assert not list(path.parent.glob(".*tmp*"))  # atomic write leaves no temporary file

    def test_bad_conf(self):
        with pytest.raises(ConfigError):
            PairSampler({"max_rotaton": 10})
        with pytest.raises(ConfigError):
            PairSampler({"min_covisibility": 0.8, "max_covisibility": 0.5})
        with pytest.raises(ConfigError):
            PairSampler({"covisibility": "sift"})

    def test_collection_checks(self):
        K = np.eye(3)
        with pytest.raises(InputError, match="duplicate"):
            PosedCollection(["a", "a"], None, K, np.stack([np.eye(4)] * 2))
        bad = np.eye(4)
        bad[0, 0] = 2.0
        with pytest.raises(InputError, match="not a rotation"):
            PosedCollection(["a"], None, K, bad[None])
        rounded = np.round(np.linalg.inv(c2w(rot_y(33.0), [1, 2, 3])), 4)  # a pose file written with 4 decimals
        R = PosedCollection(["a"], None, K, rounded[None]).T_w2c[0, :3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)  # snapped to an exact rotation
        np.testing.assert_allclose(R, rounded[:3, :3], atol=1e-4)
        missing = np.full((2, 4, 4), np.nan)
        missing[0] = np.eye(4)
        coll = PosedCollection(["a", "b"], None, K, missing)
        assert PairSampler({"covisibility": "none"}).sample(coll) == []
        with pytest.raises(InputError, match="has no pose"):
            PosedPairs(coll, [(0, 1)])
        with pytest.raises(InputError, match="no images"):
            coll.load_image(0)


# ------------------------------------------------------------------------------------------------ rendering
@pytest.fixture(scope="module")
def rendered():
    return render_collection({"num_frames": 4, "image_size": [96, 128], "step": 4.0, "seed": 3})


class TestRender:
    def test_labels_and_shapes(self, rendered):
        assert rendered.synthetic and rendered.name.startswith("synthetic:")
        assert len(rendered) == 4 and rendered.has_depth
        image, depth = rendered.load_image(0), rendered.load_depth(0)
        assert image.shape == (96, 128, 3) and image.dtype == np.uint8 and image.std() > 10
        assert depth.shape == (96, 128) and (depth > 0).all()  # a closed room: every ray hits a face
        assert depth.max() < np.linalg.norm([6.0, 6.0, 3.0])
        item = PosedPairs(rendered, [(0, 2)])[0]
        assert item["synthetic"] and item["name"] == f"{rendered.name}/frame-000000_frame-000002"

    def test_deterministic(self, rendered):
        again = render_collection({"num_frames": 4, "image_size": [96, 128], "step": 4.0, "seed": 3})
        np.testing.assert_array_equal(again.load_image(3), rendered.load_image(3))
        other = render_collection({"num_frames": 1, "image_size": [96, 128], "seed": 4})
        assert np.abs(other.load_image(0).astype(int) - rendered.load_image(0)).mean() > 10

    def test_depth_and_texture_are_consistent_across_views(self, tmp_path):
        # smooth textures (blurred photos, given as a photo folder) so that bilinear resampling is nearly exact
        import skimage.data

        for name in ("astronaut", "coffee", "chelsea"):
            cv2.imwrite(str(tmp_path / f"{name}.png"), cv2.GaussianBlur(getattr(skimage.data, name)()[..., ::-1],
                                                                        (0, 0), 5))
        rendered = render_collection({"num_frames": 3, "image_size": [96, 128], "step": 4.0, "seed": 3,
                                      "photos": str(tmp_path)})
        # pixels of frame 0 back-projected with their depth and projected into frame 2 land on the same colour
        K = rendered.K[0]
        d0, d1 = rendered.load_depth(0), rendered.load_depth(2)
        im0, im1 = rendered.load_image(0).astype(np.float32), rendered.load_image(2).astype(np.float32)
        h, w = d0.shape
        ys, xs = np.mgrid[0:h, 0:w]
        p0 = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], -1)[None].astype(np.float64)
        T = rendered.relative_pose(0, 2)
        p1, valid = warp_points_depth(p0, d0[None], K, K, T, depth1=d1[None], depth_tolerance=0.01)
        p1, valid = p1[0], valid[0]

        def median_colour_error(offset):
            grid = (p1[valid] - 0.5 + offset).astype(np.float32)  # featlab -> OpenCV pixel centres for cv2.remap
            sampled = cv2.remap(im1, grid[:, 0:1], grid[:, 1:2], cv2.INTER_LINEAR)[:, 0]
            return float(np.median(np.abs(sampled - im0.reshape(-1, 3)[valid]).mean(-1)))

        assert valid.mean() > 0.5  # visible with a depth consistent to 1 %
        err, err_half_pixel = median_colour_error(0.0), median_colour_error(0.5)
        assert err < 1.0 and err_half_pixel > 2 * err, (err, err_half_pixel)  # a half-pixel convention slip shows
        cov = covisibility(d0, d1, K, K, T, stride=4)
        assert 0.5 < cov <= 1.0

    def test_7scenes_round_trip(self, rendered, tmp_path):
        root = write_7scenes(rendered, tmp_path / "synthetic-room")
        assert (root / "frame-000003.color.png").is_file() and (root / "synthetic.json").is_file()
        seq = RGBDSequence(root)
        coll = from_rgbd(seq)
        assert coll.synthetic and coll.name.startswith("synthetic")
        np.testing.assert_allclose(seq.K, rendered.K[0], atol=1e-8)
        np.testing.assert_allclose(coll.T_w2c, rendered.T_w2c, atol=1e-8)
        np.testing.assert_array_equal(coll.load_image(1), rendered.load_image(1))
        np.testing.assert_allclose(coll.load_depth(1), rendered.load_depth(1), atol=6e-4)  # millimetre PNG
        item = PosedPairs(coll, [(0, 1)])[0]
        assert set(item) >= {"image0", "image1", "K0", "K1", "T_0to1", "depth0", "depth1", "name"}
        np.testing.assert_allclose(item["T_0to1"], rendered.relative_pose(0, 1), atol=1e-8)
        with pytest.raises(InputError, match="not empty"):
            write_7scenes(rendered, root)

    def test_render_conf_errors(self):
        with pytest.raises(ConfigError):
            render_collection({"num_frame": 3})
        with pytest.raises(ConfigError, match="camera_radius"):
            render_collection({"camera_radius": [0.5, 1.0]})
        with pytest.raises(InputError):
            render_collection({"photos": "/nonexistent/photos"})


# ------------------------------------------------------------------------------------------------ dataset
class TestPosedPairs:
    def test_resize_scales_intrinsics(self, rendered):
        ds = PosedPairs(rendered, [("frame-000000", "frame-000001")], {"resize": [48, 96]})
        item = ds[0]
        assert item["image0"].shape == (48, 96, 3) and item["depth1"].shape == (48, 96)
        np.testing.assert_allclose(item["K0"], np.diag([96 / 128, 48 / 96, 1.0]) @ rendered.K[0])
        # a 3D point projects to the same relative image position before and after resizing
        X = np.array([0.3, -0.2, 2.0])
        p = rendered.K[0] @ X
        q = item["K0"] @ X
        np.testing.assert_allclose(q[:2] / q[2], p[:2] / p[2] * [96 / 128, 48 / 96])
        assert len(ds) == 1 and len(list(ds)) == 1
        with pytest.raises(IndexError):
            ds[1]
        with pytest.raises(ConfigError):
            PosedPairs(rendered, [], {"resize": [4]})
        with pytest.raises(ConfigError):
            PosedPairs(rendered, [], {"resize": 4})

    def test_resize_longest_side_keeps_aspect(self, rendered):
        ds = PosedPairs(rendered, [], {"resize": 64})  # 96x128 -> 48x64, as 1024x1536 -> 512x768
        assert ds.output_size((96, 128)) == (48, 64) and ds.output_size((128, 96)) == (64, 48)
        item = ds.pair(0, "frame-000002")  # any two posed images, by index or name
        assert item["image0"].shape == (48, 64, 3) and item["depth1"].shape == (48, 64)
        np.testing.assert_allclose(item["K1"], np.diag([0.5, 0.5, 1.0]) @ rendered.K[2])
        np.testing.assert_allclose(item["T_0to1"], rendered.relative_pose(0, 2))
        assert ds.image_name(2) == "frame-000002"

    def test_depth_resize_nearest(self):
        d = np.arange(16, dtype=np.float32).reshape(4, 4)
        # output pixel centre (0.5, 0.5) is input point (1, 1), inside input pixel (1, 1) (as sample_depth_nearest)
        np.testing.assert_array_equal(posed.resize_depth_nearest(d, (2, 2)), [[5, 7], [13, 15]])
        np.testing.assert_array_equal(posed.resize_depth_nearest(d, (8, 8))[::2, ::2], d)

    def test_render_single_view_identity(self, rendered):
        # rendering with the stored pose reproduces the stored frame exactly
        image, depth = render(rendered.scene, rendered.K[1], rendered.T_w2c[1], (96, 128))
        np.testing.assert_array_equal(image, rendered.load_image(1))
        np.testing.assert_array_equal(depth, rendered.load_depth(1))
        assert np.allclose(invert_rigid(invert_rigid(rendered.T_w2c[1])), rendered.T_w2c[1])

    def test_view(self, rendered):
        v = rendered.view(2)
        assert set(v) == {"name", "image", "K", "T_w2c", "T_c2w", "depth"}
        np.testing.assert_allclose(v["T_c2w"] @ v["T_w2c"], np.eye(4), atol=1e-12)
        assert "depth" not in rendered.view(2, depth=False)


SEVEN_SCENES = Path(__file__).resolve().parents[2] / "shared" / "data" / "rgbd" / "7scenes_redkitchen"


@pytest.mark.slow
def test_from_rgbd_on_7scenes():
    if not SEVEN_SCENES.is_dir():
        pytest.skip(f"7-Scenes data not found at {SEVEN_SCENES}")
    seq = RGBDSequence(SEVEN_SCENES, {"focal": 525.0})
    coll = from_rgbd(seq)
    assert len(coll) == len(seq) and not coll.synthetic
    sampler = PairSampler({"index_range": [0, 120], "min_gap": 10, "max_gap": 30, "max_pairs": 4, "seed": 1})
    pairs = sampler.sample(coll)
    assert len(pairs) == 4 and all(10 <= j - i <= 30 for i, j in pairs)
    assert all(s["covisibility"] >= 0.3 and s["rotation"] <= 80 for s in sampler.scores.values())
    i, j = pairs[0]
    item, ref = PosedPairs(coll, [(i, j)])[0], seq.pair(i, j)
    # 7-Scenes rotations deviate from orthonormal by ~2e-4; the collection snaps them to exact rotations
    np.testing.assert_allclose(item["T_0to1"], ref["T_0to1"], atol=1e-3)
    np.testing.assert_allclose(item["K0"], ref["K0"])
    np.testing.assert_array_equal(item["image1"], ref["image1"])
    np.testing.assert_array_equal(item["depth0"], ref["depth0"])
