"""End to end: `featlab extract` then `featlab match` on a tiny folder, resuming, and the error paths."""
import cv2
import numpy as np
import pytest
import skimage.data

from featlab.conf import load_yaml
from featlab.io import h5 as fh5
from clitools import assert_one_line_error, run_cli

SHIFT = (20, 10)  # c.png is a.png's crop moved by this (x, y) offset


@pytest.fixture
def images(tmp_path):
    """a.png and sub/deeper/c.png: two crops of one photo, shifted by SHIFT; sub/b.jpg: another photo."""
    root = tmp_path / "images"
    (root / "sub" / "deeper").mkdir(parents=True)
    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[::2, ::2]  # 256 x 256
    dx, dy = SHIFT
    cv2.imwrite(str(root / "a.png"), photo[20:220, 30:230])
    cv2.imwrite(str(root / "sub" / "deeper" / "c.png"), photo[20 + dy:220 + dy, 30 + dx:230 + dx])
    cv2.imwrite(str(root / "sub" / "b.jpg"), skimage.data.camera()[::3, ::3])
    return root


def test_extract_match_resume(images, tmp_path, capsys):
    feats, matches = tmp_path / "out" / "features.h5", tmp_path / "out" / "matches.h5"
    rc, out, _ = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift", "--max-keypoints", "300")
    assert rc == 0 and str(feats) in out and "3 images (3 new, 0 already present)" in out
    names = fh5.list_feature_names(feats)
    assert names == ["a.png", "sub/b.jpg", "sub/deeper/c.png"]
    saved = load_yaml(tmp_path / "out" / "features.h5.conf.yaml")
    assert saved["model"] == "sift" and saved["extractor"]["conf"]["max_keypoints"] == 300
    fa = fh5.read_features(feats, "a.png")
    assert 0 < len(fa["keypoints"]) <= 300 and fa["descriptors"].shape[1] == 128
    assert fa["image_size"].tolist() == [200, 200]

    rc, out, _ = run_cli(capsys, "match", feats, "--exhaustive", "-o", matches, "--save-pairs",
                         tmp_path / "out" / "pairs.txt")
    assert rc == 0 and str(matches) in out and "3 pairs (3 new, 0 already present)" in out
    assert len((tmp_path / "out" / "pairs.txt").read_text().splitlines()) == 3
    # the shifted crops: most mutual matches agree with the known shift (pixel conventions consistent)
    m = fh5.read_matches(matches, "a.png", "sub/deeper/c.png")
    fc = fh5.read_features(feats, "sub/deeper/c.png")
    i0, i1 = m["matches"].T
    residual = np.linalg.norm(fa["keypoints"][i0] - (fc["keypoints"][i1] + SHIFT), axis=1)
    assert len(i0) >= 50 and np.mean(residual < 1.0) > 0.9

    # reruns resume: nothing new
    mtime = feats.stat().st_mtime_ns
    rc, out, _ = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift", "--max-keypoints", "300")
    assert rc == 0 and "nothing to do" in out and feats.stat().st_mtime_ns == mtime
    rc, out, _ = run_cli(capsys, "match", feats, "--exhaustive", "-o", matches)
    assert rc == 0 and "nothing to do" in out
    # a new image: only it is extracted, then only its pairs are matched (pairs file, either order)
    cv2.imwrite(str(images / "d.png"), cv2.imread(str(images / "a.png"))[:, ::-1])
    rc, out, _ = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift", "--max-keypoints", "300")
    assert rc == 0 and "4 images (1 new, 3 already present)" in out
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("# new pairs\nd.png a.png\nsub/deeper/c.png a.png  # already matched, other order\n")
    rc, out, _ = run_cli(capsys, "match", feats, "--pairs", pairs, "-o", matches)
    assert rc == 0 and "2 pairs (1 new, 1 already present)" in out
    assert fh5.find_pair(matches, "a.png", "d.png") == ("d.png/a.png", True)  # stored as listed
    # another configuration is refused rather than mixed into the file
    rc, _, err = run_cli(capsys, "extract", images, "-o", feats, "--model", "rootsift")
    assert_one_line_error(rc, err, "another configuration", "--overwrite")
    rc, _, err = run_cli(capsys, "match", feats, "--exhaustive", "-o", matches, "--ratio", "0.8")
    assert_one_line_error(rc, err, "another configuration", "matcher.ratio")


def test_interrupted_extract_resumes(images, tmp_path, capsys, monkeypatch):
    import featlab.extractors as extractors

    feats = tmp_path / "features.h5"
    real = extractors.extract_image
    calls = []

    def flaky(extractor, image, *a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(extractor, image, *a, **k)

    monkeypatch.setattr(extractors, "extract_image", flaky)
    rc, _, _ = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift")
    assert rc == 130 and not feats.exists() and fh5.partial_path(feats).exists()
    monkeypatch.setattr(extractors, "extract_image", real)
    rc, out, _ = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift")
    assert rc == 0 and "3 images (2 new, 1 already present)" in out
    assert not fh5.partial_path(feats).exists()


def test_constant_image_gives_zero_keypoints(images, tmp_path, capsys):
    cv2.imwrite(str(images / "flat.png"), np.full((64, 80, 3), 128, np.uint8))
    feats, matches = tmp_path / "f.h5", tmp_path / "m.h5"
    rc, out, _ = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift")
    assert rc == 0 and "1 image(s) gave no keypoints" in out
    flat = fh5.read_features(feats, "flat.png")
    assert flat["keypoints"].shape == (0, 2) and flat["descriptors"].shape == (0, 128)
    assert flat["image_size"].tolist() == [80, 64]
    rc, out, _ = run_cli(capsys, "match", feats, "--sequential", "1", "-o", matches)
    assert rc == 0 and "3 pairs (3 new" in out
    m = fh5.read_matches(matches, "a.png", "flat.png")
    assert m["matches0"].shape == (len(fh5.read_features(feats, "a.png")["keypoints"]),)
    assert (m["matches0"] == -1).all()


def test_corrupt_image(images, tmp_path, capsys):
    (images / "sub" / "broken.jpg").write_bytes(np.random.default_rng(0).integers(0, 256, 500, np.uint8).tobytes())
    feats = tmp_path / "f.h5"
    rc, _, err = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift")
    assert_one_line_error(rc, err, "broken.jpg", "--skip-bad")
    assert not feats.exists()
    rc, out, _ = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift", "--skip-bad")
    assert rc == 0 and "1 unreadable skipped" in out
    assert fh5.list_feature_names(feats) == ["a.png", "sub/b.jpg", "sub/deeper/c.png"]


def test_extract_errors(images, tmp_path, capsys):
    out = tmp_path / "f.h5"
    rc, _, err = run_cli(capsys, "extract", tmp_path / "nope", "-o", out, "--model", "sift")
    assert_one_line_error(rc, err, "folder not found")
    (tmp_path / "empty").mkdir()
    rc, _, err = run_cli(capsys, "extract", tmp_path / "empty", "-o", out, "--model", "sift")
    assert_one_line_error(rc, err, "no images")
    rc, _, err = run_cli(capsys, "extract", images, "-o", out, "--model", "siftt")
    assert_one_line_error(rc, err, "unknown extractor 'siftt'", "rootsift")
    rc, _, err = run_cli(capsys, "extract", images, "-o", out, "--model", "sift", "--conf", "max_keypionts=5")
    assert_one_line_error(rc, err, "unknown config key", "max_keypionts")
    rc, _, err = run_cli(capsys, "extract", images, "-o", out, "--model", "sift", "--resize", "1", "2", "3")
    assert_one_line_error(rc, err, "--resize")
    assert not out.exists()


def test_match_errors(images, tmp_path, capsys):
    feats = tmp_path / "f.h5"
    rc, _, err = run_cli(capsys, "match", feats, "--exhaustive", "-o", tmp_path / "m.h5")
    assert_one_line_error(rc, err, "features file not found")
    assert run_cli(capsys, "extract", images, "-o", feats, "--model", "sift", "--max-keypoints", "50")[0] == 0
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("a.png sub/b.jpg\na.png missing.jpg\n")
    rc, _, err = run_cli(capsys, "match", feats, "--pairs", pairs, "-o", tmp_path / "m.h5")
    assert_one_line_error(rc, err, "missing.jpg", "not in the features file")
    pairs.write_text("a.png sub/b.jpg extra\n")
    rc, _, err = run_cli(capsys, "match", feats, "--pairs", pairs, "-o", tmp_path / "m.h5")
    assert_one_line_error(rc, err, "pairs.txt:1")
    rc, _, err = run_cli(capsys, "match", feats, "--exhaustive", "--ratio", "1.5", "-o", tmp_path / "m.h5")
    assert_one_line_error(rc, err, "--ratio")
    rc, _, err = run_cli(capsys, "match", feats, "--exhaustive", "-o", feats)
    assert_one_line_error(rc, err, "different file")
    assert not (tmp_path / "m.h5").exists()


def test_models(capsys):
    rc, out, _ = run_cli(capsys, "models")
    assert rc == 0 and any(line.startswith("sift ") for line in out.splitlines())
    rc, out, _ = run_cli(capsys, "models", "rootsift")
    assert rc == 0 and "root: true" in out
    rc, _, err = run_cli(capsys, "models", "nonexistent")
    assert_one_line_error(rc, err, "unknown extractor")


def test_binary_descriptors(images, tmp_path, capsys):
    feats, matches = tmp_path / "f.h5", tmp_path / "m.h5"
    assert run_cli(capsys, "extract", images, "-o", feats, "--model", "orb", "--max-keypoints", "200")[0] == 0
    raw = fh5.read_features(feats, "a.png")
    assert raw["descriptors"].dtype == np.uint8 and raw["descriptors"].shape[1] == 32  # 256 bits
    rc, out, _ = run_cli(capsys, "match", feats, "--exhaustive", "-o", matches, "--distance-threshold", "64")
    assert rc == 0 and "3 pairs (3 new" in out
    fc = fh5.read_features(feats, "sub/deeper/c.png")
    i0, i1 = fh5.read_matches(matches, "a.png", "sub/deeper/c.png")["matches"].T
    residual = np.linalg.norm(raw["keypoints"][i0] - (fc["keypoints"][i1] + SHIFT), axis=1)
    assert len(i0) >= 20 and np.mean(residual < 1.5) > 0.8


def test_resize_keeps_original_pixels(images, tmp_path, capsys):
    feats = tmp_path / "f.h5"
    rc, _, _ = run_cli(capsys, "extract", images, "-o", feats, "--model", "sift", "--resize", "100", "--as-half")
    assert rc == 0
    fa = fh5.read_features(feats, "a.png")  # a.png is 200 x 200, extracted at 100 x 100
    assert fa["image_size"].tolist() == [200, 200] and fa["uncertainty"] == pytest.approx(2.0)
    assert fa["keypoints"].max() > 100 and fa["keypoints"].max() <= 200
    assert fh5.read_record(feats)["extractor"]["conf"]["resize"] == 100 and fh5.read_record(feats)["as_half"]


def test_matches_file_uses_hloc_scores_and_symmetric_ratio(images, tmp_path, capsys):
    feats = tmp_path / "f.h5"
    assert run_cli(capsys, "extract", images, "-o", feats, "--model", "sift", "--max-keypoints", "300")[0] == 0
    sym, one = tmp_path / "sym.h5", tmp_path / "one.h5"
    assert run_cli(capsys, "match", feats, "--exhaustive", "-o", sym, "--ratio", "0.9")[0] == 0
    assert run_cli(capsys, "match", feats, "--exhaustive", "-o", one, "--ratio", "0.9",
                   "--ratio-test", "one-way")[0] == 0
    matcher = fh5.read_record(sym)["matcher"]
    assert matcher["ratio_test"] == "symmetric" and matcher["scores"].startswith("(1 + cosine) / 2")
    assert load_yaml(tmp_path / "sym.h5.conf.yaml")["matcher"]["scores"] == matcher["scores"]
    fa, fc = fh5.read_features(feats, "a.png"), fh5.read_features(feats, "sub/deeper/c.png")
    m_sym = fh5.read_matches(sym, "a.png", "sub/deeper/c.png")
    m_one = fh5.read_matches(one, "a.png", "sub/deeper/c.png")
    # hloc's score of each stored match, from the stored descriptors
    i0, i1 = m_sym["matches"].T
    cos = np.sum(fa["descriptors"][i0] * fc["descriptors"][i1], axis=1)
    np.testing.assert_allclose(m_sym["matching_scores"], (1 + cos) / 2, atol=1e-5)
    # the symmetric test adds image 1's test to image 0's: its matches are a subset of the one-way matches
    assert set(map(tuple, m_sym["matches"])) <= set(map(tuple, m_one["matches"]))
    assert len(m_sym["matches"]) >= 50
