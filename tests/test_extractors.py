"""Extractor output contract, pixel conventions and error paths (SIFT/RootSIFT/ORB; DISK/ALIKED/XFeat baselines)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from featlab.errors import ConfigError, InputError
from featlab.extractors import build_extractor
from featlab.extractors.baselines import default_weights_path
from featlab.io.image import image_to_tensor, rgb_to_gray

HANDCRAFTED = ["sift", "rootsift", "rootsift-upright", "orb"]
BASELINES = ["disk", "aliked", "xfeat"]


@pytest.fixture(scope="module")
def astronaut():
    """(1, 3, 120, 150) RGB in [0, 1]: sizes divisible by neither 16 nor 32 (exercises padding)."""
    img = cv2.resize(skdata.astronaut(), (150, 120), interpolation=cv2.INTER_AREA)
    return image_to_tensor(img)


_BUILT: dict = {}


def get_extractor(name: str, **conf):
    """Build once per configuration (weights loading and OpenCV objects are reused across tests)."""
    key = (name, tuple(sorted(conf.items())))
    if key not in _BUILT:
        if name in BASELINES and not default_weights_path(name, conf.get("model_name")).is_file():
            pytest.skip(f"{name} weights not found at {default_weights_path(name, conf.get('model_name'))} "
                        "(../shared/data is absent)")
        _BUILT[key] = build_extractor(name, conf)
    return _BUILT[key]


def check_contract(ext, pred: dict, image: torch.Tensor, max_keypoints: int | None = None):
    b, _, h, w = image.shape
    for key in ("keypoints", "keypoint_scores", "descriptors", "image_size"):
        assert key in pred, key
    kpts, scores, desc = pred["keypoints"], pred["keypoint_scores"], pred["descriptors"]
    n = kpts.shape[1]
    assert kpts.shape == (b, n, 2) and kpts.dtype == torch.float32
    assert scores.shape == (b, n) and scores.dtype == torch.float32
    assert pred["image_size"].dtype == torch.int64 and pred["image_size"].tolist() == [[w, h]] * b
    if ext.descriptor_type == "binary":
        assert desc.dtype == torch.uint8 and desc.shape == (b, n, ext.descriptor_dim // 8)
    else:
        assert desc.dtype == torch.float32 and desc.shape == (b, n, ext.descriptor_dim)
    if max_keypoints is not None:
        assert n <= max_keypoints
    masks = pred.get("keypoint_masks", torch.ones(b, n, dtype=torch.bool))
    for i in range(b):
        k, s, d = kpts[i][masks[i]], scores[i][masks[i]], desc[i][masks[i]]
        assert torch.isfinite(k).all() and torch.isfinite(s).all()
        assert ((k[:, 0] >= 0) & (k[:, 0] <= w) & (k[:, 1] >= 0) & (k[:, 1] <= h)).all(), "keypoint outside image"
        assert (s[1:] <= s[:-1]).all(), "scores not sorted by decreasing value"
        if ext.descriptor_type == "float" and len(d):
            torch.testing.assert_close(d.norm(dim=-1), torch.ones(len(d)), atol=1e-4, rtol=0)
        if not masks[i].all():  # padded entries are zero
            assert (kpts[i][~masks[i]] == 0).all() and (scores[i][~masks[i]] == 0).all()


# ------------------------------------------------------------------------------------------------ handcrafted
@pytest.mark.parametrize("name", HANDCRAFTED)
class TestHandcrafted:
    def test_contract_rgb(self, name, astronaut):
        ext = get_extractor(name, max_keypoints=60)
        pred = ext({"image": astronaut})
        check_contract(ext, pred, astronaut, max_keypoints=60)
        assert pred["keypoints"].shape[1] == 60  # a textured photo has more than 60 corners / blobs

    def test_gray_equals_rgb(self, name, astronaut):
        # handcrafted extractors see the BT.601 gray image whatever the input
        ext = get_extractor(name, max_keypoints=60)
        pred_rgb = ext({"image": astronaut})
        pred_gray = ext({"image": rgb_to_gray(astronaut)})
        check_contract(ext, pred_gray, astronaut, max_keypoints=60)
        torch.testing.assert_close(pred_gray["keypoints"], pred_rgb["keypoints"])

    def test_constant_image_has_no_keypoints(self, name):
        ext = get_extractor(name, max_keypoints=60)
        image = torch.full((2, 3, 48, 64), 0.5)
        pred = ext({"image": image})
        check_contract(ext, pred, image)
        assert pred["keypoints"].shape == (2, 0, 2)

    def test_all_keypoints_when_unlimited(self, name, astronaut):
        ext = get_extractor(name, max_keypoints=-1)
        pred = ext({"image": astronaut})
        check_contract(ext, pred, astronaut)
        assert pred["keypoints"].shape[1] > 60


def test_batch_with_different_counts_is_padded_and_masked(astronaut):
    ext = get_extractor("sift", max_keypoints=60)
    flat = astronaut.clone()
    flat[..., :, 40:] = 0.5  # fewer blobs in the second image
    image = torch.cat([astronaut, flat])
    pred = ext({"image": image})
    check_contract(ext, pred, image, max_keypoints=60)
    assert "keypoint_masks" in pred and pred["keypoint_masks"][0].all() and not pred["keypoint_masks"][1].all()


def _blob_image(centres, sigmas, size=(96, 128)):
    """Gray uint8-valued image with Gaussian blobs centred at featlab coordinates (centre of top-left px = 0.5)."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    img = np.full((h, w), 0.5)
    for (cx, cy), s in zip(centres, sigmas):
        img -= 0.4 * np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * s * s))
    return torch.from_numpy(np.round(img * 255) / 255).float()[None, None]


@pytest.mark.parametrize("precise_upscale", [False, True])
def test_sift_detects_blobs_at_their_featlab_centre(precise_upscale):
    # OpenCV SIFT's default 2x upsampling puts kp.pt 0.25 px right/below the truth; a plain +0.5 conversion
    # fails this test by ~0.25 px, so the tolerance is well below that
    centres = [(30.3, 40.7), (70.0, 30.5), (100.75, 62.2), (50.5, 75.25)]
    sigmas = [2.5, 3.0, 4.0, 3.5]
    ext = get_extractor("sift", max_keypoints=-1, precise_upscale=precise_upscale)
    kpts = ext({"image": _blob_image(centres, sigmas)})["keypoints"][0].numpy()
    for c in centres:
        err = np.linalg.norm(kpts - np.array(c), axis=1).min()
        assert err < 0.1, f"blob at {c} detected {err:.3f} px away"


def test_dominant_orientation_follows_the_gradient_and_the_image_rotation():
    """OpenCV's angle convention: a ramp rising to the right has angle 0, one rising downwards 90 (y up, angle =
    360 - direction); rotating the image by 90 degrees turns the orientation by 90."""
    from featlab.extractors.handcrafted import dominant_orientations

    ramp = np.tile(np.arange(64, dtype=np.float32), (64, 1)) * 3
    centre = np.array([[32.0, 32.0]])
    assert dominant_orientations(ramp, centre, 4.0)[0] == pytest.approx(0.0, abs=0.5)
    assert dominant_orientations(ramp.T.copy(), centre, 4.0)[0] == pytest.approx(90.0, abs=0.5)
    gray = skdata.camera()[::2, ::2].copy()  # 256 x 256
    rng = np.random.default_rng(0)
    pts = rng.uniform(40, 216, (50, 2))
    rot = np.rot90(gray).copy()  # counter-clockwise: featlab (x, y) -> (y, W - x)
    pts_rot = np.c_[pts[:, 1], 256 - pts[:, 0]]
    a, b = dominant_orientations(gray, pts, 6.0), dominant_orientations(rot, pts_rot, 6.0)
    diff = (b - a + 180) % 360 - 180
    assert np.median(np.abs(np.abs(diff) - 90)) < 3.0


def test_sift_describe_at_points_is_rotation_invariant_with_dominant_orientation():
    """RootSIFT at arbitrary points (a learned detector's): with the dominant orientation, descriptors of a point and
    of its image under a 90-degree rotation agree; upright ones do not; points and input order are kept."""
    ext = build_extractor("rootsift", {"max_keypoints": -1})
    gray = skdata.camera()[::2, ::2].copy()
    rng = np.random.default_rng(1)
    pts = rng.uniform(40, 216, (60, 2)).astype(np.float32)
    rot = np.rot90(gray).copy()
    pts_rot = np.c_[pts[:, 1], 256 - pts[:, 0]].astype(np.float32)
    d0, d1 = ext.describe(gray, pts, 6.0), ext.describe(rot, pts_rot, 6.0)
    assert d0.shape == (60, 128) and np.allclose(np.linalg.norm(d0, axis=1), 1, atol=1e-5)
    oriented = np.median((d0 * d1).sum(1))
    upright = np.median((ext.describe(gray, pts, 6.0, np.zeros(60)) * ext.describe(rot, pts_rot, 6.0, np.zeros(60)))
                        .sum(1))
    assert oriented > 0.9 and upright < oriented - 0.1
    # one point described alone equals its row in the batch (order kept, no point dropped or re-ordered)
    assert np.allclose(ext.describe(gray, pts[7:8], 6.0), d0[7:8], atol=1e-6)
    assert ext.describe(gray, np.zeros((0, 2)), 6.0).shape == (0, 128)


def test_orb_keypoints_mirror_exactly_at_every_level(astronaut):
    # on a mirrored image, a keypoint at x must come back at W - x; OpenCV's kp.pt + 0.5 misses this by up to
    # ~2.5 px on coarse pyramid levels (their sizes are rounded), the level-aware conversion is exact
    ext = get_extractor("orb", max_keypoints=-1)
    gray = (rgb_to_gray(astronaut)[0, 0].numpy() * 255).round().astype(np.uint8)
    w = gray.shape[1]
    p, _, _, sc, _ = ext.detect_and_describe(gray)
    pm, _, _, scm, _ = ext.detect_and_describe(np.ascontiguousarray(gray[:, ::-1]))
    pm[:, 0] = w - pm[:, 0]
    checked = 0
    for level in np.unique(sc):
        a, b = p[sc == level], pm[scm == level]
        if len(a) == 0 or len(b) == 0:
            continue
        d = np.linalg.norm(a[:, None] - b[None], axis=-1)
        checked += int((d.min(1) < 1e-3).sum())
        assert np.median(d.min(1)) < 1e-3, f"level {level}: median mirror error {np.median(d.min(1)):.3f} px"
    assert checked > 50


def test_orb_is_binary(astronaut):
    ext = get_extractor("orb", max_keypoints=60)
    assert ext.descriptor_type == "binary" and ext.descriptor_dim == 256
    assert ext({"image": astronaut})["descriptors"].dtype == torch.uint8


@pytest.mark.parametrize("conf", [{"max_keypionts": 5}, {"scale_factor": 1.0}, {"n_levels": 0}])
def test_orb_bad_conf(conf):
    with pytest.raises(ConfigError):
        build_extractor("orb", conf)


# --------------------------------------------------------------------------------------------------- baselines
@pytest.mark.parametrize("name", BASELINES)
def test_missing_weights_raise_input_error_naming_the_file(name, tmp_path):
    missing = tmp_path / "nowhere" / "weights.pth"
    with pytest.raises(InputError) as info:
        build_extractor(name, {"weights": str(missing)})
    assert str(missing) in str(info.value) and "weights" in str(info.value)


@pytest.mark.parametrize("name", BASELINES)
def test_corrupt_weights_raise_input_error(name, tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pth"):
        build_extractor(name, {"weights": str(bad)})


def test_baseline_bad_conf():
    with pytest.raises(ConfigError):
        build_extractor("aliked", {"model_name": "aliked-x99", "weights": "/nonexistent.pth"})
    with pytest.raises(ConfigError):
        build_extractor("xfeat", {"dtype": "float16", "weights": "/nonexistent.pth"})


@pytest.mark.slow
@pytest.mark.parametrize("name", BASELINES)
class TestBaselines:
    def test_contract_rgb_gray_and_constant(self, name, astronaut):
        ext = get_extractor(name, max_keypoints=50)
        pred = ext({"image": astronaut})
        check_contract(ext, pred, astronaut, max_keypoints=50)
        assert pred["keypoints"].shape[1] >= 20
        pred_gray = ext({"image": rgb_to_gray(astronaut)})
        check_contract(ext, pred_gray, astronaut, max_keypoints=50)
        assert pred_gray["keypoints"].shape[1] >= 20
        const = torch.full((1, 3, 40, 56), 0.5)
        pred_const = ext({"image": const})
        check_contract(ext, pred_const, const, max_keypoints=50)
        if name != "disk":  # DISK's U-Net fires on its own zero-padding border artefacts, even on a flat image
            assert pred_const["keypoints"].shape[1] == 0

    def test_same_keypoints_as_kornia_plus_half_pixel(self, name):
        """featlab = kornia + 0.5 (kornia's frame puts the centre of the top-left pixel at (0, 0)). For XFeat
        the image is a multiple of 32, where kornia's resize is the identity and featlab's padding is empty."""
        img = image_to_tensor(cv2.resize(skdata.astronaut(), (160, 128), interpolation=cv2.INTER_AREA))
        ext = get_extractor(name, max_keypoints=-1)
        pred = ext({"image": img})
        net = ext.net
        with torch.no_grad():
            if name == "disk":
                ref = net(img, n=None, pad_if_not_divisible=True)[0]
                ref_k, ref_d = ref.keypoints, ref.descriptors
            elif name == "aliked":
                ref = net(img)[0]
                ref_k, ref_d = ref.keypoints, ref.descriptors
            else:
                ref = net.detectAndCompute(img, top_k=100000)[0]
                ref_k, ref_d = ref["keypoints"], ref["descriptors"]
        kp, de = pred["keypoints"][0], pred["descriptors"][0]
        assert kp.shape[0] == ref_k.shape[0] > 0
        order_ours = torch.argsort(kp[:, 1] * 1e4 + kp[:, 0])
        order_ref = torch.argsort(ref_k[:, 1] * 1e4 + ref_k[:, 0])
        torch.testing.assert_close(kp[order_ours], ref_k[order_ref].float() + 0.5, atol=1e-4, rtol=0)
        torch.testing.assert_close(de[order_ours], ref_d[order_ref].float(), atol=1e-4, rtol=0)

    def test_bfloat16_channels_last_outputs_float32_and_agree(self, name, astronaut):
        ext = get_extractor(name, max_keypoints=50)
        ext_bf = get_extractor(name, max_keypoints=50, dtype="bfloat16", channels_last=True)
        pred, pred_bf = ext({"image": astronaut}), ext_bf({"image": astronaut})
        check_contract(ext_bf, pred_bf, astronaut, max_keypoints=50)
        k, kb = pred["keypoints"][0], pred_bf["keypoints"][0]
        d = torch.cdist(kb, k)
        assert (d.min(1).values < 1.0).float().mean() > 0.6  # bf16 reorders near-ties, most keypoints stay
