"""End-to-end runs of `featlab eval hpatches|relpose|speed` on tiny data built in the test."""
import json

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from featlab.cli import main


def _bgr(img):
    return cv2.cvtColor(img, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def hpatches_root(tmp_path_factory):
    """Two sequences in the HPatches layout: i_x (same view, brightness changes, H = I) and v_x (known warps)."""
    root = tmp_path_factory.mktemp("hpatches")
    base = cv2.resize(skdata.astronaut(), (160, 120), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    for seq in ("i_x", "v_x"):
        folder = root / seq
        folder.mkdir()
        cv2.imwrite(str(folder / "1.ppm"), _bgr(base))
        for k in range(2, 7):
            if seq == "i_x":
                H = np.eye(3)
                img = np.clip(base.astype(np.float32) * (0.6 + 0.15 * k), 0, 255).astype(np.uint8)
            else:  # mild random homography, OpenCV pixel convention as in the real files
                src = np.float32([[0, 0], [159, 0], [159, 119], [0, 119]])
                dst = src + rng.uniform(-8, 8, (4, 2)).astype(np.float32)
                H = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
                img = cv2.warpPerspective(base, H, (160, 120), borderMode=cv2.BORDER_REFLECT)
            cv2.imwrite(str(folder / f"{k}.ppm"), _bgr(img))
            np.savetxt(folder / f"H_1_{k}", H)
    return root


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name in ("coffee", "chelsea"):
        img = cv2.resize(getattr(skdata, name)(), (200, 150), interpolation=cv2.INTER_AREA)
        cv2.imwrite(str(folder / f"{name}.jpg"), _bgr(img))
    return folder


def _render_rgbd(root, n_frames=14, size=(240, 320), f=250.0):
    """A 7-Scenes-layout sequence of a rendered scene: a textured back wall (z = 3 m) and a textured floor
    (y = 0.6 m, y down), seen by a camera that slides along x and turns slowly about y. Exact depth and poses."""
    h, w = size
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])  # featlab pixels: (w/2, h/2) is the image centre
    np.savetxt(root / "camera-intrinsics.txt", K)
    wall = skdata.astronaut().astype(np.float32)
    floor = cv2.resize(skdata.coffee(), (512, 512)).astype(np.float32)
    xs, ys = np.meshgrid(np.arange(w) + 0.5, np.arange(h) + 0.5)
    rays = np.stack([(xs - K[0, 2]) / f, (ys - K[1, 2]) / f, np.ones_like(xs)], -1)  # camera frame, z = 1
    for i in range(n_frames):
        a = np.radians(0.4 * i)
        R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        c = np.array([0.08 * i - 0.5, 0.0, 0.0])
        d = rays @ R.T  # world directions
        s_wall = (3.0 - c[2]) / d[..., 2]
        with np.errstate(divide="ignore"):
            s_floor = np.where(d[..., 1] > 1e-6, (0.6 - c[1]) / d[..., 1], np.inf)
        on_floor = s_floor < s_wall
        s = np.where(on_floor, s_floor, s_wall)
        P = c + s[..., None] * d
        # texture lookups: wall (x, y) -> astronaut, floor (x, z) -> coffee, 100 texture px per metre
        map_wall = np.stack([P[..., 0] * 100 + 256, P[..., 1] * 100 + 256], -1).astype(np.float32)
        map_floor = np.stack([P[..., 0] * 100 + 256, (P[..., 2] - 0.5) * 100], -1).astype(np.float32)
        img_wall = cv2.remap(wall, map_wall[..., 0], map_wall[..., 1], cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REFLECT)
        img_floor = cv2.remap(floor, map_floor[..., 0], map_floor[..., 1], cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REFLECT)
        img = np.where(on_floor[..., None], img_floor, img_wall).clip(0, 255).astype(np.uint8)
        depth = s * rays[..., 2]  # z in the camera frame (rays have z = 1)
        T_c2w = np.eye(4)
        T_c2w[:3, :3], T_c2w[:3, 3] = R, c
        name = f"frame-{i:06d}"
        cv2.imwrite(str(root / f"{name}.color.png"), _bgr(img))
        cv2.imwrite(str(root / f"{name}.depth.png"), np.round(depth * 1000).astype(np.uint16))
        np.savetxt(root / f"{name}.pose.txt", T_c2w)


@pytest.fixture(scope="module")
def rgbd_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("rgbd") / "scene"
    root.mkdir()
    _render_rgbd(root)
    return root


def _load(path):
    return json.loads(path.read_text())


def test_hpatches_end_to_end_and_cache_reuse(hpatches_root, tmp_path):
    out = tmp_path / "out"
    args = ["eval", "hpatches", "--methods", "sift", "orb", "--hpatches", str(hpatches_root), "--resize", "96",
            "128", "--max-keypoints", "150", "-o", str(out), "--no-progress"]
    assert main(args) == 0
    for name in ("hpatches_results.json", "hpatches_results.md", "hpatches_mma.png"):
        assert (out / name).is_file()
    res = _load(out / "hpatches_results.json")
    assert res["benchmark"] == "hpatches" and "HPatches" in res["title"]
    assert res["conf"]["resize"] == [96, 128] and res["conf"]["max_keypoints"] == 150
    assert res["args"]["methods"] == ["sift", "orb"]
    for method in ("sift", "orb"):
        summary = res["methods"][method]["summary"]
        assert set(summary) == {"all", "i", "v"}
        assert summary["all"]["num_pairs"] == 10 and summary["i"]["num_pairs"] == 5
        s = summary["all"]
        assert list(s["mma"]) == [str(t) for t in range(1, 11)]
        assert set(s["homography_accuracy"]) == {"1", "3", "5"}
        pairs = res["methods"][method]["pairs"]
        # each summary value is the mean of the per-pair values; scores are fractions, matches at most keypoints
        for key in ("matching_score", "repeatability"):
            assert 0 < s[key] <= 1 and s[key] == pytest.approx(np.mean([p[key] for p in pairs])), key
        assert s["mean_num_keypoints"] == pytest.approx(np.mean([(p["num_keypoints0"] + p["num_keypoints1"]) / 2
                                                                 for p in pairs]))
        assert s["mean_num_matches"] == pytest.approx(np.mean([p["num_matches"] for p in pairs]))
        assert 0 < s["mean_num_matches"] <= s["mean_num_keypoints"]
        assert 0 < s["mean_num_keypoints"] <= 150
        assert len(res["methods"][method]["pairs"]) == 10
        assert res["methods"][method]["cache_misses"] == 12  # 2 sequences x 6 images, each extracted once
    # same view, brightness change only: SIFT must be nearly perfect
    i_split = res["methods"]["sift"]["summary"]["i"]
    assert i_split["mma"]["3"] > 0.9 and i_split["homography_accuracy"]["3"] == 1.0
    assert i_split["repeatability"] > 0.8
    md = (out / "hpatches_results.md").read_text()
    assert "| sift |" in md and "| orb |" in md and "viewpoint" in md

    # rerun: every feature comes from the cache, same numbers
    assert main(args) == 0
    res2 = _load(out / "hpatches_results.json")
    # 10 pairs x 2 images looked up, none recomputed
    assert res2["methods"]["sift"]["cache_misses"] == 0 and res2["methods"]["sift"]["cache_hits"] == 20
    assert res2["methods"]["sift"]["summary"] == res["methods"]["sift"]["summary"]


def test_synthetic_is_labelled_synthetic(photo_dir, tmp_path):
    out = tmp_path / "syn"
    assert main(["eval", "hpatches", "--methods", "sift", "--synthetic", str(photo_dir), "--pairs-per-image", "2",
                 "--max-images", "2", "--resize", "96", "128", "--max-keypoints", "100", "-o", str(out),
                 "--no-progress"]) == 0
    for name in ("synthetic_results.json", "synthetic_results.md", "synthetic_mma.png"):
        assert (out / name).is_file()
    assert not (out / "hpatches_results.json").exists()
    res = _load(out / "synthetic_results.json")
    assert res["title"] == f"synthetic warps of {photo_dir}"
    assert res["source"]["label"].startswith("synthetic warps of")
    assert res["methods"]["sift"]["summary"]["all"]["num_pairs"] == 4
    assert set(res["methods"]["sift"]["summary"]) == {"all"}
    md = (out / "synthetic_results.md").read_text()
    assert "synthetic warps of" in md
    assert "HPatches" not in md and "HPatches" not in res["title"]


def test_relpose_end_to_end(rgbd_root, tmp_path):
    out = tmp_path / "rel"
    assert main(["eval", "relpose", "--methods", "sift", "--rgbd", str(rgbd_root), "--gaps", "3", "6",
                 "--frames", "0", "13", "--max-pairs-per-gap", "4", "--max-keypoints", "300", "-o", str(out),
                 "--no-progress"]) == 0
    for name in ("relpose_results.json", "relpose_results.md", "relpose_errors.png", "relpose_pairs.txt"):
        assert (out / name).is_file()
    res = _load(out / "relpose_results.json")
    summary = res["methods"]["sift"]["summary"]
    assert set(summary) == {"all", "gap_3", "gap_6"}
    assert summary["all"]["num_pairs"] == summary["gap_3"]["num_pairs"] + summary["gap_6"]["num_pairs"] > 0
    assert set(summary["all"]["auc"]) == {"5", "10", "20"}
    assert all(0 <= v <= 1 for v in summary["all"]["auc"].values())
    # exact renders, exact poses: the pose is recovered on most pairs
    assert summary["all"]["failures"] == 0 and summary["all"]["auc"]["20"] > 0.7
    pairs_lines = [ln for ln in (out / "relpose_pairs.txt").read_text().splitlines() if not ln.startswith("#")]
    assert len(pairs_lines) == summary["all"]["num_pairs"]
    # the saved pair list reproduces the run
    out2 = tmp_path / "rel2"
    assert main(["eval", "relpose", "--methods", "sift", "--rgbd", str(rgbd_root), "--pairs",
                 str(out / "relpose_pairs.txt"), "--max-keypoints", "300", "-o", str(out2), "--no-progress"]) == 0
    assert _load(out2 / "relpose_results.json")["methods"]["sift"]["summary"]["all"] == summary["all"]


def test_speed(tmp_path):
    out = tmp_path / "speed"
    assert main(["eval", "speed", "--methods", "sift", "orb", "--sizes", "60x80", "96x128", "--repeats", "1",
                 "--threads", "1", "-o", str(out), "--no-progress"]) == 0
    res = _load(out / "speed_results.json")
    assert res["torch_threads"] == 1 and res["repeats"] == 1
    rows = res["methods"]["orb"]["rows"]
    assert [r["size"] for r in rows] == [[60, 80], [96, 128]]
    assert all(r["extract_ms"] > 0 for r in rows)
    assert res["methods"]["orb"]["rows"][0]["descriptor_dim"] == 256
    assert "| sift | 96x128 |" in (out / "speed_results.md").read_text()


@pytest.mark.parametrize("argv, message", [
    (["eval", "speed", "--methods", "no-such-method"], "no-such-method"),
    (["eval", "hpatches", "--methods", "sift", "--setting", "1x1_1", "--synthetic", "."], "unknown setting"),
    (["eval", "speed", "--methods", "sift", "--sizes", "big"], "HxW"),
])
def test_bad_input_fails_before_work(argv, message, tmp_path, capsys):
    out = tmp_path / "never"
    assert main(argv + ["-o", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_missing_data_folders(tmp_path, capsys):
    assert main(["eval", "hpatches", "--methods", "sift", "--hpatches", str(tmp_path / "nope"), "-o",
                 str(tmp_path / "o")]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["eval", "hpatches", "--methods", "sift", "--synthetic", str(tmp_path / "empty"), "-o",
                 str(tmp_path / "o")]) == 2
    assert "no images" in capsys.readouterr().err
