"""Datasets: homography sampler, photometric augmentation, synthetic pairs, HPatches reader, RGB-D sequences."""
from __future__ import annotations

import math
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from featlab.datasets import HPatches, RGBDSequence, SyntheticHomographyPairs, photometric_augment, sample_homography
from featlab.datasets.homographies import corners_inside, frame_corners
from featlab.geometry.homography import rescale_homography
from featlab.errors import ConfigError, InputError
from featlab.pixels import homography_to_opencv

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NO_PHOTOMETRIC = {"enabled": False}


def warp(H, points):
    ph = np.c_[points, np.ones(len(points))] @ H.T
    return ph[:, :2] / ph[:, 2:]


def blob_image(size, centres, sigma=1.5, noise_seed=None):
    """Dark uint8 RGB image with Gaussian blobs centred at featlab coordinates ``centres``."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w] + 0.5  # featlab pixel centres
    img = np.zeros((h, w))
    for cx, cy in centres:
        img += np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2))
    img = (np.clip(img, 0, 1) * 250).round().astype(np.uint8)
    return np.repeat(img[..., None], 3, 2)


def blob_centroid(image, guess, radius=6):
    """Intensity-weighted centroid (featlab pixels) of the blob near ``guess``."""
    g = image[..., 0].astype(np.float64) if image.ndim == 3 else image.astype(np.float64)
    x0, y0 = int(guess[0]), int(guess[1])
    win = g[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    win = np.clip(win - 10, 0, None)
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1] + 0.5
    return np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()


# ---------------------------------------------------------------------------------------------- homography sampler
class TestSampleHomography:
    @pytest.mark.parametrize("size", [(240, 320), (320, 240), (100, 100)])
    @pytest.mark.parametrize("conf", [None, {"rotation": 80, "perspective": 0.48, "scale": [1.0, 2.0]},
                                      {"rotation": 0, "perspective": 0, "translation": 1.0}])
    def test_warped_image_has_no_empty_border(self, size, conf):
        h, w = size
        t = np.linspace(0, 1, 9)[:, None]
        border = np.concatenate([t * [w, 0], [w, 0] + t * [0, h], [w, h] - t * [w, 0], [0, h] - t * [0, h]])
        for seed in range(200):
            H = sample_homography(np.random.default_rng(seed), size, conf)
            assert H.shape == (3, 3) and H.dtype == np.float64 and np.all(np.isfinite(H))
            assert corners_inside(H, size)
            src = warp(np.linalg.inv(H), border)  # border of image 1 seen in image 0
            assert np.all(src >= -1e-6) and np.all(src[:, 0] <= w + 1e-6) and np.all(src[:, 1] <= h + 1e-6)

    def test_corners_inside_detects_an_empty_border(self):
        zoom_out = np.diag([0.8, 0.8, 1.0])
        assert not corners_inside(zoom_out, (100, 100))
        assert corners_inside(np.diag([1.2, 1.2, 1.0]), (100, 100))

    def test_deterministic_given_seed(self):
        a = sample_homography(np.random.default_rng(7), (240, 320))
        b = sample_homography(np.random.default_rng(7), (240, 320))
        c = sample_homography(np.random.default_rng(8), (240, 320))
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - c).max() > 1e-3

    def test_pure_zoom_about_the_centre(self):
        conf = {"rotation": 0, "perspective": 0, "scale": [1.25, 1.25], "translation": 0}
        H = sample_homography(np.random.default_rng(0), (240, 320), conf)
        p = np.array([[0.0, 0.0], [160.0, 120.0], [37.5, 201.0]])
        c = np.array([160.0, 120.0])
        np.testing.assert_allclose(warp(H, p), c + 1.25 * (p - c), atol=1e-6)

    def test_rotation_within_range(self):
        conf = {"rotation": 20, "perspective": 0}
        angles = []
        for seed in range(100):
            H = sample_homography(np.random.default_rng(seed), (240, 320), conf)
            angles.append(math.degrees(math.atan2(H[1, 0], H[0, 0])))
        assert max(abs(a) for a in angles) <= 20 + 1e-6
        assert max(angles) > 10 and min(angles) < -10  # the range is actually used

    @pytest.mark.parametrize("conf", [{"scale": [0.7, 1.4]}, {"perspective": 0.5}, {"rotation": 95},
                                      {"translation": 2}, {"rotations": 10}, {"mode": "zoom-out"},
                                      {"mode": "overlap", "scale": [0.0, 2.0], "translation": 0.2},
                                      {"mode": "overlap"}])  # overlap: translation is a fraction of the half-side
    def test_bad_conf(self, conf):
        with pytest.raises(ConfigError):
            sample_homography(np.random.default_rng(0), (240, 320), conf)


# ---------------------------------------------------------------------------------------------- photometric
class TestPhotometric:
    def setup_method(self):
        self.image = np.random.default_rng(0).integers(30, 220, size=(32, 40, 3)).astype(np.uint8)

    def test_deterministic_and_shape(self):
        a = photometric_augment(np.random.default_rng(3), self.image)
        b = photometric_augment(np.random.default_rng(3), self.image)
        np.testing.assert_array_equal(a, b)
        assert a.shape == self.image.shape and a.dtype == np.uint8
        outs = [photometric_augment(np.random.default_rng(s), self.image) for s in range(6)]
        assert len({o.tobytes() for o in outs}) > 1

    def test_disabled_or_zero_probability_is_identity(self):
        np.testing.assert_array_equal(photometric_augment(np.random.default_rng(0), self.image, NO_PHOTOMETRIC),
                                      self.image)
        off = {k: {"prob": 0.0} for k in ("brightness", "contrast", "saturation", "hue", "noise")}
        np.testing.assert_array_equal(photometric_augment(np.random.default_rng(0), self.image, off), self.image)

    def test_brightness_is_a_uniform_shift(self):
        only = {k: {"prob": 0.0} for k in ("contrast", "saturation", "hue", "noise")}
        out = photometric_augment(np.random.default_rng(1), self.image, {**only, "brightness": {"prob": 1.0}})
        diff = out.astype(int) - self.image.astype(int)
        assert diff.max() - diff.min() <= 1 and abs(diff.mean()) > 0.5

    def test_saturation_zero_gives_grey(self):
        only = {k: {"prob": 0.0} for k in ("brightness", "contrast", "hue", "noise")}
        out = photometric_augment(np.random.default_rng(1), self.image,
                                  {**only, "saturation": {"prob": 1.0, "range": [0.0, 0.0]}})
        assert np.abs(out.astype(int) - out[..., :1].astype(int)).max() <= 1

    def test_grey_image_and_bad_input(self):
        grey = self.image[..., 0]
        out = photometric_augment(np.random.default_rng(0), grey)
        assert out.shape == grey.shape and out.dtype == np.uint8
        with pytest.raises(InputError):
            photometric_augment(np.random.default_rng(0), self.image.astype(np.float32))


# ---------------------------------------------------------------------------------------------- synthetic pairs
CENTRES = [(40.5, 30.25), (80.0, 60.0), (110.7, 85.3), (60.2, 95.8), (120.0, 30.0)]


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    cv2.imwrite(str(folder / "a.png"), blob_image((120, 160), CENTRES)[..., ::-1])
    texture = (np.random.default_rng(0).random((60, 90, 3)) * 255).astype(np.uint8)
    cv2.imwrite(str(folder / "sub" / "b.png"), cv2.resize(texture, (200, 130), interpolation=cv2.INTER_CUBIC))
    return folder


class TestSyntheticPairs:
    def test_items_and_names(self, photo_folder):
        ds = SyntheticHomographyPairs(photo_folder, {"pairs_per_image": 3, "resize": [60, 80]})
        assert len(ds) == 6
        items = list(ds)
        expected = [f"synthetic:a.png#{k}" for k in range(3)] + ["synthetic:sub/b.png#3"]
        assert [it["name"] for it in items[:4]] == expected
        for it in items:
            assert it["synthetic"] is True
            assert it["image0"].shape == it["image1"].shape == (60, 80, 3)
            assert it["image0"].dtype == it["image1"].dtype == np.uint8
            assert it["H_0to1"].shape == (3, 3) and corners_inside(it["H_0to1"], (60, 80))
        assert ds[-1]["name"] == items[-1]["name"]
        with pytest.raises(IndexError):
            ds[6]

    def test_deterministic_in_any_order(self, photo_folder):
        conf = {"pairs_per_image": 2, "resize": [60, 80]}
        a = SyntheticHomographyPairs(photo_folder, conf)
        b = SyntheticHomographyPairs(photo_folder, conf)
        late = [a[k] for k in range(4)][3]
        first = b[3]
        for key in ("image0", "image1", "H_0to1"):
            np.testing.assert_array_equal(late[key], first[key])
        other = SyntheticHomographyPairs(photo_folder, {**conf, "seed": 1})[3]
        assert np.abs(other["H_0to1"] - first["H_0to1"]).max() > 1e-3
        assert np.abs(a[2]["H_0to1"] - a[3]["H_0to1"]).max() > 1e-3

    @pytest.mark.parametrize("hconf", [{}, {"rotation": 0, "perspective": 0, "scale": [2.0, 2.0], "translation": 0}])
    def test_pattern_moves_by_H(self, photo_folder, hconf):
        # the photo already has the pair's size and a centre crop: image0 is the photo itself
        conf = {"resize": [120, 160], "crop": "center", "max_images": 1, "pairs_per_image": 4,
                "photometric": NO_PHOTOMETRIC, "homography": hconf}
        ds = SyntheticHomographyPairs(photo_folder, conf)
        assert ds.paths[0].name == "a.png"
        for item in ds:
            np.testing.assert_array_equal(item["image0"], blob_image((120, 160), CENTRES))
            H = item["H_0to1"]
            for p, q in zip(CENTRES, warp(H, np.array(CENTRES))):
                if not (8 <= q[0] <= 152 and 8 <= q[1] <= 112):
                    continue
                # a half-pixel convention slip would move the blob by 0.5 |I - A| (>= 0.5 px at zoom 2)
                np.testing.assert_allclose(blob_centroid(item["image1"], q), q, atol=0.2)

    def test_resize_crop_and_max_images(self, photo_folder):
        ds = SyntheticHomographyPairs(photo_folder, {"resize": [50, 50], "max_images": 1})
        assert len(ds) == 1 and ds[0]["image0"].shape == (50, 50, 3)

    def test_errors(self, tmp_path, photo_folder):
        with pytest.raises(InputError):
            SyntheticHomographyPairs(tmp_path / "missing")
        (tmp_path / "empty").mkdir()
        with pytest.raises(InputError):
            SyntheticHomographyPairs(tmp_path / "empty")
        with pytest.raises(ConfigError):
            SyntheticHomographyPairs(photo_folder, {"homography": {"scale": [0.5, 1.0]}})
        with pytest.raises(ConfigError):
            SyntheticHomographyPairs(photo_folder, {"pairs": 2})
        (photo_folder / "broken.jpg").write_bytes(b"not an image")
        ds = SyntheticHomographyPairs(photo_folder)
        with pytest.raises(InputError):
            ds[[p.name for p in ds.paths].index("broken.jpg")]


# ---------------------------------------------------------------------------------------------- HPatches
def _hpatches_h(k):
    """OpenCV-convention homography image 1 -> image k: zoom 1.5 and rotation 5k degrees about (48, 36), a little
    perspective (a large zoom makes a half-pixel convention slip visible: it moves points by 0.5 |I - A|)."""
    a = math.radians(5.0 * k)
    A = 1.5 * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.array([48.0, 36.0])
    H = np.eye(3)
    H[:2, :2], H[:2, 2] = A, c - A @ c
    return np.array([[1, 0, 0], [0, 1, 0], [2e-4 * k, -1e-4, 1.0]]) @ H


H_CV = {k: _hpatches_h(k) for k in range(2, 7)}  # as in the HPatches files
SIZES = {1: (72, 96), 2: (72, 96), 3: (80, 100), 4: (72, 96), 5: (72, 96), 6: (60, 90)}
HP_CENTRES = [(40.5, 30.0), (55.25, 40.75), (45.0, 45.5)]


def write_sequence(root: Path, name: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    img1 = blob_image(SIZES[1], HP_CENTRES)
    cv2.imwrite(str(folder / "1.ppm"), img1[..., ::-1])
    for k in range(2, 7):
        h, w = SIZES[k]
        img_k = cv2.warpPerspective(img1, H_CV[k], (w, h), flags=cv2.INTER_LINEAR)
        cv2.imwrite(str(folder / f"{k}.ppm"), img_k[..., ::-1])
        np.savetxt(folder / f"H_1_{k}", H_CV[k])
    return folder


@pytest.fixture
def hpatches_root(tmp_path):
    root = tmp_path / "hpatches"
    write_sequence(root, "v_fake")
    write_sequence(root, "i_fake")
    return root


class TestHPatches:
    def test_items(self, hpatches_root):
        ds = HPatches(hpatches_root)
        assert len(ds) == 10 and ds.sequences == ["i_fake", "v_fake"]
        names = [it["name"] for it in ds]
        assert names[5:] == [f"v_fake/1-{k}" for k in range(2, 7)]
        it = ds[6]
        assert it["sequence"] == "v_fake" and it["split"] == "v"
        assert it["image0"].shape == (72, 96, 3) and it["image1"].shape == (80, 100, 3)
        H_back = homography_to_opencv(it["H_0to1"])
        np.testing.assert_allclose(H_back / H_back[2, 2], H_CV[3] / H_CV[3][2, 2], atol=1e-12)

    def test_homography_is_in_featlab_pixels(self, hpatches_root):
        for it in HPatches(hpatches_root, sequences=["v_fake"]):
            for q in warp(it["H_0to1"], np.array(HP_CENTRES)):
                np.testing.assert_allclose(blob_centroid(it["image1"], q), q, atol=0.1)

    def test_split_and_sequences(self, hpatches_root):
        assert HPatches(hpatches_root, split="i").sequences == ["i_fake"]
        assert HPatches(hpatches_root, sequences="v_fake").sequences == ["v_fake"]
        with pytest.raises(InputError, match="nope"):
            HPatches(hpatches_root, sequences=["nope"])
        with pytest.raises(InputError):
            HPatches(hpatches_root, sequences=["v_fake"], split="i")
        with pytest.raises(ConfigError):
            HPatches(hpatches_root, split="x")

    def test_resize_adapts_the_homography(self, hpatches_root):
        ds = HPatches(hpatches_root, sequences=["v_fake"], conf={"resize": [48, 64]})
        native = HPatches(hpatches_root, sequences=["v_fake"])
        for it, nat in zip(ds, native):
            assert it["image0"].shape == it["image1"].shape == (48, 64, 3)
            s0 = np.array([96 / 64, 72 / 48])  # resized -> original, image 0
            h1, w1 = nat["image1"].shape[:2]
            s1 = np.array([w1 / 64, h1 / 48])
            corners = frame_corners((48, 64))
            # H' p' = H(p' * s0) / s1 for the corners of the resized image 0
            np.testing.assert_allclose(warp(it["H_0to1"], corners), warp(nat["H_0to1"], corners * s0) / s1,
                                       atol=1e-9)
        H = np.array([[1.1, 0.1, 3.0], [0.0, 0.9, -2.0], [1e-3, 0.0, 1.0]])
        Hs = rescale_homography(H, (0.5, 0.5), (0.5, 0.5))
        np.testing.assert_allclose(warp(Hs, np.array([[10.0, 20.0]])), warp(H, np.array([[20.0, 40.0]])) / 2)

    def test_errors(self, tmp_path, hpatches_root):
        with pytest.raises(InputError, match="not found"):
            HPatches(tmp_path / "nothing")
        (hpatches_root / "v_fake" / "4.ppm").unlink()
        with pytest.raises(InputError, match="incomplete"):
            HPatches(hpatches_root)
        (hpatches_root / "i_fake" / "H_1_2").write_text("1 2 3\n4 five 6\n7 8 9\n")
        with pytest.raises(InputError, match="malformed"):
            HPatches(hpatches_root, sequences=["i_fake"])
        (hpatches_root / "i_fake" / "H_1_2").write_text("1 2 3\n4 5 6\n")
        with pytest.raises(InputError, match="3x3"):
            HPatches(hpatches_root, sequences=["i_fake"])
        (hpatches_root / "i_fake" / "H_1_2").write_text("1 0 0\n0 1 0\n0 0 0\n")
        with pytest.raises(InputError, match="singular"):
            HPatches(hpatches_root, sequences=["i_fake"])


# ---------------------------------------------------------------------------------------------- RGB-D
RGBD_SIZE = (48, 64)
RGBD_K = np.array([[50.0, 0, 32.0], [0, 50.0, 24.0], [0, 0, 1]])
PLANE_Z = 2.0  # world plane z = 2, seen by cameras looking along +z


def rot_y(deg):
    a = math.radians(deg)
    return np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])


def camera_pose(k):
    """Camera-to-world pose of fake frame k: sliding along x and turning slowly."""
    T = np.eye(4)
    T[:3, :3] = rot_y(2.0 * k)
    T[:3, 3] = [0.12 * k, 0.02 * k, 0.05 * math.sin(k)]
    return T


def plane_depth(T_c2w, K=RGBD_K, size=RGBD_SIZE):
    """z-depth of the plane z_world = PLANE_Z at every pixel centre."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T  # z = 1 rays, camera frame
    dz = rays @ T_c2w[:3, :3].T  # world directions
    return (PLANE_Z - T_c2w[2, 3]) / dz[..., 2]


def write_7scenes(root: Path, n: int) -> Path:
    root.mkdir(parents=True)
    np.savetxt(root / "camera-intrinsics.txt", RGBD_K)
    rng = np.random.default_rng(0)
    for k in range(n):
        T = camera_pose(k)
        np.savetxt(root / f"frame-{k:06d}.pose.txt", T)
        depth_mm = np.round(plane_depth(T) * 1000).astype(np.uint16)
        depth_mm[0, 0] = 65535  # invalid marker of 7-Scenes
        depth_mm[0, 1] = 0
        cv2.imwrite(str(root / f"frame-{k:06d}.depth.png"), depth_mm)
        color = rng.integers(0, 255, size=RGBD_SIZE + (3,), dtype=np.uint8)
        cv2.imwrite(str(root / f"frame-{k:06d}.color.png"), color)
    return root


@pytest.fixture
def seven_scenes(tmp_path):
    return write_7scenes(tmp_path / "fake_scene", 12)


class TestRGBD:
    def test_frames_and_intrinsics(self, seven_scenes):
        seq = RGBDSequence(seven_scenes)
        assert seq.layout == "7scenes" and len(seq) == 12 and seq.frames[3] == "frame-000003"
        f = seq.load_frame(2)
        assert f["image"].shape == RGBD_SIZE + (3,) and f["image"].dtype == np.uint8
        assert f["depth"].dtype == np.float32 and f["depth"][0, 0] == 0 and f["depth"][0, 1] == 0
        np.testing.assert_allclose(f["depth"][5:, 5:], plane_depth(camera_pose(2))[5:, 5:], atol=6e-4)
        np.testing.assert_allclose(f["T_c2w"], camera_pose(2), atol=1e-12)
        np.testing.assert_allclose(f["T_w2c"] @ f["T_c2w"], np.eye(4), atol=1e-12)
        np.testing.assert_array_equal(f["K"], RGBD_K)
        copy = pickle.loads(pickle.dumps(seq))  # DataLoader workers may pickle the dataset
        np.testing.assert_array_equal(copy.load_frame(2)["depth"], f["depth"])
        K = RGBDSequence(seven_scenes, {"focal": 45.0, "principal_point": [31.5, 23.5]}).K
        np.testing.assert_array_equal(K, [[45.0, 0, 31.5], [0, 45.0, 23.5], [0, 0, 1]])

    def test_T_0to1_direction_with_depth(self, seven_scenes):
        seq = RGBDSequence(seven_scenes)
        item = seq.pair(1, 3)
        assert item["name"] == "fake_scene/frame-000001_frame-000003"
        K, T = item["K0"], item["T_0to1"]
        ys, xs = np.mgrid[2:48:4, 2:64:4] + 0.5  # pixel centres, away from the invalid (0, 0) and (0, 1)
        p0 = np.stack([xs.ravel(), ys.ravel()], 1)
        z0 = item["depth0"][p0[:, 1].astype(int), p0[:, 0].astype(int)]
        X0 = np.c_[p0, np.ones(len(p0))] @ np.linalg.inv(K).T * z0[:, None]

        def transfer(T):  # x_cam1 = T x_cam0; returns camera-1 depths and pixels of the points seen by camera 1
            X1 = X0 @ T[:3, :3].T + T[:3, 3]
            p1 = X1 @ K.T
            p1 = p1[:, :2] / p1[:, 2:]
            inside = (p1[:, 0] > 0) & (p1[:, 0] < 64) & (p1[:, 1] > 0) & (p1[:, 1] < 48)
            return X1[inside, 2], p1[inside]

        # the transferred depths agree with the depth map rendered independently for frame 3
        z1, p1 = transfer(T)
        assert len(z1) > 0.5 * len(p0)
        z1_map = plane_depth(camera_pose(3))[p1[:, 1].astype(int), p1[:, 0].astype(int)]
        np.testing.assert_allclose(z1, z1_map, rtol=0.01)
        # the reverse convention would not
        z1, p1 = transfer(np.linalg.inv(T))
        z1_map = plane_depth(camera_pose(3))[p1[:, 1].astype(int), p1[:, 0].astype(int)]
        assert np.mean(np.abs(z1 - z1_map) > 0.01 * z1_map) > 0.5
        assert seq.pair_covisibility(1, 3) > 0.5

    def test_make_pairs_respects_gap_and_covisibility(self, seven_scenes):
        seq = RGBDSequence(seven_scenes)
        pairs = seq.make_pairs(gaps=(1, 3, 6), min_covisibility=0.55, max_covisibility=0.85,
                               max_pairs_per_gap=None, frame_range=(1, 11), seed=0)
        candidates = [(i, i + g) for g in (1, 3, 6) for i in range(1, 11 - g)]
        expected = [p for p in candidates if 0.55 <= seq.pair_covisibility(*p) <= 0.85]
        assert sorted(pairs) == sorted(expected) and 0 < len(pairs) < len(candidates)
        assert all(j - i in (1, 3, 6) and 1 <= i and j < 11 for i, j in pairs)
        assert all(0.55 <= seq.covisibilities[p] <= 0.85 for p in pairs)
        assert [j - i for i, j in pairs] == sorted((j - i for i, j in pairs), key=(1, 3, 6).index)  # grouped by gap
        # capped sampling is deterministic given the seed
        a = seq.make_pairs(gaps=(1, 2), min_covisibility=0.0, max_pairs_per_gap=2, frame_range=None, seed=3)
        b = RGBDSequence(seven_scenes).make_pairs(gaps=(1, 2), min_covisibility=0.0, max_pairs_per_gap=2,
                                                  frame_range=None, seed=3)
        assert a == b and len(a) == 4
        others = [seq.make_pairs(gaps=(1, 2), min_covisibility=0.0, max_pairs_per_gap=2, frame_range=None, seed=s)
                  for s in range(4, 8)]
        assert any(o != a for o in others)
        with pytest.raises(ConfigError):
            seq.make_pairs(min_covisibility=0.8, max_covisibility=0.5)

    def test_pairs_file_roundtrip(self, seven_scenes, tmp_path):
        seq = RGBDSequence(seven_scenes)
        path = tmp_path / "out" / "pairs.txt"
        seq.save_pairs(path, [(0, 3), (2, 5)])
        lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
        assert lines == ["frame-000000 frame-000003", "frame-000002 frame-000005"]
        assert [p.name for p in path.parent.iterdir()] == ["pairs.txt"]  # no temporary file left
        assert seq.load_pairs(path) == [(0, 3), (2, 5)]
        path.write_text("1 4\n\n# comment\nframe-000002 7\n")
        assert seq.load_pairs(path) == [(1, 4), (2, 7)]
        for bad in ("frame-000001\n", "frame-000001 frame-999999\n", "3 40\n"):
            path.write_text(bad)
            with pytest.raises(InputError):
                seq.load_pairs(path)
        with pytest.raises(InputError):
            seq.load_pairs(tmp_path / "missing.txt")

    def test_errors(self, tmp_path, seven_scenes):
        with pytest.raises(InputError):
            RGBDSequence(tmp_path / "missing")
        (tmp_path / "empty").mkdir()
        with pytest.raises(InputError):
            RGBDSequence(tmp_path / "empty")
        with pytest.raises(ConfigError):
            RGBDSequence(seven_scenes, {"focl": 500})
        (seven_scenes / "frame-000004.pose.txt").write_text("nan nan nan nan\n" * 4)
        seq = RGBDSequence(seven_scenes)
        assert not seq.pose_valid(4)
        with pytest.raises(InputError, match="pose"):
            seq.load_frame(4)
        assert all(4 not in p for p in seq.make_pairs(gaps=(1,), min_covisibility=0.0, max_pairs_per_gap=None,
                                                        frame_range=None))
        (seven_scenes / "frame-000005.pose.txt").write_text("1 0 0\n0 1 0\n")
        with pytest.raises(InputError, match="malformed pose"):
            RGBDSequence(seven_scenes)
        (seven_scenes / "frame-000005.pose.txt").unlink()
        with pytest.raises(InputError, match="not found"):
            RGBDSequence(seven_scenes)

    def test_tum_layout(self, tmp_path):
        root = tmp_path / "tum"
        (root / "rgb").mkdir(parents=True)
        (root / "depth").mkdir()
        rgb, depth, gt = ["# rgb"], ["# depth"], ["# ground truth"]
        for k in range(3):
            t = 100.0 + 0.1 * k
            T = camera_pose(k)
            cv2.imwrite(str(root / "rgb" / f"{t:.6f}.png"), np.full(RGBD_SIZE + (3,), 100, np.uint8))
            cv2.imwrite(str(root / "depth" / f"{t + 0.005:.6f}.png"), np.full(RGBD_SIZE, 5000 * (k + 1), np.uint16))
            rgb.append(f"{t:.6f} rgb/{t:.6f}.png")
            depth.append(f"{t + 0.005:.6f} depth/{t + 0.005:.6f}.png")
            # quaternion (x, y, z, w) of a rotation of 2k degrees about y
            a = math.radians(2.0 * k) / 2
            gt.append(f"{t - 0.003:.4f} {T[0, 3]} {T[1, 3]} {T[2, 3]} 0 {math.sin(a)} 0 {math.cos(a)}")
        gt.append("200.0 0 0 0 0 0 0 1")
        for name, lines in (("rgb.txt", rgb), ("depth.txt", depth), ("groundtruth.txt", gt)):
            (root / name).write_text("\n".join(lines) + "\n")
        seq = RGBDSequence(root)
        assert seq.layout == "tum" and seq.frames == ["100.000000", "100.100000", "100.200000"]
        np.testing.assert_array_equal(seq.K, [[525.0, 0, 320.0], [0, 525.0, 240.0], [0, 0, 1]])
        f = seq.load_frame(2)
        np.testing.assert_allclose(f["depth"], 3.0)
        np.testing.assert_allclose(f["T_c2w"], camera_pose(2), atol=1e-9)


# ---------------------------------------------------------------------------------------------- real data (slow)
def _require(path: Path):
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")


@pytest.mark.slow
def test_real_hpatches_graffiti():
    root = DATA / "hpatches"
    _require(root / "v_graffiti")
    ds = HPatches(root, sequences=["v_graffiti"], conf={"resize": [320, 400]})
    assert len(ds) == 5
    it = ds[0]
    assert it["name"] == "v_graffiti/1-2" and it["image0"].shape == (320, 400, 3)
    # image 1 warped by H_0to1 agrees with image 2 far better than the unwarped image 1 does
    g0 = cv2.cvtColor(it["image0"], cv2.COLOR_RGB2GRAY).astype(np.float32)
    g1 = cv2.cvtColor(it["image1"], cv2.COLOR_RGB2GRAY).astype(np.float32)
    warped = cv2.warpPerspective(g0, homography_to_opencv(it["H_0to1"]), (400, 320))
    mask = cv2.warpPerspective(np.ones_like(g0), homography_to_opencv(it["H_0to1"]), (400, 320)) > 0.99
    err_h = np.abs(warped - g1)[mask].mean()
    err_id = np.abs(g0 - g1)[mask].mean()
    assert err_h < 0.5 * err_id


@pytest.mark.slow
def test_real_synthetic_warps():
    folder = DATA / "photos" / "bsds500" / "test"
    _require(folder)
    ds = SyntheticHomographyPairs(folder, {"resize": [240, 320]})
    assert len(ds) == 200
    it = ds[17]
    assert it["name"].startswith("synthetic:") and it["image1"].shape == (240, 320, 3)


@pytest.mark.slow
def test_real_7scenes():
    root = DATA / "rgbd" / "7scenes_redkitchen"
    _require(root)
    seq = RGBDSequence(root)
    assert len(seq) == 500 and seq.K[0, 0] == 525.0  # the colour camera's, not the file's 585 (depth sensor)
    assert RGBDSequence(root, {"focal": 585}).K[0, 0] == 585.0
    f = seq.load_frame(0)
    assert f["image"].shape == (480, 640, 3) and f["depth"].shape == (480, 640)
    assert 0.3 < np.median(f["depth"][f["depth"] > 0]) < 5.0
    pairs = seq.make_pairs(gaps=(10, 30), min_covisibility=0.3, max_pairs_per_gap=3, frame_range=(0, 200), seed=0)
    assert len(pairs) == 6 and all(j - i in (10, 30) and j < 200 for i, j in pairs)
    assert all(seq.covisibilities[p] >= 0.3 for p in pairs)
