"""Homography benchmark protocols: the overlap-mode warp presets, role-separated synthetic streams, the GT rotation
and scale of a pair and its bins, the D2-Net sequence list and the aspect-preserving resize, end to end on tiny data
made here."""
from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from featlab.cli import main
from featlab.datasets import HPatches, SyntheticHomographyPairs, sample_homography
from featlab.datasets.homographies import PRESETS, corners_inside, overlap_fraction
from featlab.datasets.hpatches import D2NET_EXCLUDED
from featlab.datasets.synthetic import preset_conf
from featlab.errors import ConfigError, GeometryError
from featlab.eval import metrics
from featlab.eval.hpatches import D2NET_MAX_KEYPOINTS, protocol_conf, resize_pair, summarize_bins
from featlab.geometry.homography import local_affine, local_rotation_scale, rescale_homography

SIZE = (240, 320)
CENTRE = (SIZE[1] / 2, SIZE[0] / 2)


def warp(H, points):
    ph = np.c_[points, np.ones(len(points))] @ np.asarray(H).T
    return ph[:, :2] / ph[:, 2:]


def similarity(angle_deg, scale, centre=(0.0, 0.0), shift=(0.0, 0.0)):
    """x -> c + shift + scale R(angle) (x - c)."""
    a = math.radians(angle_deg)
    A = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    c = np.asarray(centre, float)
    H = np.eye(3)
    H[:2, :2], H[:2, 2] = A, c + np.asarray(shift, float) - A @ c
    return H


# ---------------------------------------------------------------------------------------------- rotation and scale
class TestLocalRotationScale:
    @pytest.mark.parametrize("angle, scale", [(0.0, 1.0), (25.0, 1.7), (-50.0, 0.55), (170.0, 2.0)])
    def test_similarity(self, angle, scale):
        H = similarity(angle, scale, centre=CENTRE, shift=(12.0, -7.0))
        a, s = local_rotation_scale(H, CENTRE)
        assert a == pytest.approx(angle, abs=1e-9) and s == pytest.approx(scale, rel=1e-12)

    def test_anisotropic_affine(self):
        # R(30 deg) diag(2, 0.5): the rotation factor is R, the scale sqrt(2 * 0.5) = 1
        H = np.eye(3)
        H[:2, :2] = similarity(30.0, 1.0)[:2, :2] @ np.diag([2.0, 0.5])
        a, s = local_rotation_scale(H, (50.0, 80.0))
        assert a == pytest.approx(30.0, abs=1e-9) and s == pytest.approx(1.0, rel=1e-12)

    def test_perspective_is_local(self):
        # a perspective row changes the local affine from point to point; compare with finite differences
        H = similarity(20.0, 1.3, centre=CENTRE) @ np.array([[1, 0, 0], [0, 1, 0], [1e-3, -5e-4, 1.0]])
        p, eps = np.array([100.0, 60.0]), 1e-5
        J_fd = np.stack([(warp(H, [p + e])[0] - warp(H, [p - e])[0]) / (2 * eps) for e in np.eye(2) * eps], 1)
        np.testing.assert_allclose(local_affine(H, p), J_fd, atol=1e-6)
        s_here = local_rotation_scale(H, p)[1]
        s_there = local_rotation_scale(H, (300.0, 200.0))[1]
        assert abs(s_here - s_there) > 0.05

    def test_reflection_and_infinity_raise(self):
        with pytest.raises(GeometryError):
            local_rotation_scale(np.diag([-1.0, 1.0, 1.0]), (1.0, 1.0))
        with pytest.raises(GeometryError):  # the line x = 100 goes to infinity
            local_rotation_scale(np.array([[1.0, 0, 0], [0, 1, 0], [-0.01, 0, 1]]), (100.0, 5.0))
        assert metrics.gt_rotation_scale(np.diag([-1.0, 1.0, 1.0]), (10, 10)) == (None, None)

    def test_rescale_homography(self):
        H = np.array([[1.1, 0.1, 3.0], [0.0, 0.9, -2.0], [1e-3, 0.0, 1.0]])
        s0, s1 = (0.5, 0.25), (2.0, 0.75)  # resized / original of each image
        Hs = rescale_homography(H, s0, s1)
        p = np.array([[10.0, 20.0], [33.0, 7.5]])  # original image 0
        np.testing.assert_allclose(warp(Hs, p * s0), warp(H, p) * s1, atol=1e-12)


class TestBins:
    def test_bin_of(self):
        assert metrics.bin_of(0.0, metrics.ROTATION_BINS) == "0-10"
        assert metrics.bin_of(10.0, metrics.ROTATION_BINS) == "10-20"  # [lo, hi)
        assert metrics.bin_of(59.9, metrics.ROTATION_BINS) == "45-60"
        assert metrics.bin_of(95.0, metrics.ROTATION_BINS) == "60+"
        assert metrics.bin_of(0.59, metrics.SCALE_BINS) == "<0.6"
        assert metrics.bin_of(1.0, metrics.SCALE_BINS) == "1.0-1.2"
        assert metrics.bin_of(1.69, metrics.SCALE_BINS) == "1.4-1.7"
        assert metrics.bin_of(3.0, metrics.SCALE_BINS) == "1.7+"
        assert metrics.bin_of(None, metrics.SCALE_BINS) is None

    def test_summarize_bins_groups_by_abs_angle_and_omits_empty_bins(self):
        from featlab.conf import resolve_conf
        from featlab.eval.hpatches import default_conf

        conf = resolve_conf(default_conf, {})
        n = len(conf.mma_thresholds)

        def record(angle, scale, mma):
            H = similarity(angle, scale, centre=CENTRE)
            rot, sc = metrics.gt_rotation_scale(H, SIZE)
            return {"gt_rotation": rot, "gt_scale": sc, "mma": [mma] * n, "homography_accuracy": [1.0, 1.0, 1.0],
                    "corner_error": 0.5, "matching_score": 0.5, "repeatability": 0.5, "num_keypoints0": 10,
                    "num_keypoints1": 10, "num_matches": 5, "num_inliers": 5, "homography_failed": False}

        records = [record(-35.0, 0.5, 0.2), record(40.0, 1.9, 0.4), record(5.0, 1.1, 1.0)]
        by_rot = summarize_bins(records, conf, "rotation")
        assert list(by_rot) == ["0-10", "30-45"]  # -35 and 40 share a bin; empty bins are left out
        assert by_rot["30-45"]["num_pairs"] == 2 and by_rot["30-45"]["mma"]["3"] == pytest.approx(0.3)
        by_scale = summarize_bins(records, conf, "scale")
        assert list(by_scale) == ["<0.6", "1.0-1.2", "1.7+"]
        assert by_scale["<0.6"]["mma"]["1"] == pytest.approx(0.2)


# ---------------------------------------------------------------------------------------------- warp presets
def _draws(preset, n=300, size=SIZE):
    return [sample_homography(np.random.default_rng(seed), size, PRESETS[preset]) for seed in range(n)]


class TestPresets:
    @pytest.mark.parametrize("preset, rotation, lo, hi", [("moderate", 30.0, 0.7, 1.4), ("hard", 60.0, 0.5, 2.0)])
    def test_rotation_and_scale_measured_from_H_honour_the_ranges(self, preset, rotation, lo, hi):
        assert PRESETS[preset]["perspective"] == {"moderate": 0.2, "hard": 0.35}[preset]
        measured = np.array([local_rotation_scale(H, CENTRE) for H in _draws(preset)])
        angles, scales = measured[:, 0], measured[:, 1]
        assert np.abs(angles).max() <= rotation + 1e-9
        assert scales.min() >= lo * (1 - 1e-9) and scales.max() <= hi * (1 + 1e-9)
        # the ranges are used, on both sides of 1
        assert np.abs(angles).max() > 0.9 * rotation and (angles > 0).any() and (angles < 0).any()
        assert scales.min() < lo * 1.05 and scales.max() > hi / 1.05
        assert 0.3 < (scales < 1).mean() < 0.7

    @pytest.mark.parametrize("preset, min_overlap", [("moderate", 0.65), ("hard", 0.5)])
    def test_zoom_outs_leave_a_border_and_the_overlap_stays_large(self, preset, min_overlap):
        Hs = _draws(preset)
        zoom_out = [H for H in Hs if local_rotation_scale(H, CENTRE)[1] < 0.9]
        assert zoom_out and not any(corners_inside(H, SIZE) for H in zoom_out)  # image 1 has an empty border
        overlaps = np.array([overlap_fraction(H, SIZE) for H in Hs])
        assert overlaps.min() >= min_overlap and np.median(overlaps) > 0.85

    def test_perspective_is_used(self):
        Hs = _draws("hard", 50)
        assert max(np.abs(H[2, :2]).max() for H in Hs) * SIZE[1] > 0.1  # the projective row is not negligible

    def test_deterministic_per_seed(self):
        a = sample_homography(np.random.default_rng(3), SIZE, PRESETS["hard"])
        b = sample_homography(np.random.default_rng(3), SIZE, PRESETS["hard"])
        c = sample_homography(np.random.default_rng(4), SIZE, PRESETS["hard"])
        np.testing.assert_array_equal(a, b)
        assert np.abs(a - c).max() > 1e-3

    def test_pure_zoom_out_about_the_centre(self):
        conf = {"mode": "overlap", "rotation": 0, "perspective": 0, "scale": [0.5, 0.5], "translation": 0}
        H = sample_homography(np.random.default_rng(0), SIZE, conf)
        p = np.array([[0.0, 0.0], [37.5, 201.0]])
        np.testing.assert_allclose(warp(H, p), np.array(CENTRE) + 0.5 * (p - CENTRE), atol=1e-9)
        assert overlap_fraction(H, SIZE) == pytest.approx(1.0)

    def test_zoom_in_training_warps_are_unchanged(self):
        # the default (zoom-in) warp of seed 0 before perspective was measured in half-sides (then 0.1 of the side)
        H = sample_homography(np.random.default_rng(0), SIZE)
        expected = np.array([[1.4235110993553333e+00, -8.9440115769556505e-01, 2.2033618124383565e+01],
                             [7.5371811919842380e-01, 1.2402439140313142e+00, -2.0180788519323391e+02],
                             [4.5808921516922262e-04, -1.0421060172310563e-03, 1.0]])
        np.testing.assert_allclose(H, expected, rtol=1e-12, atol=1e-12)

    def test_overlap_translation_must_be_a_fraction_of_the_half_side(self):
        with pytest.raises(ConfigError, match="half-side"):
            sample_homography(np.random.default_rng(0), SIZE, {"mode": "overlap"})  # default translation 1.0
        with pytest.raises(ConfigError, match="unknown warp preset"):
            preset_conf("extreme")


# ---------------------------------------------------------------------------------------------- synthetic pairs
@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.png"):
        texture = (rng.random((30, 40, 3)) * 255).astype(np.uint8)
        cv2.imwrite(str(folder / name), cv2.resize(texture, (160, 120), interpolation=cv2.INTER_CUBIC))
    return folder


class TestSyntheticRoles:
    def test_benchmark_and_select_streams_differ(self, photos):
        conf = {"resize": [60, 80], "pairs_per_image": 2, **preset_conf("moderate")}
        bench = SyntheticHomographyPairs(photos, conf)
        assert bench.conf.role == "benchmark"  # the default
        select = SyntheticHomographyPairs(photos, {**conf, "role": "select"})
        again = SyntheticHomographyPairs(photos, {**conf, "role": "benchmark"})
        for k in range(len(bench)):
            assert np.abs(bench[k]["H_0to1"] - select[k]["H_0to1"]).max() > 1e-3
            np.testing.assert_array_equal(bench[k]["H_0to1"], again[k]["H_0to1"])
            np.testing.assert_array_equal(bench[k]["image1"], again[k]["image1"])
        with pytest.raises(ConfigError, match="role"):
            SyntheticHomographyPairs(photos, {"role": "test"})

    def test_empty_border_is_black_after_photometric_changes(self, photos):
        bright = {"brightness": {"prob": 1.0, "max": 0.15}, "noise": {"prob": 1.0, "std": [3.0, 6.0]}}
        conf = {"resize": [60, 80], "pairs_per_image": 6, "photometric": bright,
                "homography": {**PRESETS["moderate"], "scale": [0.6, 0.7]}}  # always a zoom-out
        for item in SyntheticHomographyPairs(photos, conf):
            h, w = 60, 80
            ys, xs = np.mgrid[0:h, 0:w] + 0.5
            src = warp(np.linalg.inv(item["H_0to1"]), np.c_[xs.ravel(), ys.ravel()]).reshape(h, w, 2)
            outside = (src[..., 0] < -1) | (src[..., 0] > w + 1) | (src[..., 1] < -1) | (src[..., 1] > h + 1)
            inside = (src[..., 0] > 1) & (src[..., 0] < w - 1) & (src[..., 1] > 1) & (src[..., 1] < h - 1)
            assert outside.sum() > 0.1 * h * w
            assert (item["image1"][outside] == 0).all()
            assert item["image1"][inside].mean() > 20  # the photo, brightened or not, is there


# ---------------------------------------------------------------------------------------------- HPatches protocols
def _blob_image(size, centres, sigma=1.5):
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    img = sum(np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) for cx, cy in centres)
    img = (np.clip(img, 0, 1) * 250).round().astype(np.uint8)
    return np.repeat(img[..., None], 3, 2)


def _centroid(image, guess, radius=5):
    g = image[..., 0].astype(np.float64)
    x0, y0 = int(guess[0]), int(guess[1])
    win = np.clip(g[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1] - 10, 0, None)
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1] + 0.5
    return np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()


def _write_layout(root, names, size=(90, 120), size_k=(100, 80)):
    """HPatches layout: image 1 of each sequence is ``size``, images 2..6 are portrait ``size_k``; H_1_k a zoom
    0.8 about the origin (OpenCV convention) so that blobs stay inside the smaller images."""
    centres = [(20.5, 30.0), (50.25, 40.75), (80.0, 60.5)]
    H_cv = np.diag([0.8, 0.8, 1.0])
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        img1 = _blob_image(size, centres)
        cv2.imwrite(str(folder / "1.ppm"), img1[..., ::-1])
        for k in range(2, 7):
            img = cv2.warpPerspective(img1, H_cv, (size_k[1], size_k[0]), flags=cv2.INTER_LINEAR)
            cv2.imwrite(str(folder / f"{k}.ppm"), img[..., ::-1])
            np.savetxt(folder / f"H_1_{k}", H_cv)
    return centres


class TestHPatchesProtocols:
    def test_d2net_sequence_list(self, tmp_path):
        # two of the 8 high-resolution sequences are present, the other six are absent (simply not there)
        _write_layout(tmp_path, ["i_dc", "v_talent", "i_ok", "v_ok"])
        assert HPatches(tmp_path).sequences == ["i_dc", "i_ok", "v_ok", "v_talent"]
        d2 = HPatches(tmp_path, conf={"exclude": list(D2NET_EXCLUDED)})
        assert d2.sequences == ["i_ok", "v_ok"] and len(d2) == 10
        assert HPatches(tmp_path, split="v", conf={"exclude": list(D2NET_EXCLUDED)}).sequences == ["v_ok"]
        with pytest.raises(ConfigError, match="excluded"):
            HPatches(tmp_path, sequences=["i_dc", "i_ok"], conf={"exclude": list(D2NET_EXCLUDED)})
        assert len(D2NET_EXCLUDED) == 8

    def test_longest_side_resize_keeps_the_aspect_and_adapts_H(self, tmp_path):
        centres = _write_layout(tmp_path, ["v_ok"])
        item = HPatches(tmp_path)[0]
        out = resize_pair(item, (48, 64), "longest-side")
        assert out["image0"].shape == (48, 64, 3)  # 90x120 -> longest side 64
        assert out["image1"].shape == (64, 51, 3)  # 100x80 (portrait) -> 64 x round(51.2)
        # the blobs of the resized image 0, warped by the adapted H, are the blobs of the resized image 1
        for c in np.array(centres) * (64 / 120, 48 / 90):
            q = warp(out["H_0to1"], [c])[0]
            np.testing.assert_allclose(_centroid(out["image1"], q), q, atol=0.25)
        exact = resize_pair(item, (48, 64), "exact")
        assert exact["image1"].shape == (48, 64, 3)
        with pytest.raises(ConfigError):
            resize_pair(item, (48, 64), "shortest-side")

    def test_protocol_conf(self):
        assert protocol_conf() == {"protocol": "resized", "resize": [480, 640], "resize_mode": "exact",
                                   "max_keypoints": 1000}
        assert protocol_conf("resized", "240x320_300", resize_mode="longest-side")["resize_mode"] == "longest-side"
        d2 = protocol_conf("d2net")
        assert d2["resize"] is None and d2["max_keypoints"] == D2NET_MAX_KEYPOINTS == 8000
        assert protocol_conf("d2net", max_keypoints=500)["max_keypoints"] == 500
        for kwargs in ({"setting": "240x320_300"}, {"resize": [96, 128]}, {"resize_mode": "exact"}):
            with pytest.raises(ConfigError, match="d2net"):
                protocol_conf("d2net", **kwargs)
        with pytest.raises(ConfigError, match="protocol"):
            protocol_conf("superpoint")
        with pytest.raises(ConfigError, match="resize mode"):
            protocol_conf("resized", resize_mode="fit")


# ---------------------------------------------------------------------------------------------- CLI
def _textured_layout(root, names):
    """Sequences whose images are a textured photo and its mild warps (SIFT finds and matches keypoints)."""
    rng = np.random.default_rng(0)
    base = cv2.resize((rng.random((24, 32, 3)) * 255).astype(np.uint8), (128, 96), interpolation=cv2.INTER_CUBIC)
    for name in names:
        folder = root / name
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "1.ppm"), base[..., ::-1])
        for k in range(2, 7):
            H = similarity(3.0 * k, 1.0, centre=(64, 48))
            cv2.imwrite(str(folder / f"{k}.ppm"), cv2.warpPerspective(base, H, (128, 96))[..., ::-1])
            np.savetxt(folder / f"H_1_{k}", H)


def test_cli_d2net_protocol(tmp_path):
    root = tmp_path / "hp"
    _textured_layout(root, ["i_pencils", "v_ok"])
    out = tmp_path / "out"
    assert main(["eval", "hpatches", "--methods", "sift", "--hpatches", str(root), "--protocol", "d2net",
                 "--max-keypoints", "200", "-o", str(out), "--no-progress"]) == 0
    res = json.loads((out / "hpatches_results.json").read_text())
    assert res["conf"]["protocol"] == "d2net" and res["conf"]["resize"] is None
    assert res["source"]["sequences"] == ["v_ok"]  # i_pencils is one of the 8 high-resolution sequences
    pairs = res["methods"]["sift"]["pairs"]
    assert len(pairs) == 5
    assert [round(p["gt_rotation"]) for p in pairs] == [6, 9, 12, 15, 18] and all(
        p["gt_scale"] == pytest.approx(1.0) for p in pairs)
    assert list(res["methods"]["sift"]["summary_by_rotation"]) == ["0-10", "10-20"]
    md = (out / "hpatches_results.md").read_text()
    assert md.startswith("# HPatches") and "d2net protocol" in md.splitlines()[0]
    assert "full resolution" in md and "108-sequence list" in md and "MMA@3 by in-plane rotation" in md
    # the d2net protocol takes no size, and synthetic warps have no d2net protocol
    assert main(["eval", "hpatches", "--methods", "sift", "--hpatches", str(root), "--protocol", "d2net",
                 "--setting", "240x320_300", "-o", str(out)]) == 2
    assert main(["eval", "hpatches", "--methods", "sift", "--synthetic", str(root), "--protocol", "d2net",
                 "-o", str(out)]) == 2


def test_cli_synthetic_preset_is_named_everywhere(photos, tmp_path):
    out = tmp_path / "syn"
    assert main(["eval", "hpatches", "--methods", "sift", "--synthetic", str(photos), "--preset", "hard",
                 "--resize", "96", "128", "--max-keypoints", "100", "-o", str(out), "--no-progress"]) == 0
    res = json.loads((out / "synthetic_results.json").read_text())
    assert res["source"]["preset"] == "hard" and "+-60 deg" in res["source"]["warps"]
    assert res["source"]["dataset_conf"]["homography"] == {**PRESETS["hard"], "scale": [0.5, 2.0]}
    assert res["source"]["dataset_conf"]["role"] == "benchmark" and res["conf"]["protocol"] == "resized"
    for p in res["methods"]["sift"]["pairs"]:
        assert 0.5 <= p["gt_scale"] <= 2.0 and abs(p["gt_rotation"]) <= 60.0
    md = (out / "synthetic_results.md").read_text()
    first = md.splitlines()[0]
    assert "preset hard" in first and "resized protocol" in first
    assert "scale log-uniform in 0.5-2" in md and "perspective 0.35" in md
    assert main(["eval", "hpatches", "--methods", "sift", "--synthetic", str(photos), "--preset", "easy",
                 "-o", str(out)]) == 2
