"""Benchmark metrics on hand-made cases with known answers, the feature cache and the report writers."""
import json
import math

import numpy as np
import pytest

from featlab.eval import metrics
from featlab.eval.cache import FeatureCache, image_checksum, parse_method_overrides, safe_key
from featlab.eval.hpatches import resize_pair, resolve_setting
from featlab.eval.report import markdown_table, to_jsonable, write_json
from featlab.errors import ConfigError

SHIFT = np.array([[1.0, 0, 10], [0, 1, 0], [0, 0, 1]])  # x -> x + 10


class TestMatchIndices:
    def test_both_forms(self):
        i0, i1 = metrics.match_indices(np.array([2, -1, 0]))
        assert i0.tolist() == [0, 2] and i1.tolist() == [2, 0]
        i0, i1 = metrics.match_indices(np.array([[0, 2], [2, 0]]))
        assert i0.tolist() == [0, 2] and i1.tolist() == [2, 0]

    def test_bad_shape(self):
        with pytest.raises(ValueError):
            metrics.match_indices(np.zeros((2, 3), int))


class TestMMA:
    def test_half_correct_at_1px(self):
        # 4 matches under x -> x + 10 with errors 0.5, 0.9, 2.0 and 7.0 px
        k0 = np.array([[10.0, 10], [20, 20], [30, 30], [40, 40]])
        k1 = k0 + [10, 0] + np.array([[0.5, 0], [0, 0.9], [2.0, 0], [0, 7.0]])
        matches = np.arange(4)
        out = metrics.mma(k0, k1, matches, SHIFT, thresholds=[1, 2, 5, 10])
        np.testing.assert_allclose(out, [0.5, 0.75, 0.75, 1.0])
        np.testing.assert_allclose(metrics.reprojection_errors(k0, k1, matches, SHIFT), [0.5, 0.9, 2.0, 7.0])

    def test_unmatched_are_ignored_and_no_match_is_zero(self):
        k0 = np.array([[1.0, 1], [2, 2]])
        k1 = k0 + [10, 0]
        np.testing.assert_allclose(metrics.mma(k0, k1, np.array([0, -1]), SHIFT, [1]), [1.0])
        np.testing.assert_allclose(metrics.mma(k0, k1, np.array([-1, -1]), SHIFT, [1, 3]), [0.0, 0.0])

    def test_threshold_is_inclusive(self):
        k0 = np.array([[5.0, 5.0]])
        k1 = np.array([[18.0, 5.0]])  # error exactly 3 px
        np.testing.assert_allclose(metrics.mma(k0, k1, np.array([0]), SHIFT, [2.999, 3]), [0.0, 1.0])


class TestHomographyAccuracy:
    def test_exact_and_offset(self):
        size = (100, 200)
        np.testing.assert_allclose(metrics.homography_accuracy(SHIFT, SHIFT, size), [1, 1, 1])
        off = SHIFT.copy()
        off[0, 2] += 2.0  # every corner 2 px off -> mean corner error 2
        assert metrics.corner_error(off, SHIFT, size) == pytest.approx(2.0)
        np.testing.assert_allclose(metrics.homography_accuracy(off, SHIFT, size, [1, 3, 5]), [0, 1, 1])

    def test_failed_estimate_counts_as_wrong(self):
        np.testing.assert_allclose(metrics.homography_accuracy(None, SHIFT, (10, 10)), [0, 0, 0])
        assert metrics.corner_error(None, SHIFT, (10, 10)) == math.inf
        assert metrics.corner_error(np.full((3, 3), np.nan), SHIFT, (10, 10)) == math.inf


class TestMatchingScore:
    def test_hand_computed(self):
        # images 100x100, H = shift by +10 in x. Image 0: 4 keypoints, the one at x=95 lands outside image 1
        # -> n0 = 3 shared. Image 1: 5 keypoints, the one at x=5 maps to x=-5 outside image 0 -> n1 = 4 shared.
        k0 = np.array([[10.0, 10], [20, 20], [30, 30], [95, 50]])
        k1 = np.array([[20.0, 10], [30, 20], [60, 60], [5, 5], [40, 31]])
        # matches: 0->0 correct, 1->1 correct, 2->4 error 1 px (correct at 3), 3->2 wrong (and outside)
        matches = np.array([0, 1, 4, 2])
        # correct = 3 matches; all 3 have image-0 keypoint inside and image-1 keypoint inside:
        # MS = 0.5 * (3 / 3 + 3 / 4) = 0.875
        ms = metrics.matching_score(k0, k1, matches, SHIFT, (100, 100), (100, 100), threshold=3.0)
        assert ms == pytest.approx(0.875)
        # with a 0.5 px threshold only 2 matches are correct: 0.5 * (2/3 + 2/4)
        ms = metrics.matching_score(k0, k1, matches, SHIFT, (100, 100), (100, 100), threshold=0.5)
        assert ms == pytest.approx(0.5 * (2 / 3 + 2 / 4))

    def test_no_keypoints(self):
        empty = np.zeros((0, 2))
        assert metrics.matching_score(empty, empty, np.zeros(0, int), SHIFT, (10, 10), (10, 10)) == 0.0


class TestRepeatability:
    def test_identity_is_one(self):
        k = np.random.default_rng(0).uniform(1, 99, (50, 2))
        assert metrics.repeatability(k, k.copy(), np.eye(3), (100, 100), (100, 100)) == pytest.approx(1.0)

    def test_hand_computed(self):
        # shift +10: image-0 keypoints warp to (20,10), (50,50), (105,5)->outside; image-1 keypoints (21,10) near
        # the first, (80,80) far, (3,3) maps to (-7,3) outside. Shared: n0 = 2, n1 = 2; repeated: 1 + 1.
        k0 = np.array([[10.0, 10], [40, 50], [95, 5]])
        k1 = np.array([[21.0, 10], [80, 80], [3, 3]])
        rep = metrics.repeatability(k0, k1, SHIFT, (100, 100), (100, 100), threshold=3.0)
        assert rep == pytest.approx(2 / 4)

    def test_empty(self):
        assert metrics.repeatability(np.zeros((0, 2)), np.zeros((0, 2)), np.eye(3), (10, 10), (10, 10)) == 0.0


class TestPose:
    def test_pose_error_and_failure(self):
        T = np.eye(4)
        T[:3, 3] = [1.0, 0, 0]
        assert metrics.pose_error(T, np.eye(3), np.array([2.0, 0, 0])) == pytest.approx(0.0, abs=1e-9)
        # 10 degrees about z, correct translation direction -> error 10
        a = np.radians(10)
        R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
        assert metrics.pose_error(T, R, np.array([1.0, 0, 0])) == pytest.approx(10.0, abs=1e-6)
        assert metrics.pose_error(T, None, None) == math.inf

    def test_auc_hand_case(self):
        # errors 5 and a failure, threshold 10: recall curve (0,0) -> (5, 0.5), flat to 10:
        # area = 0.5 * 5 * 0.5 + 5 * 0.5 = 3.75 -> AUC = 0.375
        assert metrics.pose_auc([5.0, math.inf], [10])[0] == pytest.approx(0.375)
        # all perfect -> 1, all failures -> 0, no pairs -> 0
        assert metrics.pose_auc([0.0, 0.0], [5, 10]) == pytest.approx([1.0, 1.0])
        assert metrics.pose_auc([math.inf], [5]) == [0.0]
        assert metrics.pose_auc([], [5, 10]) == [0.0, 0.0]


class TestSettings:
    def test_named_and_overrides(self):
        assert resolve_setting("240x320_300") == ((240, 320), 300)
        assert resolve_setting(None) == ((480, 640), 1000)
        assert resolve_setting("240x320_300", [100, 200], 50) == ((100, 200), 50)
        with pytest.raises(ConfigError, match="unknown setting"):
            resolve_setting("bogus")
        with pytest.raises(ConfigError):
            resolve_setting(None, max_keypoints=0)

    def test_resize_pair_adapts_homography(self):
        rng = np.random.default_rng(0)
        img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
        H = np.array([[1.0, 0.05, 3.0], [-0.02, 0.95, 2.0], [1e-4, 0, 1]])
        item = {"name": "x/1-2", "image0": img, "image1": img[:50, :70].copy(), "H_0to1": H}
        out = resize_pair(item, (30, 40))
        assert out["image0"].shape == (30, 40, 3) and out["image1"].shape == (30, 40, 3)
        p = np.array([[10.0, 20.0], [50.0, 5.0]])  # in original image 0
        q = metrics._warp(p, H)  # in original image 1 (70 wide, 50 high)
        p_small = p * [40 / 80, 30 / 60]
        q_small = q * [40 / 70, 30 / 50]
        np.testing.assert_allclose(metrics._warp(p_small, out["H_0to1"]), q_small, atol=1e-9)


class TestCache:
    def test_put_get_checksum(self, tmp_path):
        cache = FeatureCache(tmp_path, "sift", {"max_keypoints": 10})
        img = np.zeros((8, 8, 3), np.uint8)
        feats = {"keypoints": np.ones((3, 2), np.float32), "descriptors": np.eye(3, dtype=np.float32)}
        calls = []

        def compute(im):
            calls.append(1)
            return feats

        out = cache.get_or_compute("seq/1", img, compute)
        out2 = cache.get_or_compute("seq/1", img, compute)
        assert len(calls) == 1 and cache.hits == 1 and cache.misses == 1
        np.testing.assert_array_equal(out2["keypoints"], feats["keypoints"])
        assert "_checksum" not in out2
        # other pixels under the same key -> recomputed, never silently reused
        cache.get_or_compute("seq/1", img + 1, compute)
        assert len(calls) == 2
        # other settings -> other folder
        assert FeatureCache(tmp_path, "sift", {"max_keypoints": 20}).dir != cache.dir
        assert (cache.dir / "settings.json").is_file()
        assert image_checksum(img) != image_checksum(img + 1)

    def test_corrupt_entry_is_recomputed(self, tmp_path):
        cache = FeatureCache(tmp_path, "orb", {})
        img = np.zeros((8, 8, 3), np.uint8)
        cache.put("a", {"keypoints": np.zeros((1, 2))}, image_checksum(img))
        path = next(cache.dir.glob("*.npz"))
        path.write_bytes(b"not a zip")
        assert cache.get("a", image_checksum(img)) is None

    def test_safe_key(self):
        assert safe_key("synthetic:a b/c.jpg#3/image0") == "synthetic_a_b/c.jpg_3/image0"
        assert safe_key("../x") == "x"


class TestReport:
    def test_markdown_and_json(self, tmp_path):
        table = markdown_table(["method", "MMA"], [["sift", 0.12345], ["orb", float("inf")]])
        assert "| sift | 0.123 |" in table and "inf" in table
        path = write_json(tmp_path / "r.json", {"a": np.float32(1.5), "b": np.arange(2), "c": math.inf})
        assert json.loads(path.read_text()) == {"a": 1.5, "b": [0, 1], "c": "inf"}
        assert to_jsonable({"x": (np.int64(3), None)}) == {"x": [3, None]}

    def test_method_overrides(self):
        assert parse_method_overrides(["sift.contrast_threshold=0.02"], ["sift", "orb"]) == {
            "sift": {"contrast_threshold": 0.02}}
        with pytest.raises(ConfigError, match="METHOD.key=value"):
            parse_method_overrides(["disk.weights=x"], ["sift"])

    def test_method_labels_evaluate_one_extractor_twice(self):
        """LABEL=NAME: the same extractor under two labels with their own overrides (e.g. two weights files)."""
        from featlab.eval.cache import build_methods, method_label

        assert method_label("sift") == ("sift", "sift") and method_label("dense=sift") == ("dense", "sift")
        for bad in ("=sift", "a.b=sift", "a=", "a=b=c"):
            with pytest.raises(ConfigError):
                method_label(bad)
        names = ["sift", "dense=sift"]
        overrides = parse_method_overrides(["dense.contrast_threshold=0.01"], names)
        assert overrides == {"dense": {"contrast_threshold": 0.01}}
        methods = build_methods(names, {"max_keypoints": -1}, overrides)
        assert list(methods) == ["sift", "dense"]
        assert methods["sift"].conf.contrast_threshold == 0.04 and methods["dense"].conf.contrast_threshold == 0.01
        with pytest.raises(ConfigError, match="duplicate"):
            build_methods(["sift", "sift=rootsift"])
