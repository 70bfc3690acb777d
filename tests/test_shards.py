"""``--shard I/N`` on extract and match, and ``featlab merge``: disjoint deterministic blocks whose merge is the
file one unsharded run writes."""
from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
import skimage.data

from featlab.errors import ConfigError
from featlab.io import h5 as fh5
from featlab.io.shards import list_digest, parse_shard, select_shard, shard_bounds
from clitools import assert_one_line_error, run_cli


# ------------------------------------------------------------------------------------------------ blocks
class TestBlocks:
    @pytest.mark.parametrize("total", [0, 1, 5, 7, 10])
    @pytest.mark.parametrize("count", [1, 3, 4, 12])
    def test_blocks_are_disjoint_cover_the_list_in_order_and_near_equal(self, total, count):
        items = [f"img{i:02d}.png" for i in range(total)]
        paths = [f"/data/{n}" for n in items]
        blocks = []
        for i in range(count):
            record = {}
            names, others = select_shard(f"{i}/{count}", record, items, paths)
            assert others == [f"/data/{n}" for n in names]  # the parallel list is cut the same way
            assert record["shard"] == {"index": i, "count": count, "total": total, "digest": list_digest(items)}
            assert names == select_shard(f"{i}/{count}", {}, items)[0]  # deterministic
            blocks.append(names)
        assert sum(blocks, []) == items
        sizes = [len(b) for b in blocks]
        assert max(sizes) - min(sizes) <= 1

    def test_bounds_by_hand(self):
        assert [shard_bounds(10, i, 4) for i in range(4)] == [(0, 2), (2, 5), (5, 7), (7, 10)]

    def test_no_shard_changes_nothing(self):
        record = {"kind": "features"}
        assert select_shard(None, record, ["a", "b"], [1, 2]) == (["a", "b"], [1, 2])
        assert record == {"kind": "features"}

    def test_digest_depends_on_the_list_and_its_order(self):
        assert list_digest(["a", "b"]) != list_digest(["b", "a"]) != list_digest(["a"])
        assert list_digest([("a", "b")]) == list_digest([("a", "b")]) != list_digest([("a", "c")])

    @pytest.mark.parametrize("spec", ["1/1", "4/3", "-1/3", "0/0", "a/b", "1", "1/2/3", ""])
    def test_bad_specs(self, spec):
        with pytest.raises(ConfigError, match="shard"):
            parse_shard(spec)

    def test_good_specs(self):
        assert parse_shard("0/1") == (0, 1) and parse_shard(" 3 / 8 ") == (3, 8)


# ----------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def images(tmp_path):
    """Five small images of two photos, three in a sub-folder."""
    root = tmp_path / "images"
    (root / "sub").mkdir(parents=True)
    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[::4, ::4]  # 128 x 128
    cv2.imwrite(str(root / "a.png"), photo[:100, :100])
    cv2.imwrite(str(root / "b.png"), photo[10:110, 8:108])
    cv2.imwrite(str(root / "sub" / "c.png"), photo[20:120, 20:120])
    cv2.imwrite(str(root / "sub" / "d.jpg"), skimage.data.camera()[::5, ::5])
    cv2.imwrite(str(root / "sub" / "e.png"), photo[28:128, 12:112])
    return root


def h5_contents(path) -> dict:
    """Every dataset (path -> array) and attribute (path@name -> value) of an HDF5 file, the record excepted."""
    out = {}

    def visit(name, obj):
        for k, v in obj.attrs.items():
            out[f"{name}@{k}"] = v
        if isinstance(obj, h5py.Dataset):
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def assert_same_contents(a, b):
    ca, cb = h5_contents(a), h5_contents(b)
    assert sorted(ca) == sorted(cb)
    for k in ca:
        assert np.array_equal(ca[k], cb[k]) and np.asarray(ca[k]).dtype == np.asarray(cb[k]).dtype, k


EXTRACT = ["--model", "sift", "--max-keypoints", "150"]


def test_sharded_extract_and_match_merge_into_the_unsharded_files(images, tmp_path, capsys):
    shards = tmp_path / "shards"
    # extraction in 3 shards of the 5 sorted images: [a], [b, sub/c], [sub/d, sub/e] (sub/ is in two shards)
    sizes = []
    for i in range(3):
        rc, out, err = run_cli(capsys, "extract", images, "-o", shards / f"features-{i}.h5", *EXTRACT,
                               "--shard", f"{i}/3")
        assert rc == 0, err
        sizes.append(len(fh5.list_feature_names(shards / f"features-{i}.h5")))
    assert sizes == [1, 2, 2]
    assert fh5.read_record(shards / "features-2.h5")["shard"]["index"] == 2
    # merge in any order == one unsharded run: same entries, byte-equal arrays, same record
    merged = tmp_path / "features.h5"
    rc, out, err = run_cli(capsys, "merge", *[shards / f"features-{i}.h5" for i in (2, 0, 1)], "-o", merged)
    assert rc == 0 and "5 images from 3 shards (5 new, 0 already present)" in out, err
    single = tmp_path / "single" / "features.h5"
    assert run_cli(capsys, "extract", images, "-o", single, *EXTRACT)[0] == 0
    assert fh5.list_feature_names(merged) == ["a.png", "b.png", "sub/c.png", "sub/d.jpg", "sub/e.png"]
    assert_same_contents(merged, single)
    assert fh5.read_record(merged) == fh5.read_record(single)
    assert (tmp_path / "features.h5.conf.yaml").is_file()
    # the unsharded command accepts the merged file as its own finished output
    rc, out, _ = run_cli(capsys, "extract", images, "-o", merged, *EXTRACT)
    assert rc == 0 and "nothing to do" in out
    # merging again resumes: nothing new
    rc, out, _ = run_cli(capsys, "merge", *sorted(shards.glob("features-*.h5")), "-o", merged)
    assert rc == 0 and "(0 new, 5 already present)" in out

    # matching in 4 shards of the 10 exhaustive pairs ((a, b), (a, c) | (a, d), (a, e), (b, c) | ...: the pairs of
    # a.png are in two shards), merged == one unsharded run
    for i in range(4):
        rc, _, err = run_cli(capsys, "match", merged, "--exhaustive", "-o", shards / f"matches-{i}.h5",
                             "--shard", f"{i}/4")
        assert rc == 0, err
    assert [len(fh5.list_match_pairs(shards / f"matches-{i}.h5")) for i in range(4)] == [2, 3, 2, 3]
    rc, out, err = run_cli(capsys, "merge", *sorted(shards.glob("matches-*.h5")), "-o", tmp_path / "matches.h5")
    assert rc == 0 and "10 pairs from 4 shards" in out, err
    assert run_cli(capsys, "match", single, "--exhaustive", "-o", tmp_path / "single" / "matches.h5")[0] == 0
    assert_same_contents(tmp_path / "matches.h5", tmp_path / "single" / "matches.h5")
    assert fh5.read_record(tmp_path / "matches.h5") == fh5.read_record(tmp_path / "single" / "matches.h5")
    matched = fh5.read_matches(tmp_path / "matches.h5", "a.png", "b.png")["matches"]
    assert len(matched) > 10  # two overlapping crops: the merged pair holds real matches


def test_merge_refuses_incomplete_mixed_or_foreign_inputs(images, tmp_path, capsys):
    s = tmp_path / "s"
    for i in range(2):
        assert run_cli(capsys, "extract", images, "-o", s / f"f{i}.h5", *EXTRACT, "--shard", f"{i}/2")[0] == 0
    out = tmp_path / "merged.h5"
    assert_one_line_error(*run_cli(capsys, "merge", s / "f0.h5", "-o", out)[::2], "missing shard(s) 1/2")
    assert_one_line_error(*run_cli(capsys, "merge", s / "f0.h5", s / "f0.h5", "-o", out)[::2],
                          "both shard 0/2")
    # another configuration (more keypoints) for shard 1
    assert run_cli(capsys, "extract", images, "-o", s / "g1.h5", "--model", "sift", "--max-keypoints", "99",
                   "--shard", "1/2")[0] == 0
    assert_one_line_error(*run_cli(capsys, "merge", s / "f0.h5", s / "g1.h5", "-o", out)[::2],
                          "another configuration", "max_keypoints")
    # the images folder changed between the jobs: shard 1 was cut from another list
    (images / "e.png").write_bytes((images / "a.png").read_bytes())
    assert run_cli(capsys, "extract", images, "-o", s / "h1.h5", *EXTRACT, "--shard", "1/2")[0] == 0
    assert_one_line_error(*run_cli(capsys, "merge", s / "f0.h5", s / "h1.h5", "-o", out)[::2],
                          "another work list", "were the inputs the same")
    # an unsharded file, and a missing file
    assert run_cli(capsys, "extract", images, "-o", s / "all.h5", *EXTRACT)[0] == 0
    assert_one_line_error(*run_cli(capsys, "merge", s / "all.h5", "-o", out)[::2], "not a shard file")
    assert_one_line_error(*run_cli(capsys, "merge", s / "nope.h5", "-o", out)[::2], "not found")
    assert not out.exists()
    # a bad --shard is a one-line error that writes nothing
    for spec in ("2/2", "x"):
        assert_one_line_error(*run_cli(capsys, "extract", images, "-o", s / "bad.h5", *EXTRACT,
                                       "--shard", spec)[::2], "--shard")
    assert_one_line_error(*run_cli(capsys, "match", s / "all.h5", "--exhaustive", "-o", s / "m.h5",
                                   "--shard", "0/0")[::2], "--shard")
    assert not (s / "bad.h5").exists() and not (s / "m.h5").exists()
