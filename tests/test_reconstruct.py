"""`featlab reconstruct` end to end on a tiny rendered scene, its stages (cameras, pairs, retrieval) and the EXIF
orientation rule of featlab.io.image."""
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from featlab.errors import ConfigError
from featlab.io import h5 as fh5
from featlab.io.image import apply_exif_orientation, exif_orientation, read_image
from featlab.sfm.cameras import CameraInfo, camera_info, focal_from_exif, group_cameras, image_size_as_read
from featlab.sfm.pairs import retrieval_pairs, select_pairs, vlad_descriptors
from clitools import run_cli

pycolmap = pytest.importorskip("pycolmap")

RENDER = {"num_frames": 8, "step": 6.0, "image_size": [240, 320], "seed": 1}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """8 rendered views (synthetic, 240x320, textured room with boxes) as PNGs, and their ground-truth model."""
    from featlab.datasets.render import render_collection
    from featlab.eval.sfm import write_posed_model

    root = tmp_path_factory.mktemp("synthetic-scene")
    coll = render_collection(RENDER)
    names = [f"{k:03d}.png" for k in range(len(coll))]
    (root / "images").mkdir()
    for k, name in enumerate(names):
        cv2.imwrite(str(root / "images" / name), cv2.cvtColor(coll.load_image(k), cv2.COLOR_RGB2BGR))
    write_posed_model(root / "gt", names, coll.K[0], coll.T_w2c, RENDER["image_size"])
    return root


def test_reconstruct_sift_registers_all_and_matches_ground_truth(scene, tmp_path, capsys):
    out = tmp_path / "recon"
    rc, text, _ = run_cli(capsys, "reconstruct", scene / "images", "-o", out, "--model", "sift", "--threads", "1")
    assert rc == 0 and "8/8 images registered" in text
    for f in ("features.h5", "matches.h5", "pairs.txt", "database.db", "report.json", "report.md", "model.png",
              "sparse/cameras.bin", "sparse/images.bin", "sparse/points3D.bin"):
        assert (out / f).is_file(), f
    report = json.loads((out / "report.json").read_text())
    st = report["statistics"]
    assert st["registered"] == 8 and st["points3D"] > 200 and 2.0 < st["mean_track_length"] <= 8
    assert 0 < st["mean_reprojection_error_px"] < 1.0
    assert set(report["times_s"]) == set(report["cpu_s"]) == {"extract", "pairs", "match", "verify", "mapping"}
    assert report["cpu_s"]["extract"] > 0 and all(v >= 0 for v in report["cpu_s"].values())
    assert report["settings"]["ratio"] == 0.8 and report["settings"]["cameras"] == 1
    # hloc layout: every image and all 28 pairs, keypoints of the model are those of the features file
    assert fh5.list_feature_names(out / "features.h5") == sorted(p.name for p in (scene / "images").iterdir())
    assert len(fh5.list_match_pairs(out / "matches.h5")) == 28
    rec = pycolmap.Reconstruction(str(out / "sparse"))
    img = rec.find_image_with_name("003.png")
    kp = fh5.read_features(out / "features.h5", "003.png")["keypoints"]
    xy = np.array([p.xy for p in img.points2D])
    assert np.abs(xy - kp).max() < 1e-3  # featlab pixels enter COLMAP unshifted
    # the model agrees with the rendered ground truth
    rc, text, _ = run_cli(capsys, "eval", "sfm", f"sift={out}", "--gt", scene / "gt", "-o", tmp_path / "ev")
    res = json.loads((tmp_path / "ev" / "sfm.json").read_text())["results"]["sift"]["summary"]
    assert rc == 0 and res["registered"] == 8
    assert res["rotation_error_deg_median"] < 2.0
    spread = res["alignment_threshold"] / 0.05
    assert res["position_error_median"] < 0.02 * spread

    # a second run resumes extraction and matching (nothing recomputed) and redoes the mapping
    rc, text, _ = run_cli(capsys, "reconstruct", scene / "images", "-o", out, "--model", "sift", "--threads", "1")
    assert rc == 0 and "already extracted" in text and "already matched" in text and "8/8" in text


def test_reconstruct_colmap_reference(scene, tmp_path, capsys):
    out = tmp_path / "colmap"
    rc, text, _ = run_cli(capsys, "reconstruct", scene / "images", "-o", out, "--colmap", "--threads", "1")
    assert rc == 0 and "8/8 images registered" in text
    report = json.loads((out / "report.json").read_text())
    assert set(report["times_s"]) == set(report["cpu_s"]) == {"extract", "match+verify", "mapping"}
    assert report["cpu_s"]["extract"] > 0
    assert not (out / "features.h5").exists()
    cam = pycolmap.Reconstruction(str(out / "sparse")).cameras[1]
    assert (cam.width, cam.height) == (320, 240)


@pytest.mark.parametrize("argv, fragment", [
    (["--pairs", "sequential"], "positive integer"),
    (["--pairs", "retrieval", "0"], "positive integer"),
    (["--pairs", "nearest", "3"], "exhaustive | sequential N | retrieval K"),
    (["--colmap", "--pairs", "retrieval", "3"], "retrieval pairs need featlab features"),
    (["--max-keypoints", "0"], "--max-keypoints"),
    (["--model", "nosuchmodel"], "nosuchmodel"),
])
def test_reconstruct_bad_arguments_one_line(scene, tmp_path, capsys, argv, fragment):
    rc, _, err = run_cli(capsys, "reconstruct", scene / "images", "-o", tmp_path / "o", *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("featlab: error:") and fragment in lines[0], err


def test_reconstruct_needs_two_images(tmp_path, capsys):
    (tmp_path / "one").mkdir()
    cv2.imwrite(str(tmp_path / "one" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    rc, _, err = run_cli(capsys, "reconstruct", tmp_path / "one", "-o", tmp_path / "o")
    assert rc == 2 and "at least 2" in err


# ------------------------------------------------------------------------------------------------ pairs
def test_retrieval_pairs_pick_the_most_similar():
    names = ["a", "b", "c", "d"]
    g = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    assert retrieval_pairs(names, g, 1) == [("a", "b"), ("c", "d")]
    assert len(retrieval_pairs(names, g, 3)) == 6  # K >= M - 1: exhaustive
    with pytest.raises(ConfigError):
        retrieval_pairs(names, g, 0)


def test_vlad_separates_two_descriptor_populations():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 8, 32)).astype(np.float32)  # two "places", 8 visual words each

    def image(place):
        words = centres[place][rng.integers(0, 8, 200)]
        d = words + 0.05 * rng.normal(size=words.shape).astype(np.float32)
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    desc = [image(0), image(1), image(0), image(1), image(0)]
    v = vlad_descriptors(desc, clusters=8)
    assert v.shape == (5, 8 * 32) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    pairs = retrieval_pairs(["p0", "q0", "p1", "q1", "p2"], v, 1)
    assert all(a[0] == b[0] for a, b in pairs)  # no pair across the two places
    binary = [np.packbits(d > 0, axis=1) for d in desc]  # binary descriptors work as +-1 vectors
    assert vlad_descriptors(binary, clusters=4).shape == (5, 4 * 32)


def test_select_pairs_modes():
    names = [f"{i}" for i in range(5)]
    assert len(select_pairs(names, "exhaustive")) == 10
    assert select_pairs(names, "sequential", 1) == [("0", "1"), ("1", "2"), ("2", "3"), ("3", "4")]
    with pytest.raises(ConfigError):
        select_pairs(names, "sequential", None)


# ------------------------------------------------------------------------------------------------ cameras
def _exif_jpeg(path, size_wh, orientation=1, **tags):
    from PIL import ExifTags

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size_wh[1], size_wh[0], 3), dtype=np.uint8))
    exif = img.getexif()
    exif[0x0112] = orientation
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    names = {v: k for k, v in ExifTags.TAGS.items()}
    for k, v in tags.items():
        sub[names[k]] = v
    img.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_focal_from_exif_rules():
    assert focal_from_exif({"FocalLengthIn35mmFilm": 36}, 600, 400, 600) == (600.0, "exif-35mm")
    f, src = focal_from_exif({"FocalLength": 4.0, "FocalPlaneXResolution": 1000.0, "FocalPlaneResolutionUnit": 4,
                              "ExifImageWidth": 4000}, 1000, 750, 1000)
    assert src == "exif-focal-plane" and f == pytest.approx(4.0 * 1000 * 1000 / 4000)
    assert focal_from_exif({}, 600, 400, 600) == (pytest.approx(720.0), "default")


def test_camera_info_and_groups_follow_exif(tmp_path):
    a = _exif_jpeg(tmp_path / "a.jpg", (96, 64), FocalLengthIn35mmFilm=28)
    b = _exif_jpeg(tmp_path / "b.jpg", (96, 64), orientation=6, FocalLengthIn35mmFilm=28)  # portrait shot
    (tmp_path / "sub").mkdir()
    c = _exif_jpeg(tmp_path / "sub" / "c.jpg", (96, 64), FocalLengthIn35mmFilm=28)
    sizes = [image_size_as_read(p) for p in (a, b, c)]
    assert sizes == [(96, 64), (64, 96), (96, 64)] and read_image(b).shape == (96, 64, 3)
    infos = [camera_info(p, *s) for p, s in zip((a, b, c), sizes)]
    assert infos[0].focal == pytest.approx(28 / 36 * 96) and infos[0].has_prior and infos[1].orientation == 6
    names = ["a.jpg", "b.jpg", "sub/c.jpg"]
    assert group_cameras(names, infos, "single") == [0, 1, 0]  # the rotated shot never shares intrinsics
    assert group_cameras(names, infos, "per-folder") == [0, 1, 2]
    assert group_cameras(names, infos, "per-image") == [0, 1, 2]
    with pytest.raises(ConfigError):
        group_cameras(names, infos, "per-lens")
    info = CameraInfo(320, 240, 384.0, "default", "", 1)
    from featlab.sfm.cameras import make_camera

    cam = make_camera("OPENCV", info)
    assert cam.model.name == "OPENCV" and (cam.principal_point_x, cam.principal_point_y) == (160, 120)
    assert not cam.has_prior_focal_length


# ------------------------------------------------------------------------------------------------ EXIF rule
@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_image_applies_exif_orientation_as_pil_and_opencv(tmp_path, orientation):
    arr = np.random.default_rng(orientation).integers(0, 255, (12, 20, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    img.save(path, exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    assert exif_orientation(path) == orientation
    assert np.array_equal(read_image(path), expected)
    assert np.array_equal(apply_exif_orientation(arr, orientation), expected)
    jpg = _exif_jpeg(tmp_path / "o.jpg", (20, 12), orientation)  # OpenCV's imread (hloc's reader) agrees
    assert np.array_equal(read_image(jpg), cv2.cvtColor(cv2.imread(str(jpg)), cv2.COLOR_BGR2RGB))


def test_pycolmap_import_order_keeps_opencv_png_writer_alive():
    code = ("from featlab.sfm import import_pycolmap; import_pycolmap(); import cv2, numpy as np; "
            "ok, buf = cv2.imencode('.png', np.zeros((8, 8, 3), np.uint8)); print(ok)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "True", res.stderr[-500:]


def test_stage_clock_counts_cpu_work_and_not_waiting():
    import time

    from featlab.sfm.pipeline import StageClock

    clock = StageClock()
    with clock("wait"):
        time.sleep(0.3)
    with clock("work"):
        t = time.process_time()
        while time.process_time() - t < 0.3:
            pass
    with clock("work"):  # a second entry adds to the stage
        t = time.process_time()
        while time.process_time() - t < 0.1:
            pass
    assert clock.wall["wait"] >= 0.3 and clock.cpu["wait"] < 0.1
    assert clock.cpu["work"] >= 0.39 and clock.wall["work"] >= 0.39


def test_learned_descriptors_are_matched_mutual_only_and_sift_family_with_the_ratio_test():
    from featlab.extractors import available_extractors
    from featlab.sfm.pipeline import SIFT_RATIO, default_ratio

    names = set(available_extractors())
    for model in ("disk", "aliked", "xfeat", "caps", "caps-sift", "scfeat", "scfeat-desc", "orb"):
        assert model in names and default_ratio(model) is None, model
    for model in ("sift", "rootsift", "residual-sift", "residual-sift-v1"):
        assert default_ratio(model) == SIFT_RATIO, model
