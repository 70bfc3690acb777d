"""HDF5 features/matches in hloc's layout, staged (crash-safe, resumable) writing, and pair lists."""
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import torch

from featlab.errors import ConfigError, InputError
from featlab.io import h5 as fh5
from featlab.io.pairs import (check_pairs, exhaustive_pairs, parse_pairs, read_pairs, sequential_pairs,
                              write_pairs)


def make_pred(n=50, d=16, seed=0, wh=(320, 240), binary=False):
    rng = np.random.default_rng(seed)
    kpts = (rng.uniform(0, 1, (n, 2)) * np.array(wh)).astype(np.float32)
    if binary:
        desc = rng.integers(0, 256, (n, d), dtype=np.uint8)
    else:
        desc = rng.normal(size=(n, d)).astype(np.float32)
        desc /= np.linalg.norm(desc, axis=1, keepdims=True) + 1e-12
    scores = np.sort(rng.uniform(size=n).astype(np.float32))[::-1].copy()
    return {"keypoints": kpts, "keypoint_scores": scores, "descriptors": desc,
            "image_size": np.array(wh, dtype=np.int64)}


class TestFeatures:
    def test_round_trip_and_hloc_layout_on_disk(self, tmp_path):
        path = tmp_path / "features.h5"
        pred = make_pred()
        fh5.write_features(path, "seq/sub/0001.jpg", pred)
        back = fh5.read_features(path, "seq/sub/0001.jpg")
        # featlab convention in memory, exactly
        np.testing.assert_array_equal(back["keypoints"], pred["keypoints"])
        np.testing.assert_array_equal(back["descriptors"], pred["descriptors"])
        np.testing.assert_array_equal(back["keypoint_scores"], pred["keypoint_scores"])
        np.testing.assert_array_equal(back["image_size"], [320, 240])
        assert back["keypoints"].dtype == np.float32 and back["descriptors"].shape == (50, 16)
        # hloc convention on disk: nested groups, (0,0)-centred keypoints, (D, N) descriptors
        with h5py.File(path, "r") as f:
            assert isinstance(f["seq"], h5py.Group) and isinstance(f["seq"]["sub"], h5py.Group)
            grp = f["seq"]["sub"]["0001.jpg"]
            assert set(grp.keys()) == {"keypoints", "descriptors", "scores", "image_size"}
            raw_k = grp["keypoints"][()]
            assert raw_k.dtype == np.float32 and raw_k.shape == (50, 2)
            np.testing.assert_array_equal(raw_k, pred["keypoints"] - np.float32(0.5))
            assert grp["descriptors"].shape == (16, 50) and grp["descriptors"].dtype == np.float32
            np.testing.assert_array_equal(grp["descriptors"][()], pred["descriptors"].T)
            assert grp["scores"].shape == (50,)
            assert grp["image_size"].dtype == np.int64 and grp["image_size"][()].tolist() == [320, 240]

    def test_as_half_binary_torch_and_extras(self, tmp_path):
        path = tmp_path / "f.h5"
        pred = make_pred(n=30, d=8)
        fh5.write_features(path, "half.png", pred, as_half=True, uncertainty=2.0)
        with h5py.File(path, "r") as f:
            assert f["half.png/descriptors"].dtype == np.float16
            assert f["half.png/keypoints"].dtype == np.float32  # keypoints keep full precision
            assert f["half.png/keypoints"].attrs["uncertainty"] == 2.0
        back = fh5.read_features(path, "half.png")
        assert back["descriptors"].dtype == np.float32 and back["uncertainty"] == 2.0
        np.testing.assert_allclose(back["descriptors"], pred["descriptors"], atol=1e-3)
        np.testing.assert_array_equal(back["keypoints"], pred["keypoints"])

        binary = make_pred(n=20, d=32, binary=True)
        binary["scales"] = np.arange(20, dtype=np.float32)
        fh5.write_features(path, "orb.png", {k: torch.from_numpy(v) for k, v in binary.items()})
        with h5py.File(path, "r") as f:
            assert f["orb.png/descriptors"].dtype == np.uint8 and f["orb.png/descriptors"].shape == (32, 20)
        back = fh5.read_features(path, "orb.png")
        np.testing.assert_array_equal(back["descriptors"], binary["descriptors"])
        np.testing.assert_array_equal(back["scales"], binary["scales"])

    def test_zero_keypoints(self, tmp_path):
        path = tmp_path / "f.h5"
        pred = make_pred(n=0, d=128)
        fh5.write_features(path, "flat.png", pred)
        back = fh5.read_features(path, "flat.png")
        assert back["keypoints"].shape == (0, 2) and back["descriptors"].shape == (0, 128)
        assert back["keypoint_scores"].shape == (0,)
        assert fh5.list_feature_names(path) == ["flat.png"]

    def test_reads_file_written_like_hloc(self, tmp_path):
        # what hloc's extract_features writes with as_half: float16 everything, (D, N) descriptors
        path = tmp_path / "hloc.h5"
        kp_cv = np.array([[0.0, 0.0], [10.0, 5.0], [99.0, 63.0]], np.float32)
        desc = np.eye(3, 4, dtype=np.float32).T  # D=4, N=3
        with h5py.File(path, "w", libver="latest") as f:
            g = f.create_group("db/img1.jpg")
            g.create_dataset("keypoints", data=kp_cv.astype(np.float16))
            g.create_dataset("descriptors", data=desc.astype(np.float16))
            g.create_dataset("scores", data=np.ones(3, np.float16))
            g.create_dataset("image_size", data=np.array([100, 64]))
        back = fh5.read_features(path, "db/img1.jpg")
        np.testing.assert_array_equal(back["keypoints"], kp_cv + 0.5)  # centre of top-left pixel -> (0.5, 0.5)
        np.testing.assert_array_equal(back["descriptors"], desc.T)
        assert back["descriptors"].dtype == np.float32

    def test_names_listing_and_overwrite(self, tmp_path):
        path = tmp_path / "f.h5"
        for name in ["b.jpg", "a/x.jpg", "a/deep/y.png"]:
            fh5.write_features(path, name, make_pred(n=5))
        assert fh5.list_feature_names(path) == ["a/deep/y.png", "a/x.jpg", "b.jpg"]
        assert fh5.has_features(path, "a/x.jpg") and not fh5.has_features(path, "a")
        fh5.write_features(path, "b.jpg", make_pred(n=7))  # replaces the group
        assert len(fh5.read_features(path, "b.jpg")["keypoints"]) == 7

    @pytest.mark.parametrize("name", ["", "/abs.jpg", "a/../b.jpg", "a//b.jpg", "dir/"])
    def test_bad_names(self, tmp_path, name):
        with pytest.raises(InputError, match="invalid image name"):
            fh5.write_features(tmp_path / "f.h5", name, make_pred(n=2))

    def test_read_errors(self, tmp_path):
        with pytest.raises(InputError, match="not found"):
            fh5.read_features(tmp_path / "missing.h5", "a.jpg")
        path = tmp_path / "f.h5"
        fh5.write_features(path, "a/b.jpg", make_pred(n=3))
        with pytest.raises(InputError, match="no features for image 'a/c.jpg'"):
            fh5.read_features(path, "a/c.jpg")
        with pytest.raises(InputError, match="no features for image 'a'"):
            fh5.read_features(path, "a")
        bad = tmp_path / "bad.h5"
        bad.write_bytes(b"not an hdf5 file at all")
        with pytest.raises(InputError, match="cannot open HDF5"):
            fh5.list_feature_names(bad)

    def test_inconsistent_prediction(self, tmp_path):
        pred = make_pred(n=5)
        pred["descriptors"] = pred["descriptors"][:4]
        with pytest.raises(InputError, match="descriptors must be"):
            fh5.write_features(tmp_path / "f.h5", "a.jpg", pred)


class TestMatches:
    def test_round_trip_layout_and_reverse(self, tmp_path):
        path = tmp_path / "m.h5"
        m0 = np.array([2, -1, 0, -1, 5], np.int64)
        s0 = np.array([0.9, 0, 0.5, 0, 0.7], np.float32)
        fh5.write_matches(path, "seq/a.jpg", "b.jpg", m0, s0)
        with h5py.File(path, "r") as f:  # hloc >= 1.4: group name0 containing group name1, '/' -> '-'
            assert list(f.keys()) == ["seq-a.jpg"] and list(f["seq-a.jpg"].keys()) == ["b.jpg"]
            grp = f["seq-a.jpg"]["b.jpg"]
            assert grp["matches0"].shape == (5,) and grp["matches0"].dtype == np.int32
            assert grp["matching_scores0"].shape == (5,)
        out = fh5.read_matches(path, "seq/a.jpg", "b.jpg")
        np.testing.assert_array_equal(out["matches0"], m0)
        np.testing.assert_array_equal(out["matching_scores0"], s0)
        np.testing.assert_array_equal(out["matches"], [[0, 2], [2, 0], [4, 5]])
        # the other order: swapped index pairs; matches0 needs the keypoint count of the first image
        rev = fh5.read_matches(path, "b.jpg", "seq/a.jpg", num_keypoints0=6)
        np.testing.assert_array_equal(rev["matches"], [[2, 0], [0, 2], [5, 4]])
        np.testing.assert_array_equal(rev["matches0"], [2, -1, 0, -1, -1, 4])
        np.testing.assert_allclose(rev["matching_scores0"], [0.5, 0, 0.9, 0, 0, 0.7])
        assert "matches0" not in fh5.read_matches(path, "b.jpg", "seq/a.jpg")
        assert fh5.find_pair(path, "b.jpg", "seq/a.jpg") == ("seq-a.jpg/b.jpg", True)
        assert fh5.list_match_pairs(path) == [("seq-a.jpg", "b.jpg")]

    def test_legacy_flat_layout_is_read(self, tmp_path):
        path = tmp_path / "old.h5"
        with h5py.File(path, "w") as f:
            g = f.create_group(fh5.names_to_pair_legacy("x/1.jpg", "x/2.jpg"))
            assert g.name == "/x-1.jpg_x-2.jpg"
            g.create_dataset("matches0", data=np.array([1, -1], np.int16))
            g.create_dataset("matching_scores0", data=np.array([0.5, 0], np.float16))
        out = fh5.read_matches(path, "x/1.jpg", "x/2.jpg")
        np.testing.assert_array_equal(out["matches"], [[0, 1]])
        assert fh5.find_pair(path, "x/2.jpg", "x/1.jpg") == ("x-1.jpg_x-2.jpg", True)

    def test_errors(self, tmp_path):
        path = tmp_path / "m.h5"
        fh5.write_matches(path, "a", "b", np.array([-1, 0]))
        with pytest.raises(InputError, match=r"no matches for pair \(a, c\)"):
            fh5.read_matches(path, "a", "c")
        with pytest.raises(InputError, match="outside"):
            fh5.write_matches(path, "a", "b", np.array([-2, 0]))
        with pytest.raises(InputError, match="differ"):
            fh5.write_matches(path, "a", "b", np.array([1, 0]), np.zeros(3))
        with pytest.raises(InputError, match="index keypoint"):
            fh5.read_matches(path, "b", "a", num_keypoints0=0)


class TestStagedWriting:
    record = {"kind": "features", "model": "m", "extractor": {"k": 1}}

    def test_success_renames_and_records(self, tmp_path):
        out = tmp_path / "f.h5"
        with fh5.staged_h5(out, self.record) as f:
            assert f.filename.endswith("f.h5.partial") and not out.exists()
            fh5.write_features(f, "a.jpg", make_pred(n=3))
        assert out.exists() and not fh5.partial_path(out).exists()
        assert not (tmp_path / "f.h5.lock").exists()
        assert fh5.read_record(out) == self.record
        with fh5.staged_h5(out, self.record) as f:  # resuming copies the complete output
            assert fh5.list_feature_names(f) == ["a.jpg"]
            fh5.write_features(f, "b.jpg", make_pred(n=3))
        assert fh5.list_feature_names(out) == ["a.jpg", "b.jpg"]

    def test_failure_keeps_partial_output_untouched_then_resume(self, tmp_path):
        out = tmp_path / "f.h5"
        with fh5.staged_h5(out, self.record) as f:
            fh5.write_features(f, "a.jpg", make_pred(n=3))
        before = out.read_bytes()
        with pytest.raises(RuntimeError):
            with fh5.staged_h5(out, self.record) as f:
                fh5.write_features(f, "b.jpg", make_pred(n=3))
                f.flush()
                f.create_group("c.jpg").create_dataset("keypoints", data=np.zeros((2, 2)))  # incomplete
                raise RuntimeError("crash")
        assert out.read_bytes() == before  # the complete output is never touched by a failing run
        assert fh5.partial_path(out).exists()
        with fh5.staged_h5(out, self.record) as f:  # resumes from the partial file, drops the incomplete group
            assert fh5.list_feature_names(f) == ["a.jpg", "b.jpg"]
        assert fh5.list_feature_names(out) == ["a.jpg", "b.jpg"]

    def test_hard_kill_is_recovered(self, tmp_path):
        out = tmp_path / "f.h5"
        script = textwrap.dedent(f"""
            import os, numpy as np
            from featlab.io import h5 as fh5
            pred = {{"keypoints": np.zeros((4, 2), np.float32), "descriptors": np.zeros((4, 8), np.float32),
                     "keypoint_scores": np.ones(4, np.float32), "image_size": np.array([10, 10])}}
            with fh5.staged_h5({str(out)!r}, {self.record!r}) as f:
                for name in ("a.jpg", "b.jpg"):
                    fh5.write_features(f, name, pred)
                    f.flush()
                fh5.write_features(f, "c.jpg", pred)  # not flushed
                os._exit(9)  # killed: no close, no rename
        """)
        rc = subprocess.run([sys.executable, "-c", script], timeout=60).returncode
        assert rc == 9 and not out.exists() and fh5.partial_path(out).exists()
        with fh5.staged_h5(out, self.record) as f:
            assert {"a.jpg", "b.jpg"} <= set(fh5.list_feature_names(f))
        assert {"a.jpg", "b.jpg"} <= set(fh5.list_feature_names(out))

    def test_unusable_partials_are_discarded(self, tmp_path):
        out = tmp_path / "f.h5"
        fh5.partial_path(out).write_bytes(b"\x00garbage" * 10)
        with fh5.staged_h5(out, self.record) as f:
            assert fh5.list_feature_names(f) == []

    def test_partial_of_another_configuration_is_refused_and_kept(self, tmp_path):
        out = tmp_path / "f.h5"
        with fh5.staged_h5(out, self.record) as f:
            fh5.write_features(f, "a.jpg", make_pred(n=3))
        other = {**self.record, "extractor": {"k": 1, "weights_sha256": {"w.safetensors": "b" * 64}}}
        with pytest.raises(KeyboardInterrupt):
            with fh5.staged_h5(out, other, overwrite=True) as f:
                fh5.write_features(f, "x.jpg", make_pred(n=2))
                raise KeyboardInterrupt
        partial = fh5.partial_path(out)
        before, output_before = partial.read_bytes(), out.read_bytes()
        with pytest.raises(InputError, match=r"another model, weights or configuration \(extractor.weights_sha256"):
            with fh5.staged_h5(out, self.record):
                pass
        # neither mixed into nor deleted: both files byte for byte as they were
        assert partial.read_bytes() == before and out.read_bytes() == output_before
        with fh5.staged_h5(out, other) as f:  # the run that made it resumes it
            assert fh5.list_feature_names(f) == ["x.jpg"]
        assert fh5.read_record(out) == other
        with pytest.raises(KeyboardInterrupt):
            with fh5.staged_h5(out, other) as f:
                raise KeyboardInterrupt
        with fh5.staged_h5(out, self.record, overwrite=True) as f:  # --overwrite discards it
            assert fh5.list_feature_names(f) == []
        assert not partial.exists()

    def test_configuration_mismatch_and_overwrite(self, tmp_path):
        out = tmp_path / "f.h5"
        with fh5.staged_h5(out, self.record) as f:
            fh5.write_features(f, "a.jpg", make_pred(n=3))
        other = {**self.record, "extractor": {"k": 2}}
        with pytest.raises(ConfigError, match=r"another configuration \(extractor.k: 1 != 2\)"):
            with fh5.staged_h5(out, other):
                pass
        with fh5.staged_h5(out, other, overwrite=True) as f:
            assert fh5.list_feature_names(f) == []
        assert fh5.read_record(out) == other
        foreign = tmp_path / "hloc.h5"
        fh5.write_features(foreign, "a.jpg", make_pred(n=3))
        with pytest.raises(ConfigError, match="not written by featlab"):
            fh5.check_output_record(foreign, self.record)

    def test_concurrent_writer_is_refused(self, tmp_path):
        out = tmp_path / "f.h5"
        with fh5.staged_h5(out, self.record):
            with pytest.raises(InputError, match="another featlab process"):
                with fh5.staged_h5(out, self.record):
                    pass


class TestPairs:
    @pytest.mark.parametrize("n", [0, 1, 2, 5, 9])
    def test_exhaustive_count(self, n):
        names = [f"{i}.jpg" for i in range(n)]
        pairs = exhaustive_pairs(names)
        assert len(pairs) == n * (n - 1) // 2
        assert len({frozenset(p) for p in pairs}) == len(pairs)
        assert all(names.index(a) < names.index(b) for a, b in pairs)

    def test_sequential(self):
        names = list("abcde")
        assert sequential_pairs(names, 2) == [("a", "b"), ("a", "c"), ("b", "c"), ("b", "d"), ("c", "d"),
                                              ("c", "e"), ("d", "e")]
        looped = sequential_pairs(names, 2, loop=True)
        assert looped[-3:] == [("d", "a"), ("e", "a"), ("e", "b")] and len(looped) == 10
        # a window covering the whole loop gives every pair once
        assert len(sequential_pairs(names, 10, loop=True)) == 10
        assert sequential_pairs(["a"], 3, loop=True) == []
        with pytest.raises(ConfigError, match="positive"):
            sequential_pairs(names, 0)

    def test_file_with_comments(self, tmp_path):
        path = tmp_path / "pairs.txt"
        path.write_text("# retrieval pairs\n\na/1.jpg b.jpg\n  b.jpg a/1.jpg   # duplicate, reversed\n"
                        "b.jpg\tc.jpg # trailing comment\n")
        assert read_pairs(path, known_names=["a/1.jpg", "b.jpg", "c.jpg"]) == [("a/1.jpg", "b.jpg"),
                                                                               ("b.jpg", "c.jpg")]
        out = write_pairs(tmp_path / "sub" / "out.txt", [("a/1.jpg", "b.jpg"), ("b.jpg", "c.jpg")])
        assert out.read_text() == "a/1.jpg b.jpg\nb.jpg c.jpg\n"
        assert read_pairs(out) == [("a/1.jpg", "b.jpg"), ("b.jpg", "c.jpg")]

    def test_bad_lines_and_names(self, tmp_path):
        with pytest.raises(InputError, match=r"pairs:2: expected two image names, got 3"):
            parse_pairs(["a b", "a b c"])
        with pytest.raises(InputError, match=r"pairs:1: expected two image names, got 1"):
            parse_pairs(["lonely"])
        with pytest.raises(InputError, match="itself"):
            parse_pairs(["a a"])
        path = tmp_path / "p.txt"
        path.write_text("a b\nb zz\n")
        with pytest.raises(InputError, match="1 image name.*zz"):
            read_pairs(path, known_names=["a", "b"])
        with pytest.raises(InputError, match="not found"):
            read_pairs(tmp_path / "none.txt")
        (tmp_path / "empty.txt").write_text("# nothing\n")
        with pytest.raises(InputError, match="no pairs"):
            read_pairs(tmp_path / "empty.txt")
        with pytest.raises(InputError, match="cannot be written"):
            write_pairs(tmp_path / "w.txt", [("has space.jpg", "b")])
        check_pairs([("a", "b")], ["a", "b"])
