"""3D registration: Kabsch, RANSAC over 3-point rigid fits, the register metrics, FPFH, `featlab eval register`."""
import json

import numpy as np
import pytest
import torch

from featlab.cli import main
from featlab.conf import resolve_conf
from featlab.errors import GeometryError
from featlab.eval import register
from featlab.geometry.depth import project
from featlab.geometry.rigid import estimate_rigid_ransac, kabsch, rigid_errors


def _rotation(axis, deg):
    axis = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    a = np.radians(deg)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * K + (1 - np.cos(a)) * K @ K


def _T(R, t):
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return T


def _open3d_or_skip():
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError) as e:
        pytest.skip(f"Open3D cannot be imported here ({e}); pip install open3d, apt-get install libusb-1.0-0")


# ----------------------------------------------------------------------------------------------- rigid
def test_kabsch_recovers_motion_exactly_and_never_reflects():
    rng = np.random.default_rng(0)
    R, t = _rotation([1, 2, 3], 37.0), np.array([0.3, -0.1, 0.8])
    X0 = rng.normal(size=(20, 3))
    R_est, t_est = kabsch(X0, X0 @ R.T + t)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    np.testing.assert_allclose(t_est, t, atol=1e-12)
    # a mirrored cloud has no rotation that fits: the result is still a proper rotation
    R_m, _ = kabsch(X0, X0 * [1, 1, -1])
    assert np.linalg.det(R_m) == pytest.approx(1.0)
    # weights: a zero-weight outlier does not move the fit
    X1 = X0 @ R.T + t
    X1[0] += 5.0
    w = np.ones(20)
    w[0] = 0
    np.testing.assert_allclose(kabsch(X0, X1, w)[0], R, atol=1e-12)
    with pytest.raises(GeometryError):
        kabsch(X0[:2], X1[:2])


def test_ransac_recovers_known_motion_under_half_outliers():
    rng = np.random.default_rng(1)
    R, t = _rotation([0, 1, 0.2], 25.0), np.array([0.5, 0.1, -0.3])
    X0 = rng.uniform(-1, 1, (400, 3)) + [0, 0, 3]
    X1 = X0 @ R.T + t
    outlier = rng.random(400) < 0.5
    X1[outlier] = rng.uniform(-1, 1, (outlier.sum(), 3)) + [0, 0, 3]
    R_est, t_est, inliers = estimate_rigid_ransac(X0, X1, threshold=0.02, rng=0)
    np.testing.assert_allclose(R_est, R, atol=1e-9)  # refined on the exact inliers: exact
    np.testing.assert_allclose(t_est, t, atol=1e-9)
    np.testing.assert_array_equal(inliers, ~outlier)
    # reproducible for a seed
    R2, _, _ = estimate_rigid_ransac(X0, X1, threshold=0.02, rng=0)
    np.testing.assert_array_equal(R2, R_est)


def test_ransac_noise_free_and_failures():
    rng = np.random.default_rng(2)
    R, t = _rotation([1, 0, 0], 5.0), np.array([0.02, 0.0, 0.05])
    X0 = rng.normal(size=(10, 3))
    R_est, t_est, inl = estimate_rigid_ransac(X0, X0 @ R.T + t)
    assert inl.all() and rigid_errors(_T(R, t), R_est, t_est) == pytest.approx((0.0, 0.0), abs=1e-9)
    # fewer than 3 matches, or collinear points only: no model
    assert estimate_rigid_ransac(X0[:2], X0[:2])[0] is None
    line = np.outer(np.linspace(0, 1, 10), [1.0, 2.0, 3.0])
    assert estimate_rigid_ransac(line, line + 0.1)[0] is None
    with pytest.raises(GeometryError):
        estimate_rigid_ransac(X0, X0[:5])
    with pytest.raises(GeometryError):
        estimate_rigid_ransac(X0, X0, threshold=0)


def test_rigid_errors_hand_made():
    T = _T(np.eye(3), [0.1, 0.0, 0.0])
    err_R, err_t = rigid_errors(T, _rotation([0, 0, 1], 3.0), np.array([0.1, 0.04, 0.0]))
    assert err_R == pytest.approx(3.0) and err_t == pytest.approx(0.04)
    assert rigid_errors(T, None, None) == (np.inf, np.inf)


# ----------------------------------------------------------------------------------------------- metrics
def test_lift_and_colour_mapping_round_trip():
    K = np.array([[100.0, 0, 32], [0, 100.0, 24], [0, 0, 1]])
    depth = np.full((48, 64), 2.0, np.float32)
    depth[:, :10] = 0.0
    pts = np.array([[5.5, 5.5], [20.25, 30.5], [60.0, 1.0]])
    X, valid = register.lift_keypoints(pts, depth, K)
    assert valid.tolist() == [False, True, True]
    back, z = project(torch.from_numpy(X[None]), torch.from_numpy(K))
    np.testing.assert_allclose(back[0].numpy()[valid], pts[valid], atol=1e-9)
    np.testing.assert_allclose(z[0].numpy()[valid], 2.0)
    # colour -> depth pixels: identity for one K; about the principal point by f_depth / f_colour otherwise
    np.testing.assert_allclose(register.colour_to_depth_pixels(pts, K, K), pts)
    Kc = K.copy()
    Kc[0, 0] = Kc[1, 1] = 50.0
    np.testing.assert_allclose(register.colour_to_depth_pixels([[32, 24], [42, 24]], Kc, K), [[32, 24], [52, 24]])


def test_score_and_summary_on_hand_made_pairs():
    conf = resolve_conf(register.default_conf, None, "register")
    T = _T(_rotation([0, 1, 0], 10.0), [0.2, 0.0, 0.0])
    X0 = np.array([[0, 0, 2.0], [1, 0, 2], [0, 1, 2], [1, 1, 3], [0.5, 0.2, 2.5]])
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    X1[3] += [0, 0, 0.5]  # one wrong match, 50 cm off
    X1[4] += [0, 0.08, 0]  # one within 10 cm
    rec = register.score_matches(X0, X1, T[:3, :3], T[:3, 3], T, conf)
    assert rec["inlier_ratio"] == pytest.approx(4 / 5) and rec["num_matches"] == 5 and rec["num_inliers"] == 3
    assert rec["success"] == {"5deg_10cm": True, "2deg_5cm": True}
    off = register.score_matches(X0, X1, _rotation([0, 1, 0], 13.0), T[:3, 3] + [0.03, 0, 0], T, conf)
    assert off["success"] == {"5deg_10cm": True, "2deg_5cm": False}
    assert off["error_R"] == pytest.approx(3.0) and off["error_t"] == pytest.approx(0.03)
    fail = register.score_matches(X0[:0], X1[:0], None, None, T, conf)
    assert fail["failed"] and fail["inlier_ratio"] == 0 and not any(fail["success"].values())
    assert register.identity_passes(T, conf.thresholds) == {"5deg_10cm": False, "2deg_5cm": False}
    assert register.identity_passes(_T(np.eye(3), [0.04, 0, 0]), conf.thresholds) == \
        {"5deg_10cm": True, "2deg_5cm": True}
    common = {"identity_passes": {"5deg_10cm": True, "2deg_5cm": False}, "gt_rotation": 4.0, "gt_translation": 0.05,
              "num_keypoints0": 10, "num_keypoints1": 20, "seconds_register": 0.1}
    s = register.summarize([{**rec, **common}, {**off, **common}, {**fail, **common}], conf)
    assert s["recall"] == pytest.approx({"5deg_10cm": 2 / 3, "2deg_5cm": 1 / 3})
    assert s["identity_recall"] == {"5deg_10cm": 1.0, "2deg_5cm": 0.0}
    assert s["feature_match_recall"] == pytest.approx(2 / 3) and s["failures"] == 1
    assert s["median_error_R"] == pytest.approx(3.0) and s["mean_num_keypoints"] == 15


# ----------------------------------------------------------------------------------------------- data
def _render(root, size):
    from featlab.datasets.render import render_collection, write_7scenes

    write_7scenes(render_collection({"num_frames": 6, "image_size": size, "step": 2.0}), root)
    return root


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    """A rendered (synthetic) room with boxes, 7-Scenes layout: exact depth, K and poses."""
    return _render(tmp_path_factory.mktemp("register") / "synthetic-room", [96, 128])


@pytest.fixture(scope="module")
def small_room(tmp_path_factory):
    """The same room at 60 x 80 (~4.5k points in 2.5 cm voxels: FPFH stays fast)."""
    return _render(tmp_path_factory.mktemp("register") / "synthetic-small-room", [60, 80])


def test_fpfh_registers_a_rendered_pair(small_room):
    _open3d_or_skip()
    from featlab.datasets.rgbd import RGBDSequence
    from featlab.extractors.depth_baselines import fpfh_register

    seq = RGBDSequence(small_room)
    T = seq.relative_pose(0, 2)
    out = fpfh_register(seq.load_depth(0), seq.load_depth(2), seq.K, seq.K, {"max_iters": 20000})
    err_R, err_t = rigid_errors(T, out["R"], out["t"])
    assert err_R < 5 and err_t < 0.10 and len(out["matches"]) > 100


def _eval(root, methods, out, pairs="2"):
    return ["eval", "register", "--methods", *methods, "--rgbd", str(root), "--frames", "0", "5", "--gaps", "2",
            "--max-pairs-per-gap", pairs, "--max-keypoints", "500", "--max-iters", "20000", "-o", str(out),
            "--no-progress"]


def test_eval_register_end_to_end(room, tmp_path, capsys):
    methods = ["sift-depth", "rootsift"]
    out = tmp_path / "reg"
    argv = _eval(room, methods, out)
    assert main(argv) == 0
    for name in ("register_results.json", "register_results.md", "register_errors.png", "register_pairs.txt"):
        assert (out / name).is_file()
    res = json.loads((out / "register_results.json").read_text())
    assert list(res["methods"]) == methods and res["source"]["synthetic"] is True
    for name in methods:
        s = res["methods"][name]["summary"]["all"]
        assert s["num_pairs"] == 2 and set(s["recall"]) == {"5deg_10cm", "2deg_5cm"}
    # exact renders, one K: colour keypoints lifted at their own pixels register every pair
    rs = res["methods"]["rootsift"]["summary"]["all"]
    assert rs["recall"]["2deg_5cm"] == 1.0 and rs["mean_inlier_ratio"] > 0.5
    assert res["methods"]["sift-depth"]["inputs"] == "depth"
    md = (out / "register_results.md").read_text()
    assert "(identity)" in md and "share one K" in md
    # the second run reads every feature from the cache
    capsys.readouterr()
    assert main(argv) == 0
    res2 = json.loads((out / "register_results.json").read_text())
    assert all(m["cache_misses"] == 0 and m["cache_hits"] > 0 for m in res2["methods"].values())
    assert res2["methods"]["rootsift"]["summary"]["all"]["recall"] == rs["recall"]


def test_eval_register_fpfh_cli(small_room, tmp_path):
    _open3d_or_skip()
    out = tmp_path / "fpfh"
    assert main(_eval(small_room, ["fpfh"], out, pairs="1")) == 0
    res = json.loads((out / "register_results.json").read_text())
    m = res["methods"]["fpfh"]
    assert m["inputs"] == "point cloud" and m["cache_misses"] == 2 and m["fpfh"]["voxel"] == 0.025
    s = m["summary"]["all"]
    assert s["num_pairs"] == 1 and s["recall"]["5deg_10cm"] == 1.0 and s["mean_num_matches"] > 100


def test_eval_register_bad_input(room, tmp_path, capsys):
    base = ["eval", "register", "--rgbd", str(room), "-o", str(tmp_path / "o"), "--frames", "0", "5", "--gaps", "2"]
    assert main(base + ["--methods", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(base + ["--methods", "sift-depth", "sift-depth"]) == 2
    assert main(base + ["--methods", "sift-depth", "--ransac-threshold", "0"]) == 2
    assert main(["eval", "register", "--rgbd", str(tmp_path / "missing"), "--methods", "sift-depth", "-o",
                 str(tmp_path / "o")]) == 2
