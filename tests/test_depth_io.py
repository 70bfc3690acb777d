"""Depth as an extractor input: 16-bit PNG reading, extract_depth, `featlab extract` on a folder of depth PNGs."""
import cv2
import numpy as np
import pytest
import torch

from featlab.cli import main
from featlab.errors import ConfigError, InputError
from featlab.extractors import build_extractor, extract_depth, extract_image
from featlab.extractors.base import _REGISTRY, Extractor, register_extractor
from featlab.io import h5 as fh5
from featlab.io.depth import (default_depth_intrinsics, depth_checksum, list_depth_images, read_depth,
                              read_intrinsics_file, resize_depth)
from featlab.pixels import from_opencv


def _write_u16(path, array):
    assert cv2.imwrite(str(path), np.asarray(array, np.uint16))
    return path


# ----------------------------------------------------------------------------------------------- read_depth
def test_read_depth_keeps_every_millimetre(tmp_path):
    raw = np.array([[0, 1000, 1001, 1002], [65535, 257, 4095, 65534]], np.uint16)
    raw = np.tile(raw, (4, 2))  # 8 x 8
    depth = read_depth(_write_u16(tmp_path / "d.png", raw))
    assert depth.dtype == np.float32 and depth.shape == (8, 8)
    # every raw value kept: float32(raw) * float32(0.001), so neighbouring millimetres stay apart (an 8-bit round
    # trip would merge 1000, 1001 and 1002)
    mm = np.float32(0.001)
    np.testing.assert_array_equal(depth[0, 1:4], np.float32([1000, 1001, 1002]) * mm)
    assert len(np.unique(depth[0, 1:4])) == 3
    assert depth[1, 3] == np.float32(65534) * mm
    assert depth[0, 0] == 0 and depth[1, 0] == 0  # 0 and 65535 are invalid
    np.testing.assert_array_equal(read_depth(tmp_path / "d.png", scale=0.0002, invalid=(0,))[1, :2],
                                  np.float32([65535, 257]) * np.float32(0.0002))


@pytest.mark.parametrize("kind", ["8bit", "rgb16", "corrupt", "empty", "missing", "folder"])
def test_read_depth_refuses_what_is_not_16_bit_depth(tmp_path, kind):
    path = tmp_path / "d.png"
    if kind == "8bit":
        cv2.imwrite(str(path), np.full((8, 8), 100, np.uint8))
    elif kind == "rgb16":
        cv2.imwrite(str(path), np.full((8, 8, 3), 1000, np.uint16))
    elif kind == "corrupt":
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "folder":
        path.mkdir()
    with pytest.raises(InputError, match="d.png"):
        read_depth(path)


def test_list_depth_images_takes_the_depth_of_a_7scenes_folder(tmp_path):
    for k in range(2):
        _write_u16(tmp_path / f"frame-{k:06d}.depth.png", np.full((8, 8), 1000))
        cv2.imwrite(str(tmp_path / f"frame-{k:06d}.color.png"), np.zeros((8, 8, 3), np.uint8))
    assert [p.name for p in list_depth_images(tmp_path)] == ["frame-000000.depth.png", "frame-000001.depth.png"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no depth images"):
        list_depth_images(tmp_path / "empty")
    with pytest.raises(InputError, match="not found"):
        list_depth_images(tmp_path / "missing")


def test_intrinsics_and_checksum(tmp_path):
    K = default_depth_intrinsics(480, 640)
    np.testing.assert_array_equal(K, [[585, 0, 320], [0, 585, 240], [0, 0, 1]])
    np.savetxt(tmp_path / "K.txt", K)
    np.testing.assert_array_equal(read_intrinsics_file(tmp_path / "K.txt"), K)
    np.savetxt(tmp_path / "bad.txt", np.eye(3) * -1)
    with pytest.raises(InputError, match="bad.txt"):
        read_intrinsics_file(tmp_path / "bad.txt")
    d = np.full((4, 4), 1.0, np.float32)
    d2 = d.copy()
    d2[0, 0] = 1.001
    assert depth_checksum(d, K) == depth_checksum(d.copy(), K)
    assert depth_checksum(d2, K) != depth_checksum(d, K)  # one millimetre changes the key
    assert depth_checksum(d, K * 1.01) != depth_checksum(d, K)  # and so does K


def test_resize_depth_is_nearest_and_keeps_zero_holes():
    d = np.zeros((40, 60), np.float32)
    d[:, :30] = 1.0
    d[:, 30:] = 3.0
    d[10:20, 10:20] = 0.0
    small, scale = resize_depth(d, 30)
    assert small.shape == (20, 30) and scale == (2.0, 2.0)
    assert set(np.unique(small).tolist()) <= {0.0, 1.0, 3.0}  # no blended depths
    assert (small == 0).any()


# ----------------------------------------------------------------------------------------------- extract_depth
PROBE = "test-depth-probe"


class DepthProbe(Extractor):
    """Test extractor: keypoint 0 at the principal point, keypoints 1.. at fixed pixel centres; scores = the depth
    seen there, so that the stored scores show which depth values and K reached the extractor."""

    inputs = "depth"
    default_conf = {"pixels": [[1, 1], [2, 1], [3, 1]]}  # (col, row) pixel indices of the probes

    def _init(self, conf):
        pass

    @property
    def descriptor_dim(self):
        return 4

    def _forward(self, data):
        depth, K = data["depth"][:, 0], data["intrinsics"]
        cols = torch.tensor([p[0] for p in self.conf.pixels])
        rows = torch.tensor([p[1] for p in self.conf.pixels])
        pts = from_opencv(torch.stack([cols, rows], -1).float())[None].expand(len(depth), -1, -1)
        kp = torch.cat([K[:, None, :2, 2], pts], 1)
        scores = torch.cat([torch.zeros(len(depth), 1), depth[:, rows, cols]], 1)
        desc = torch.nn.functional.normalize(torch.rand(len(depth), kp.shape[1], 4), dim=-1)
        return {"keypoints": kp, "keypoint_scores": scores, "descriptors": desc}


@pytest.fixture
def probe():
    register_extractor(PROBE)(DepthProbe)
    yield PROBE
    _REGISTRY.pop(PROBE, None)


def test_extract_depth_maps_keypoints_back_and_scales_K(probe):
    ext = build_extractor(probe, {"pixels": [[5, 3]]})
    depth = np.full((40, 60), 2.0, np.float32)
    depth[3, 5] = 1.234
    K = default_depth_intrinsics(40, 60, focal=50.0)
    out = extract_depth(ext, depth, K, resize=None)
    np.testing.assert_allclose(out["keypoints"], [[30, 20], [5.5, 3.5]])
    assert out["keypoint_scores"][1] == np.float32(1.234) and out["image_size"].tolist() == [60, 40]
    half = extract_depth(ext, depth, K, resize=30)  # 20 x 30: K scaled by 1/2, keypoints mapped back by 2
    np.testing.assert_allclose(half["keypoints"][0], [30, 20])
    np.testing.assert_allclose(half["keypoints"][1], [11, 7])  # pixel (5, 3) of the small map, in original pixels
    with pytest.raises(ConfigError, match="depth maps"):
        extract_image(ext, np.zeros((40, 60, 3), np.uint8))
    with pytest.raises(ConfigError, match="not depth maps"):
        extract_depth(build_extractor("sift"), depth, K)
    with pytest.raises(ValueError, match="intrinsics"):
        ext({"depth": torch.ones(2, 1, 8, 8), "intrinsics": torch.eye(3)[None]})


def test_sift_depth_finds_keypoints_on_valid_depth_only():
    # a box in front of a slanted wall, with a hole of invalid depth
    h, w = 120, 160
    ys, xs = np.mgrid[0:h, 0:w]
    depth = (2.0 + 0.004 * xs).astype(np.float32)
    depth[40:80, 50:100] = 1.2
    depth[10:30, 120:150] = 0.0
    ext = build_extractor("sift-depth", {"max_keypoints": 50})
    out = extract_depth(ext, depth, default_depth_intrinsics(h, w, 150.0))
    kp = out["keypoints"]
    assert 0 < len(kp) <= 50 and out["descriptors"].shape == (len(kp), 128)
    np.testing.assert_allclose(np.linalg.norm(out["descriptors"], axis=1), 1, atol=1e-5)
    # the margin keeps detections off the hole: no keypoint within 2 px of it
    near_hole = (kp[:, 0] > 118) & (kp[:, 0] < 152) & (kp[:, 1] > 8) & (kp[:, 1] < 32)
    assert not near_hole.any()
    # the box is the only structure (the wall is a plane, its linear ramp gives no DoG extremum): detections are on
    # it, in featlab pixels of the depth map (the box spans x 50-100, y 40-80)
    assert ((kp[:, 0] > 45) & (kp[:, 0] < 105) & (kp[:, 1] > 35) & (kp[:, 1] < 85)).all()


# ----------------------------------------------------------------------------------------------- featlab extract
@pytest.fixture
def depth_dir(tmp_path):
    root = tmp_path / "seq"
    root.mkdir()
    for k in range(3):
        raw = np.full((24, 32), 2000 + k, np.uint16)
        raw[1, 1], raw[1, 2], raw[1, 3] = 1000, 1001, 65535
        _write_u16(root / f"frame-{k:06d}.depth.png", raw)
        cv2.imwrite(str(root / f"frame-{k:06d}.color.jpg"), np.zeros((24, 32, 3), np.uint8))
    return root


def test_extract_depth_folder_keeps_full_precision_and_resumes(probe, depth_dir, tmp_path, capsys):
    feats = tmp_path / "feats.h5"
    assert main(["extract", str(depth_dir), "-o", str(feats), "--model", probe]) == 0
    names = fh5.list_feature_names(feats)
    assert names == [f"frame-{k:06d}.depth.png" for k in range(3)]  # the colour frames are left out
    f = fh5.read_features(feats, names[0])
    np.testing.assert_array_equal(f["scores"] if "scores" in f else f["keypoint_scores"],
                                  np.float32([0, 1000, 1001, 0]) * np.float32(0.001))  # mm kept; 65535 -> 0
    np.testing.assert_allclose(f["keypoints"][0], [16, 12])  # default K: principal point at the centre
    np.testing.assert_allclose(f["keypoints"][1], [1.5, 1.5])  # featlab pixels of the depth map
    import h5py

    with h5py.File(feats, "r") as h:
        np.testing.assert_allclose(h[names[0]]["keypoints"][1], [1.0, 1.0])  # hloc's convention in the file
    capsys.readouterr()
    assert main(["extract", str(depth_dir), "-o", str(feats), "--model", probe]) == 0
    assert "nothing to do" in capsys.readouterr().out
    # other intrinsics are another record: refused, the file is left as it is
    K = default_depth_intrinsics(24, 32, 30.0)
    K[:2, 2] = [10.5, 7.5]
    np.savetxt(tmp_path / "K.txt", K)
    assert main(["extract", str(depth_dir), "-o", str(feats), "--model", probe, "--intrinsics",
                 str(tmp_path / "K.txt")]) == 2
    feats2 = tmp_path / "feats2.h5"
    assert main(["extract", str(depth_dir), "-o", str(feats2), "--model", probe, "--intrinsics",
                 str(tmp_path / "K.txt")]) == 0
    np.testing.assert_allclose(fh5.read_features(feats2, names[0])["keypoints"][0], [10.5, 7.5])


def test_extract_depth_folder_errors(probe, depth_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    cv2.imwrite(str(bad / "x.png"), np.full((24, 32), 7, np.uint8))
    assert main(["extract", str(bad), "-o", str(tmp_path / "f.h5"), "--model", probe]) == 2
    assert "16-bit" in capsys.readouterr().err
    assert main(["extract", str(depth_dir), "-o", str(tmp_path / "g.h5"), "--model", "sift", "--intrinsics",
                 str(tmp_path / "K.txt")]) == 2
    assert "depth models only" in capsys.readouterr().err


def test_extract_sift_depth_cli(depth_dir, tmp_path):
    # a depth map with structure: a raised square
    for k in range(2):
        raw = np.full((96, 128), 2500, np.uint16)
        raw[30:70, 40:90] = 1500 + 10 * k
        _write_u16(depth_dir / f"frame-{k:06d}.depth.png", raw)
    feats = tmp_path / "s.h5"
    assert main(["extract", str(depth_dir), "-o", str(feats), "--model", "sift-depth", "--max-keypoints", "20"]) == 0
    f = fh5.read_features(feats, "frame-000000.depth.png")
    assert 0 < len(f["keypoints"]) <= 20 and f["image_size"].tolist() == [128, 96]
