"""Relative-pose protocols: SuperGlue's estimator (the default everywhere), the 7-Scenes colour intrinsics and the
wide-baseline benchmark on a posed COLMAP collection (a rendered scene written here as a COLMAP text model)."""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from featlab.cli import build_parser, main
from featlab.datasets.colmap import read_colmap
from featlab.datasets.render import render_collection, write_7scenes
from featlab.datasets.rgbd import SEVEN_SCENES_K, RGBDSequence
from featlab.errors import ConfigError
from featlab.eval import relpose
from featlab.geometry import essential_from_pose, relative_pose_error, rotation_angle, sampson_distance
from featlab.geometry.robust import (RELPOSE_DEFAULTS, estimate_relative_pose, recover_best_pose,
                                     relative_pose_settings)
from scenes import write_colmap_text
from test_geometry import noisy_matches, pose_matrix, rotation, two_view_scene


def normalised(x, K):
    """(N, 2) pixels -> K^-1 x (N, 2)."""
    q = np.c_[x, np.ones(len(x))] @ np.linalg.inv(K).T
    return q[:, :2] / q[:, 2:]


# ------------------------------------------------------------------------------------------- SuperGlue estimator
class TestSuperGlueEstimator:
    def test_is_the_default_everywhere(self):
        assert inspect.signature(estimate_relative_pose).parameters["method"].default == "superglue"
        assert relpose.default_conf["estimator"] == "superglue"
        args = build_parser().parse_args(["eval", "relpose", "--methods", "sift", "--rgbd", "x", "-o", "y"])
        assert args.estimator == "superglue"
        assert relative_pose_settings() == {"method": "superglue", "threshold": 1.0, "confidence": 0.99999,
                                            "max_iters": 1000}

    def test_settings_names_and_errors(self):
        # the old default's name still reads (saved run configs) and is reported under its real name
        assert relative_pose_settings("opencv") == {"method": "magsac", "threshold": 1.0,
                                                    **RELPOSE_DEFAULTS["magsac"]}
        assert relative_pose_settings("poselib", 2.0, 0.999, 50)["max_iters"] == 50
        for bad in ({"method": "ransac"}, {"threshold": 0.0}, {"confidence": 1.0}, {"max_iters": 0}):
            with pytest.raises(ConfigError):
                relative_pose_settings(**bad)
        K0, K1, _, _, x0, x1 = two_view_scene(0, n=20)
        with pytest.raises(ConfigError, match="ransac"):
            estimate_relative_pose(x0, x1, K0, K1, method="ransac")

    @pytest.mark.parametrize("seed", [0, 2, 3])
    def test_exact_on_noise_free_scene(self, seed):
        K0, K1, T, _, x0, x1 = two_view_scene(seed)
        R, t, mask = estimate_relative_pose(x0, x1, K0, K1)
        err_R, err_t = relative_pose_error(T, R, t)
        assert err_R < 1e-6 and err_t < 1e-5
        assert mask.all()

    def test_exact_only_up_to_the_threshold(self):
        # SuperGlue's protocol keeps the first minimal-sample model with the most inliers, without a refit: in
        # scene 1 a wrong 5-point solution puts all 300 exact matches within 1 px and stops RANSAC. It is a
        # valid answer at 1 px (every Sampson distance below it) and a 0.1 px threshold recovers the exact pose.
        K0, K1, T, _, x0, x1 = two_view_scene(1)
        R, t, mask = estimate_relative_pose(x0, x1, K0, K1, threshold=1.0)
        err_R, err_t = relative_pose_error(T, R, t)
        assert mask.all() and 0.1 < err_R < 1.0 and err_t < 10.0
        f_mean = np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
        q0, q1 = normalised(x0, K0), normalised(x1, K1)
        assert sampson_distance(q0, q1, essential_from_pose(pose_matrix(R, t))).max() * f_mean < 1.0
        R, t, _ = estimate_relative_pose(x0, x1, K0, K1, threshold=0.1)
        assert max(relative_pose_error(T, R, t)) < 1e-5

    def test_exact_under_outliers(self):
        K0, K1, T, _, x0, x1 = two_view_scene(4)
        p0, p1, outliers = noisy_matches(x0, x1, np.random.default_rng(5), noise=0.0, outlier_ratio=0.4)
        R, t, mask = estimate_relative_pose(p0, p1, K0, K1)
        err_R, err_t = relative_pose_error(T, R, t)
        assert err_R < 1e-6 and err_t < 1e-5
        assert mask[~outliers].all() and (mask & outliers).sum() <= 3  # a random point may fall within 1 px

    def test_noisy_with_outliers(self):
        K0, K1, T, _, x0, x1 = two_view_scene(7)
        p0, p1, outliers = noisy_matches(x0, x1, np.random.default_rng(2))
        R, t, mask = estimate_relative_pose(p0, p1, K0, K1)
        err_R, err_t = relative_pose_error(T, R, t)
        assert err_R < 2.0 and err_t < 10.0  # the best minimal sample, no refit: looser than MAGSAC++ / PoseLib
        assert (mask & ~outliers).sum() > 0.6 * (~outliers).sum() and (mask & outliers).sum() < 5

    def test_threshold_is_pixels_over_the_mean_focal(self):
        K0, K1, T, _, x0, x1 = two_view_scene(3)
        F = np.linalg.inv(K1).T @ essential_from_pose(T) @ np.linalg.inv(K0)
        lines = np.c_[x0, np.ones(len(x0))] @ F.T  # epipolar lines of x0 in image 1
        normals = lines[:, :2] / np.linalg.norm(lines[:, :2], axis=1, keepdims=True)
        moved = np.arange(len(x0)) % 5 == 0
        p1 = x1 + 4.0 * moved[:, None] * normals  # 4 px off the epipolar line, in image 1
        _, _, mask = estimate_relative_pose(x0, p1, K0, K1, threshold=1.0)
        np.testing.assert_array_equal(mask, ~moved)
        _, _, mask = estimate_relative_pose(x0, p1, K0, K1, threshold=8.0)
        assert mask.all()

    def test_best_candidate_is_the_one_in_front(self):
        K0, K1, T, _, x0, x1 = two_view_scene(6)
        q0, q1 = normalised(x0, K0), normalised(x1, K1)
        E_true = essential_from_pose(T)  # all 300 points in front of both cameras
        E_other = essential_from_pose(pose_matrix(np.eye(3), [0.0, 0.0, 1.0]))  # forward motion: 94 of them
        mask = np.ones(len(q0), bool)
        for stack in ([E_other, E_true], [E_true, E_other]):
            R, t = recover_best_pose(np.concatenate(stack), q0, q1, mask)
            assert relative_pose_error(T, R, t)[0] < 1e-6
        assert recover_best_pose(E_true, q0, q1, np.zeros(len(q0), bool)) == (None, None)  # only inliers count


# ------------------------------------------------------------------------------------------- 7-Scenes intrinsics
def _tiny_7scenes(root: Path, K=None) -> Path:
    root.mkdir(parents=True)
    cv2.imwrite(str(root / "frame-000000.color.png"), np.zeros((48, 64, 3), np.uint8))
    cv2.imwrite(str(root / "frame-000000.depth.png"), np.full((48, 64), 1000, np.uint16))
    np.savetxt(root / "frame-000000.pose.txt", np.eye(4))
    if K is not None:
        np.savetxt(root / "camera-intrinsics.txt", K)
    return root


class TestSevenScenesIntrinsics:
    published = np.array([[SEVEN_SCENES_K[0], 0, SEVEN_SCENES_K[1]], [0, SEVEN_SCENES_K[0], SEVEN_SCENES_K[2]],
                          [0, 0, 1]])

    def test_colour_focal_by_default(self, tmp_path):
        for name, K in (("published", self.published), ("no-file", None)):
            seq = RGBDSequence(_tiny_7scenes(tmp_path / name, K))
            np.testing.assert_array_equal(seq.K, [[525, 0, 320], [0, 525, 240], [0, 0, 1]])
            assert seq.intrinsics.startswith("fx = fy = 525 px, principal point (320, 240) (7-Scenes colour")
        assert "585 is the depth sensor's" in RGBDSequence(tmp_path / "published").intrinsics

    def test_other_files_and_overrides(self, tmp_path):
        own = np.array([[250.0, 0, 32], [0, 250, 24], [0, 0, 1]])  # e.g. a rendered sequence: used as is
        seq = RGBDSequence(_tiny_7scenes(tmp_path / "own", own))
        np.testing.assert_array_equal(seq.K, own)
        assert seq.intrinsics == "fx = fy = 250 px, principal point (32, 24) (camera-intrinsics.txt)"
        seq = RGBDSequence(_tiny_7scenes(tmp_path / "published", self.published), {"focal": 585.0})
        assert seq.K[0, 0] == 585 and seq.intrinsics.startswith("fx = fy = 585 px, principal point (320, 240) "
                                                                "(focal given, otherwise 7-Scenes colour")

    def test_focal_stated_in_every_output(self, tmp_path):
        rendered = render_collection({"num_frames": 3, "image_size": [96, 128], "step": 4.0, "seed": 3})
        root = write_7scenes(rendered, tmp_path / "synthetic-room")
        np.savetxt(root / "camera-intrinsics.txt", self.published)  # as the real 7-Scenes file
        for extra, focal in (([], "525"), (["--focal", "585"], "585")):
            out = tmp_path / f"out{focal}"
            assert main(["eval", "relpose", "--methods", "sift", "--rgbd", str(root), "--gaps", "1",
                         "--min-covisibility", "0", "--max-keypoints", "200", "--no-progress", "-o", str(out),
                         *extra]) == 0
            res = json.loads((out / "relpose_results.json").read_text())
            assert res["source"]["intrinsics"].startswith(f"fx = fy = {focal} px")
            assert f"fx = fy = {focal}" in res["title"]
            md = (out / "relpose_results.md").read_text()
            assert f"Intrinsics: fx = fy = {focal} px" in md


# ------------------------------------------------------------------------------------------- COLMAP benchmark


@pytest.fixture(scope="module")
def colmap_scene(tmp_path_factory):
    rendered = render_collection({"num_frames": 5, "image_size": [360, 480], "step": 5.0, "seed": 3})
    return rendered, write_colmap_text(rendered, tmp_path_factory.mktemp("colmap") / "room")


class TestColmapBenchmark:
    def test_text_model_round_trip(self, colmap_scene):
        rendered, root = colmap_scene
        coll = read_colmap(root / "sparse")
        assert coll.name == "room" and coll.names == [f"{n}.png" for n in rendered.names]
        np.testing.assert_allclose(coll.K, rendered.K, atol=1e-9)
        np.testing.assert_allclose(coll.T_w2c, rendered.T_w2c, atol=1e-9)
        assert relpose.gap_pairs(coll, [2, 3]) == [(0, 2), (1, 3), (2, 4), (0, 3), (1, 4)]

    def test_end_to_end(self, colmap_scene, tmp_path):
        rendered, root = colmap_scene
        out = tmp_path / "out"
        assert main(["eval", "relpose", "--methods", "sift", "--colmap", str(root), "--gaps", "2", "3",
                     "--image-size", "320", "--max-keypoints", "500", "--no-progress", "-o", str(out)]) == 0
        res = json.loads((out / "relpose_results.json").read_text())
        used = {k: res["conf"][k] for k in ("estimator", "ransac_threshold", "confidence", "max_iters")}
        assert used == {"estimator": "superglue", "ransac_threshold": 1.0, "confidence": 0.99999, "max_iters": 1000}
        records = res["methods"]["sift"]["pairs"]
        assert [tuple(r["pair"]) for r in records] == [(0, 2), (1, 3), (2, 4), (0, 3), (1, 4)]
        assert all(r["image_size"] == [240, 320] for r in records)  # 360x480 -> longest side 320, aspect kept
        for r in records:  # the ground-truth angle of each pair, from the poses
            i, j = r["pair"]
            assert r["gt_rotation"] == pytest.approx(rotation_angle(rendered.relative_pose(i, j)[:3, :3]))
        summary = res["methods"]["sift"]["summary"]
        assert set(summary) == {"all", "gap_2", "gap_3"}
        # exact renders and poses, K scaled with the images: the pose is recovered
        assert summary["all"]["failures"] == 0 and summary["all"]["auc"]["20"] > 0.8
        md = (out / "relpose_results.md").read_text()
        assert "`superglue`" in md and "confidence 1" not in md and "confidence 0.99999" in md
        assert "## image gap 2: 3 pairs, ground-truth rotation" in md and "## image gap 3: 2 pairs" in md
        lines = [ln for ln in (out / "relpose_pairs.txt").read_text().splitlines() if not ln.startswith("#")]
        assert lines[0] == "frame-000000.png frame-000002.png"
        # the saved pairs reproduce the run; another estimator reuses the cached features and says so
        out2 = tmp_path / "out2"
        assert main(["eval", "relpose", "--methods", "sift", "--colmap", str(root), "--pairs",
                     str(out / "relpose_pairs.txt"), "--image-size", "320", "--max-keypoints", "500",
                     "--estimator", "magsac", "--no-progress", "-o", str(out2)]) == 0
        res2 = json.loads((out2 / "relpose_results.json").read_text())
        assert [r["pair"] for r in res2["methods"]["sift"]["pairs"]] == [r["pair"] for r in records]
        assert res2["conf"]["estimator"] == "magsac" and res2["conf"]["confidence"] == 0.9999
        assert "`magsac`" in (out2 / "relpose_results.md").read_text()

    @pytest.mark.parametrize("extra, message", [
        (["--focal", "525"], "--focal apply to --rgbd only"),
        (["--frames", "0", "3"], "--frames apply to --rgbd only"),
        (["--estimator", "poselib", "--confidence", "2"], "confidence"),
    ])
    def test_bad_options(self, colmap_scene, tmp_path, capsys, extra, message):
        out = tmp_path / "never"
        assert main(["eval", "relpose", "--methods", "sift", "--colmap", str(colmap_scene[1]), "-o", str(out),
                     *extra]) == 2
        assert message in capsys.readouterr().err
        assert not out.exists()

    def test_image_size_is_colmap_only(self, tmp_path, capsys):
        root = _tiny_7scenes(tmp_path / "seq")
        assert main(["eval", "relpose", "--methods", "sift", "--rgbd", str(root), "--image-size", "320", "-o",
                     str(tmp_path / "never")]) == 2
        assert "--image-size applies to --colmap only" in capsys.readouterr().err


STRECHA = Path(__file__).resolve().parents[2] / "shared" / "data" / "posed" / "strecha" / "Herz-Jesus-P25"


@pytest.mark.slow
def test_herz_jesus_pairs_and_angles():
    if not STRECHA.is_dir():
        pytest.skip(f"Strecha Herz-Jesus-P25 not found at {STRECHA}")
    coll = read_colmap(STRECHA / "sparse")
    assert len(coll) == 25 and coll.name == "Herz-Jesus-P25"
    pairs = relpose.gap_pairs(coll, [3, 4, 5, 6, 7])
    assert len(pairs) == 22 + 21 + 20 + 19 + 18
    angles = {d: np.median([rotation_angle(coll.relative_pose(i, j)[:3, :3]) for i, j in pairs if j - i == d])
              for d in (3, 7)}
    # measured: not 10 degrees a step (the images are two passes along the facade), but wide all the same
    assert 15 < angles[3] < 35 and 35 < angles[7] < 60
