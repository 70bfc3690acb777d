"""The failures users hit (issue 13, section 3): full disks, read-only folders, invalid settings, symlinked folders,
huge photos, models without weights, bad images, and the help texts. Every user error must give one line on
stderr, exit code 2, and leave at most the resumable partial file behind.

Disk-full and read-only cases mount a tiny tmpfs, which needs root (CI runs as root); elsewhere they are skipped.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.data

from featlab.cli import build_parser, plain_text
from featlab.conf import checked, none_or, resolve_conf
from featlab.errors import ConfigError
from featlab.io import h5 as fh5
from clitools import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------- helpers
def run_subprocess(*argv, code: str | None = None, timeout: int = 300):
    """The CLI in a fresh process, so that stderr holds everything a user sees (logging included)."""
    cmd = [sys.executable, "-c", code, *map(str, argv)] if code else [sys.executable, "-m", "featlab", *map(str, argv)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO, env=env)


@pytest.fixture
def photos(tmp_path):
    """Six 160x160 crops of one photo (overlapping, so that every pair has matches)."""
    root = tmp_path / "photos"
    root.mkdir()
    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[::2, ::2]  # 256 x 256
    for i in range(6):
        cv2.imwrite(str(root / f"{i}.png"), photo[10 * i:10 * i + 160, 8 * i:8 * i + 160])
    return root


class TinyFS:
    """A tmpfs of a given size mounted at ``path`` (root only); ``resize`` grows it in place (remount)."""

    def __init__(self, path: Path):
        self.path = path
        self.mounted = False

    def mount(self, size: str, read_only: bool = False):
        self.path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size}" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(self.path)], capture_output=True,
                           text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); these cases need root (CI runs as root)")
        self.mounted = True
        return self.path

    def resize(self, size: str):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(self.path)], check=True)

    def files(self) -> list[str]:
        return sorted(os.listdir(self.path))


@pytest.fixture
def tiny_fs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tiny tmpfs needs root (CI runs as root)")
    fs = TinyFS(tmp_path / "mnt")
    yield fs
    if fs.mounted:
        subprocess.run(["umount", "-l", str(fs.path)], check=False)


# --------------------------------------------------------------------------------------------- full disk, read-only
def test_match_into_a_full_disk_stops_cleanly_and_resumes(photos, tmp_path, tiny_fs, capsys):
    feats = tmp_path / "f.h5"
    assert run_cli(capsys, "extract", photos, "-o", feats, "--model", "sift", "--max-keypoints", "500")[0] == 0
    mnt = tiny_fs.mount("300k")  # room for a few pairs above the 256 KiB reserve
    rc, _, err = run_cli(capsys, "match", feats, "--exhaustive", "-o", mnt / "m.h5")
    assert_one_line_error(rc, err, "disk full", "m.h5.partial", "run the same command again to resume")
    assert tiny_fs.files() == ["m.h5.partial"]  # no output, no lock, no temporary file
    kept = len(fh5.list_match_pairs(mnt / "m.h5.partial"))
    assert 0 < kept < 15
    tiny_fs.resize("4m")
    rc, out, _ = run_cli(capsys, "match", feats, "--exhaustive", "-o", mnt / "m.h5")
    assert rc == 0 and f"15 pairs ({15 - kept} new, {kept} already present)" in out
    assert tiny_fs.files() == ["m.h5", "m.h5.conf.yaml"]


def test_extract_into_a_full_disk_stops_cleanly_and_resumes(photos, tiny_fs, capsys):
    mnt = tiny_fs.mount("700k")  # 500 SIFT keypoints: ~260 KiB of descriptors per image
    rc, _, err = run_cli(capsys, "extract", photos, "-o", mnt / "f.h5", "--model", "sift", "--max-keypoints", "500")
    assert_one_line_error(rc, err, "disk full", "f.h5.partial", "run the same command again to resume")
    assert tiny_fs.files() == ["f.h5.partial"]
    kept = len(fh5.list_feature_names(mnt / "f.h5.partial"))
    assert 0 < kept < 6
    tiny_fs.resize("8m")
    rc, out, _ = run_cli(capsys, "extract", photos, "-o", mnt / "f.h5", "--model", "sift", "--max-keypoints", "500")
    assert rc == 0 and f"6 images ({6 - kept} new, {kept} already present)" in out


# the disk fills between featlab's free-space check and HDF5's write (another process writing): h5py then only
# prints the failure and any later call into HDF5 crashes (exit 139 before the fix); the CLI must still end with
# one line and exit 2, and the partial file must stay resumable
RACE = """
import sys
import featlab.io.h5 as h5
h5.check_free_space = lambda *a, **k: None
from featlab.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_disk_filled_by_another_process_does_not_crash(photos, tmp_path, tiny_fs, capsys):
    feats = tmp_path / "f.h5"
    assert run_cli(capsys, "extract", photos, "-o", feats, "--model", "sift", "--max-keypoints", "500")[0] == 0
    mnt = tiny_fs.mount("40k")
    r = run_subprocess("match", feats, "--exhaustive", "-o", mnt / "m.h5", code=RACE)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("featlab: error: cannot write") and "disk full" in last
    assert tiny_fs.files() == ["m.h5.partial"]
    tiny_fs.resize("4m")
    rc, out, _ = run_cli(capsys, "match", feats, "--exhaustive", "-o", mnt / "m.h5")
    assert rc == 0 and "15 pairs" in out


def test_read_only_output_folder(photos, tmp_path, tiny_fs, capsys):
    feats = tmp_path / "f.h5"
    assert run_cli(capsys, "extract", photos, "-o", feats, "--model", "sift", "--max-keypoints", "100")[0] == 0
    mnt = tiny_fs.mount("1m", read_only=True)
    for argv in (("extract", photos, "-o", mnt / "f.h5", "--model", "sift"),
                 ("extract", photos, "-o", mnt / "sub" / "f.h5", "--model", "sift"),
                 ("match", feats, "--exhaustive", "-o", mnt / "m.h5"),
                 ("demo", "--model", "sift", "-o", mnt / "demo")):
        rc, _, err = run_cli(capsys, *argv)
        assert_one_line_error(rc, err, "cannot write", "read-only file system")
    assert tiny_fs.files() == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into folders without write permission")
def test_folder_without_write_permission(photos, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        rc, _, err = run_cli(capsys, "extract", photos, "-o", locked / "f.h5", "--model", "sift")
        assert_one_line_error(rc, err, "cannot write", "permission denied")
    finally:
        locked.chmod(0o755)


# --------------------------------------------------------------------------------------------- invalid settings
@pytest.mark.parametrize("argv, fragments", [
    (["--max-keypoints", "0"], ["max_keypoints", ">= 1 (or -1)"]),
    (["--max-keypoints", "-5"], ["max_keypoints", "got -5"]),
    (["--conf", "dtype=float8"], ["dtype", "one of float32, bfloat16"]),
    (["--conf", "sigma=-1"], ["sigma", "> 0"]),
    (["--conf", "n_octave_layers=0"], ["n_octave_layers", ">= 1"]),
    (["--conf", "resize=0"], ["resize", ">= 1"]),
    (["--max-size", "-1"], ["--max-size"]),
])
def test_invalid_values_are_refused(photos, tmp_path, capsys, argv, fragments):
    out = tmp_path / "f.h5"
    rc, _, err = run_cli(capsys, "extract", photos, "-o", out, "--model", "sift", *argv)
    assert_one_line_error(rc, err, *fragments)
    assert not out.exists() and not fh5.partial_path(out).exists()


@pytest.mark.parametrize("model, conf, fragment", [
    ("orb", {"fast_threshold": 300}, "<= 255"), ("orb", {"patch_size": 1}, ">= 2"),
    ("surf", {"n_layers": 2}, ">= 3"), ("rootsift", {"edge_threshold": 1.0}, "> 1"),
])
def test_other_extractors_declare_their_ranges(model, conf, fragment):
    from featlab.extractors import build_extractor

    with pytest.raises(ConfigError, match=re.escape(fragment)):
        build_extractor(model, conf)


class TestChecked:
    defaults = {"sigma": checked(1.6, gt=0), "k": checked(10, ge=1, also=(-1,)),
                "mode": checked("a", choices=("a", "b")), "size": checked(none_or(int, list), ge=1, le=4096),
                "plain": 3, "nested": {"x": checked(0.5, ge=0, le=1)}}

    @pytest.mark.parametrize("user", [{}, {"sigma": 1e-3}, {"k": -1}, {"k": 1}, {"mode": "b"}, {"size": None},
                                      {"size": 4096}, {"size": [480, 640]}, {"nested": {"x": 1.0}}])
    def test_valid(self, user):
        conf = resolve_conf(self.defaults, user)
        assert conf.sigma > 0 and conf.plain == 3  # the markers are unwrapped in the resolved config

    @pytest.mark.parametrize("user, fragment", [
        ({"sigma": 0}, "'sigma': must be > 0"), ({"k": 0}, "'k': must be >= 1 (or -1)"), ({"k": -2}, ">= 1"),
        ({"mode": "c"}, "one of a, b"), ({"size": 0}, ">= 1"), ({"size": [480, 0]}, ">= 1"),
        ({"size": 5000}, "<= 4096"), ({"nested": {"x": 2.0}}, "'nested.x'"), ({"sigma": "big"}, "expected float"),
    ])
    def test_invalid(self, user, fragment):
        with pytest.raises(ConfigError, match=re.escape(fragment)):
            resolve_conf(self.defaults, user)

    def test_a_default_must_pass_its_own_check(self):
        with pytest.raises(TypeError):
            checked(0, gt=0)
        with pytest.raises(TypeError):
            checked(None, ge=1)  # a None default declares its types with none_or

    def test_every_registered_default_passes(self):
        from featlab.extractors import available_extractors
        from featlab.extractors.base import _REGISTRY

        available_extractors()
        for name, (factory, preset, _) in _REGISTRY.items():
            defaults = getattr(factory, "default_conf", {})
            for key, rule in defaults.items():
                if isinstance(rule, checked) and key in preset:
                    assert rule.violation(preset[key]) is None, (name, key, preset[key])


# --------------------------------------------------------------------------------------------- inputs
def test_symlinked_sub_folders_are_followed_without_loops(photos, tmp_path, capsys):
    other = tmp_path / "elsewhere"
    other.mkdir()
    (photos / "0.png").rename(other / "moved.png")
    (photos / "linked").symlink_to(other, target_is_directory=True)
    (photos / "loop").symlink_to(photos, target_is_directory=True)  # would recurse forever if followed blindly
    feats = tmp_path / "f.h5"
    rc, out, _ = run_cli(capsys, "extract", photos, "-o", feats, "--model", "sift", "--max-keypoints", "50")
    assert rc == 0 and "6 images (6 new" in out
    names = fh5.list_feature_names(feats)
    assert "linked/moved.png" in names and not any(n.startswith("loop/") for n in names)


def test_a_bad_image_points_at_skip_bad_not_at_a_rerun(photos, tmp_path):
    (photos / "9-broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    feats = tmp_path / "f.h5"
    r = run_subprocess("extract", photos, "-o", feats, "--model", "sift", "--max-keypoints", "50")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "9-broken.jpg" in lines[0] and "--skip-bad" in lines[0], r.stderr
    assert "run the same command again" not in r.stderr  # that advice loops: the same image fails again
    r = run_subprocess("extract", photos, "-o", feats, "--model", "sift", "--max-keypoints", "50", "--skip-bad")
    assert r.returncode == 0 and "6 images (0 new, 6 already present, 1 unreadable skipped)" in r.stdout


# a 6000 x 4000 photo, without a 6 GB allocation: the extractor's network is replaced by one that records the
# size it is given (the bound) or fails to allocate (the clear error)
def _huge_photo(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    small = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    path = folder / "huge.jpg"
    cv2.imwrite(str(path), cv2.resize(small, (6000, 4000), interpolation=cv2.INTER_NEAREST))
    return path


def _recording_forward(sizes, fail: bool = False):
    import torch

    def forward(self, data):
        b, _, h, w = data["image"].shape
        sizes.append((w, h))
        if fail:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:114] . DefaultCPUAllocator: can't allocate memory: "
                               "you tried to allocate 6144000000 bytes. Error code 12 (Cannot allocate memory)")
        return {"keypoints": torch.tensor([[[10.5, 20.5]]]), "keypoint_scores": torch.ones(1, 1),
                "descriptors": torch.nn.functional.normalize(torch.ones(1, 1, 128), dim=-1)}
    return forward


def test_huge_photo_is_extracted_at_a_bounded_size(tmp_path, capsys, monkeypatch):
    from featlab.commands.extract import DEFAULT_MAX_SIZE
    from featlab.extractors.handcrafted import SIFT

    _huge_photo(tmp_path / "big")
    sizes = []
    monkeypatch.setattr(SIFT, "_forward", _recording_forward(sizes))
    feats = tmp_path / "f.h5"
    rc, out, _ = run_cli(capsys, "extract", tmp_path / "big", "-o", feats, "--model", "sift")
    assert rc == 0 and sizes == [(DEFAULT_MAX_SIZE, round(DEFAULT_MAX_SIZE * 2 / 3))]
    assert f"1 image(s) larger than {DEFAULT_MAX_SIZE} px were extracted at {DEFAULT_MAX_SIZE} px" in out
    f = fh5.read_features(feats, "huge.jpg")  # keypoints and size in the original image's pixels
    assert f["image_size"].tolist() == [6000, 4000] and f["uncertainty"] == pytest.approx(6000 / DEFAULT_MAX_SIZE)
    small = np.array([DEFAULT_MAX_SIZE, round(DEFAULT_MAX_SIZE * 2 / 3)])
    np.testing.assert_allclose(f["keypoints"][0], np.array([10.5, 20.5]) * np.array([6000, 4000]) / small, rtol=1e-5)
    assert fh5.read_record(feats)["max_size"] == DEFAULT_MAX_SIZE
    # --resize wins over the bound; --max-size 0 is full size
    sizes.clear()
    assert run_cli(capsys, "extract", tmp_path / "big", "-o", tmp_path / "g.h5", "--model", "sift",
                   "--resize", "2400")[0] == 0
    assert sizes == [(2400, 1600)]


def test_huge_photo_without_the_bound_fails_clearly(tmp_path, capsys, monkeypatch):
    from featlab.extractors.handcrafted import SIFT

    _huge_photo(tmp_path / "big")
    sizes = []
    monkeypatch.setattr(SIFT, "_forward", _recording_forward(sizes, fail=True))
    feats = tmp_path / "f.h5"
    rc, _, err = run_cli(capsys, "extract", tmp_path / "big", "-o", feats, "--model", "sift", "--max-size", "0")
    assert sizes == [(6000, 4000)]
    assert_one_line_error(rc, err, "not enough memory", "huge.jpg (6000x4000)", "--max-size")
    assert not feats.exists() and fh5.partial_path(feats).exists()


# --------------------------------------------------------------------------------------------- commands
def test_models_lists_only_what_runs_and_marks_recipes(capsys):
    rc, out, _ = run_cli(capsys, "models")
    assert rc == 0
    head, _, tail = out.partition("trainable recipes")
    runnable = {line.split()[0] for line in head.splitlines() if line.strip()}
    recipes = {line.split()[0] for line in tail.splitlines()[1:] if line.strip() and not line.startswith("weights")}
    assert {"sift", "residual-sift", "caps-sift"} <= runnable
    no_weights = {"residual-rootsift", "residual-sift-product", "residual-sift-sum", "residual-surf-upright"}
    from featlab.commands.models import weights_file

    for name in no_weights:
        if not weights_file(name).is_file():
            assert name in recipes and name not in runnable, name
    rc, out, _ = run_cli(capsys, "models", "residual-sift-sum")
    assert rc == 0 and "not runnable yet" in out and "featlab train residual" in out


def test_demo_needs_both_images(tmp_path, capsys):
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((32, 32, 3), np.uint8))
    for flag in ("--image0", "--image1"):
        rc, _, err = run_cli(capsys, "demo", "--model", "sift", flag, img, "-o", tmp_path / "demo")
        assert_one_line_error(rc, err, flag, "--image0 and --image1")
    assert not (tmp_path / "demo").exists()


def _parsers(parser, path=("featlab",)):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, path + (name,))


def test_help_texts_are_plain_and_complete():
    markup = re.compile(r"``|:[a-z]+:`")
    for path, parser in _parsers(build_parser()):
        assert not markup.search(parser.format_help()), f"{' '.join(path)} --help shows reST markup"
        for action in parser._actions:
            if action.option_strings and action.help is None:
                pytest.fail(f"{' '.join(path)} {action.option_strings[0]} has no help text")


def test_plain_text():
    assert plain_text("see :func:`featlab.io.h5.staged_h5` and ``x = 1``") == "see featlab.io.h5.staged_h5 and x = 1"
    assert plain_text(":class:`~featlab.errors.InputError`") == "InputError"
    assert plain_text("Examples::\n\n    a") == "Examples:\n\n    a"


def test_train_method_help_shows_its_own_examples():
    r = run_subprocess("train", "caps", "--help")
    assert r.returncode == 0
    examples = r.stdout.split("examples:")[1].split("\n\n")[0]
    assert "featlab train caps" in examples and "residual" not in examples
