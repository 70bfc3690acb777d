"""Tests of featlab's own SURF (featlab.extractors.surf): box filters, blobs at known scales, invariances,
repeatability against SIFT and the data contract."""
from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from featlab.errors import ConfigError
from featlab.extractors import available_extractors, build_extractor
from featlab.extractors import surf as S
from featlab.io.image import image_to_tensor, rgb_to_gray

NAMES = ("surf", "surf64", "surf-upright")


def _blob_image(size: int, centre, radius: float, kind: str, bright: bool = True) -> torch.Tensor:
    """(1, 1, size, size) image with a Gaussian blob (sigma = radius) or an anti-aliased disk at featlab ``centre``."""
    ys, xs = np.mgrid[0:size, 0:size] + 0.5  # featlab pixel centres
    if kind == "gauss":
        shape = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * radius ** 2))
    else:  # 4 x 4 supersampled disk
        shape = np.zeros((size, size))
        for dy in np.linspace(-0.375, 0.375, 4):
            for dx in np.linspace(-0.375, 0.375, 4):
                shape += ((xs + dx - centre[0]) ** 2 + (ys + dy - centre[1]) ** 2) <= radius ** 2
        shape /= 16
    img = 0.2 + 0.6 * shape if bright else 0.8 - 0.6 * shape
    return torch.from_numpy(img).float()[None, None]


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact pairwise distances (N, M) (torch.cdist's matmul path is only accurate to ~0.1 px here)."""
    return torch.linalg.norm(a[:, None] - b[None], dim=-1)


@pytest.fixture(scope="module")
def astronaut_gray() -> torch.Tensor:
    """A 257 x 257 gray crop of the astronaut (odd size: the octave sampling grids map onto themselves under
    rot90)."""
    return rgb_to_gray(image_to_tensor(skimage.data.astronaut()))[:, :, 100:357, 150:407].contiguous()


# ----------------------------------------------------------------------------------------------- building blocks
def test_filter_sizes_and_steps_are_the_papers():
    sizes, steps = S.filter_sizes(4, 4)
    assert sizes == [[9, 15, 21, 27], [15, 27, 39, 51], [27, 51, 75, 99], [51, 99, 147, 195]]
    assert steps == [1, 2, 4, 8]


def test_haar_responses_are_exact_box_sums():
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.random((40, 50))).float()
    sampler = S.IntegralSampler(img, pad=5)
    g = img.double()
    # integer box: the wavelet centred on the pixel corner (20, 10) with half side 3 covers pixels 17..22, 7..12
    dx, dy = sampler.haar(torch.tensor([[20.0, 10.0]]), torch.tensor([3.0]))
    right, left = g[7:13, 20:23].sum(), g[7:13, 17:20].sum()
    bottom, top = g[10:13, 17:23].sum(), g[7:10, 17:23].sum()
    assert dx.item() * 36 == pytest.approx((right - left).item(), abs=1e-9)
    assert dy.item() * 36 == pytest.approx((bottom - top).item(), abs=1e-9)
    # sub-pixel box: half side 0.5 at pixel centre (x, y) = (20.5, 10.5) -> half pixels of pixel (10, 20)
    dx, dy = sampler.haar(torch.tensor([[20.5, 10.5]]), torch.tensor([0.5]))
    assert dx.item() == pytest.approx(0.0, abs=1e-9) and dy.item() == pytest.approx(0.0, abs=1e-9)
    # boxes cutting pixels in half: x in [19.5, 20.5] minus [18.5, 19.5], y in [9.5, 11.5]
    dx, _ = sampler.haar(torch.tensor([[19.5, 10.5]]), torch.tensor([1.0]))
    rows = 0.5 * g[9] + g[10] + 0.5 * g[11]  # half of row 9, all of row 10, half of row 11
    expected = (0.5 * rows[19] + 0.5 * rows[20]) - (0.5 * rows[18] + 0.5 * rows[19])
    assert dx.item() * 4 == pytest.approx(expected.item(), abs=1e-9)


def test_replicate_padding_continues_the_border():
    img = torch.zeros(30, 30)
    img[:, 15:] = 1.0  # vertical step edge, constant along y
    sampler = S.IntegralSampler(img, pad=20)
    # beyond the top border the image is replicated: the edge continues, dy stays 0 and dx keeps its value
    dx_in, dy_in = sampler.haar(torch.tensor([[15.0, 15.0]]), torch.tensor([2.0]))
    dx_out, dy_out = sampler.haar(torch.tensor([[15.0, -8.0]]), torch.tensor([2.0]))
    assert dx_in.item() == pytest.approx(0.5) and dx_out.item() == pytest.approx(0.5)
    assert dy_in.item() == pytest.approx(0.0, abs=1e-12) and dy_out.item() == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------------------------------------- detector
@pytest.mark.parametrize("kind", ["gauss", "disk"])
def test_blobs_are_found_at_their_centre_with_scale_proportional_to_radius(kind):
    centre = (128.3, 125.6)  # off the pixel grid: needs the sub-pixel refinement
    scales = []
    for radius in (4.0, 8.0, 16.0):
        img = _blob_image(256, centre, radius, kind)
        kpts, scores, sc, signs = S.detect(img[0, 0], threshold=1e-4)
        best = scores.argmax()
        assert torch.linalg.norm(kpts[best] - torch.tensor(centre)).item() < 1.0, (kind, radius, kpts[best])
        assert signs[best].item() == -1  # bright blob: Dxx + Dyy < 0
        scales.append(sc[best].item())
    ratios = np.array(scales[1:]) / np.array(scales[:-1])
    assert np.all(np.abs(ratios - 2.0) < 0.3), (kind, scales)
    # with these box filters and area normalisation, det(H) of a Gaussian blob of sigma r peaks at s ~ 0.7 r
    # (a disk of radius r: s ~ 0.5 r, the Gaussian-equivalent sigma of a disk being r / sqrt(2))
    expected = 0.7 if kind == "gauss" else 0.5
    assert np.all(np.abs(np.array(scales) / np.array([4.0, 8.0, 16.0]) - expected) < 0.1), scales


@pytest.mark.parametrize("centre", [(64.5, 64.5), (64.0, 64.0), (63.5, 64.0)])
def test_symmetric_blob_lands_exactly_on_its_featlab_centre(centre):
    # centre of pixel (64, 64) is (64.5, 64.5); (64.0, 64.0) is the corner between four pixels, where the
    # quadratic fit of two equal neighbours must land exactly half way
    img = _blob_image(128, centre, 4.0, "gauss")
    kpts, scores, _, _ = S.detect(img[0, 0], threshold=1e-4)
    best = scores.argmax()
    assert torch.linalg.norm(kpts[best] - torch.tensor(centre)).item() < 0.02


def test_dark_blob_has_positive_laplacian_sign():
    img = _blob_image(128, (64.5, 64.5), 6.0, "gauss", bright=False)
    kpts, scores, _, signs = S.detect(img[0, 0], threshold=1e-4)
    best = scores.argmax()
    assert torch.linalg.norm(kpts[best] - torch.tensor([64.5, 64.5])).item() < 0.5
    assert signs[best].item() == 1


def test_keypoints_mirror_with_the_image(astronaut_gray):
    # the box filters are symmetric: detections on a flipped image are the flipped detections (W - x)
    ext = build_extractor("surf-upright", {"max_keypoints": -1})
    p = ext({"image": astronaut_gray})
    q = ext({"image": astronaut_gray.flip(-1)})
    w = astronaut_gray.shape[-1]
    k0 = p["keypoints"][0]
    k1 = q["keypoints"][0]
    mirrored = torch.stack([w - k0[:, 0], k0[:, 1]], -1)
    dist = _distances(mirrored, k1).min(1).values
    assert len(k0) == len(k1) > 50
    assert (dist < 1e-3).all()


# ----------------------------------------------------------------------------------------------- invariances
def test_upright_descriptors_are_invariant_to_affine_intensity_changes(astronaut_gray):
    gain, offset = 0.6, 0.15
    # det(H) scales with gain^2, so the same keypoints are found with the threshold scaled alike
    ext0 = build_extractor("surf-upright", {"hessian_threshold": 1e-3, "max_keypoints": -1})
    ext1 = build_extractor("surf-upright", {"hessian_threshold": 1e-3 * gain ** 2, "max_keypoints": -1})
    p0 = ext0({"image": astronaut_gray})
    p1 = ext1({"image": gain * astronaut_gray + offset})
    assert p0["keypoints"].shape[1] > 50
    assert p0["keypoints"].shape == p1["keypoints"].shape
    torch.testing.assert_close(p1["keypoints"], p0["keypoints"], atol=1e-3, rtol=0)
    torch.testing.assert_close(p1["keypoint_scores"], p0["keypoint_scores"] * gain ** 2, rtol=1e-4, atol=1e-9)
    assert (p1["descriptors"] - p0["descriptors"]).abs().max().item() < 1e-4


def test_oriented_descriptors_survive_a_90_degree_rotation(astronaut_gray):
    from featlab.matching import match_descriptors

    w = astronaut_gray.shape[-1]
    rotated = torch.from_numpy(np.ascontiguousarray(np.rot90(astronaut_gray[0, 0].numpy())))[None, None]

    def to_rotated(k):  # np.rot90 (counter-clockwise on screen) maps featlab (x, y) to (y, W - x)
        return torch.stack([k[:, 1], w - k[:, 0]], -1)

    results = {}
    for name in ("surf", "surf-upright"):
        ext = build_extractor(name, {"max_keypoints": -1})
        p, q = ext({"image": astronaut_gray}), ext({"image": rotated})
        k0, k1 = to_rotated(p["keypoints"][0]), q["keypoints"][0]
        dist, nn = _distances(k0, k1).min(1)
        corresponding = dist < 0.5
        assert corresponding.float().mean() > 0.9  # the detector is rotation-covariant for 90 degrees
        matches, _ = match_descriptors(p["descriptors"][0], q["descriptors"][0], mutual=True)
        valid = matches >= 0
        err = torch.linalg.norm(k0[valid] - k1[matches[valid]], dim=-1)
        results[name] = (err < 1.0).sum().item() / len(k0)
        if name == "surf":
            # the dominant orientation turns with the image (y down: rot90 subtracts 90 degrees)
            diff = (p["oris"][0][corresponding] - q["oris"][0][nn[corresponding]] - 90 + 180) % 360 - 180
            assert diff.abs().median().item() < 1.0
            d = torch.linalg.norm(p["descriptors"][0][corresponding] - q["descriptors"][0][nn[corresponding]], dim=-1)
            assert d.median().item() < 0.05
    assert results["surf"] > 0.9, results
    assert results["surf-upright"] < 0.3, results  # without orientation, a 90 degree turn breaks matching


def test_repeatability_under_a_homography_is_comparable_to_sift():
    from featlab.geometry.homography import warp_image_homography, warp_points_homography
    from featlab.pixels import inside_image

    image = image_to_tensor(skimage.data.astronaut())[:, :, ::2, ::2].contiguous()  # 256 x 256
    h, w = image.shape[-2:]
    centre = np.array([w / 2, h / 2])
    angle = np.deg2rad(15)
    A = 1.15 * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    H = np.eye(3)
    H[:2, :2], H[:2, 2], H[2, :2] = A, centre - A @ centre, [2e-4, -1e-4]
    warped = warp_image_homography(image, H, (h, w))

    def repeatability(k0, k1, threshold=3.0):
        k0w = warp_points_homography(k0.astype(np.float64), H)
        k1w = warp_points_homography(k1.astype(np.float64), np.linalg.inv(H))
        a, b = k0w[inside_image(k0w, (h, w))], k1[inside_image(k1w, (h, w))]
        d = np.linalg.norm(a[:, None] - b[None], axis=-1)
        return ((d.min(1) <= threshold).sum() + (d.min(0) <= threshold).sum()) / (len(a) + len(b))

    reps = {}
    for name in ("surf", "sift"):
        ext = build_extractor(name, {"max_keypoints": 1000})
        k0 = ext({"image": image})["keypoints"][0].numpy()
        k1 = ext({"image": warped})["keypoints"][0].numpy()
        reps[name] = repeatability(k0, k1)
    assert reps["surf"] >= 0.5 * reps["sift"], reps
    assert reps["surf"] > 0.4, reps


# ----------------------------------------------------------------------------------------------- contract
def test_registered():
    names = available_extractors()
    for name in NAMES:
        assert name in names


@pytest.mark.parametrize("name", NAMES)
def test_output_contract(name, astronaut_gray):
    ext = build_extractor(name, {"max_keypoints": 100})
    rgb = image_to_tensor(skimage.data.astronaut())[:, :, 100:357, 150:407]
    pred = ext({"image": rgb})
    dim = 64 if name == "surf64" else 128
    assert ext.descriptor_dim == dim
    n = pred["keypoints"].shape[1]
    assert 0 < n <= 100
    assert pred["keypoints"].shape == (1, n, 2) and pred["keypoints"].dtype == torch.float32
    assert pred["keypoint_scores"].shape == (1, n) and pred["keypoint_scores"].dtype == torch.float32
    assert pred["descriptors"].shape == (1, n, dim) and pred["descriptors"].dtype == torch.float32
    assert pred["scales"].shape == (1, n) and pred["oris"].shape == (1, n)
    assert pred["laplacian_signs"].shape == (1, n) and set(pred["laplacian_signs"].unique().tolist()) <= {-1, 1}
    assert pred["image_size"].tolist() == [[257, 257]]
    torch.testing.assert_close(pred["descriptors"].norm(dim=-1), torch.ones(1, n))
    scores = pred["keypoint_scores"][0]
    assert torch.all(scores[:-1] >= scores[1:]) and torch.all(scores > 0)
    k = pred["keypoints"][0]
    assert torch.all((k >= 0) & (k <= 257))
    assert torch.all((pred["oris"] >= 0) & (pred["oris"] < 360))
    if name == "surf-upright":
        assert torch.all(pred["oris"] == 0)
    assert torch.all(pred["scales"] >= 1.2)
    # RGB and its gray version give the same features
    gray_pred = ext({"image": astronaut_gray})
    torch.testing.assert_close(gray_pred["keypoints"], pred["keypoints"])
    torch.testing.assert_close(gray_pred["descriptors"], pred["descriptors"])


def test_max_keypoints_keeps_the_strongest(astronaut_gray):
    all_ = build_extractor("surf", {"max_keypoints": -1})({"image": astronaut_gray})
    top = build_extractor("surf", {"max_keypoints": 20})({"image": astronaut_gray})
    assert all_["keypoints"].shape[1] > 20 and top["keypoints"].shape[1] == 20
    torch.testing.assert_close(top["keypoint_scores"][0], all_["keypoint_scores"][0, :20])
    torch.testing.assert_close(top["descriptors"][0], all_["descriptors"][0, :20])


def test_batch_is_padded_and_masked(astronaut_gray):
    flat = torch.full_like(astronaut_gray, 0.5)
    pred = build_extractor("surf", {"max_keypoints": 50})({"image": torch.cat([astronaut_gray, flat])})
    assert pred["keypoints"].shape == (2, 50, 2)
    assert pred["keypoint_masks"][0].all() and not pred["keypoint_masks"][1].any()


def test_constant_image_gives_no_keypoints():
    for name in NAMES:
        ext = build_extractor(name, {"hessian_threshold": 0.0})
        pred = ext({"image": torch.full((1, 3, 120, 160), 0.3)})
        dim = ext.descriptor_dim
        assert pred["keypoints"].shape == (1, 0, 2)
        assert pred["descriptors"].shape == (1, 0, dim)
        assert pred["scales"].shape == (1, 0) and pred["oris"].shape == (1, 0)


def test_image_smaller_than_the_smallest_filter_gives_no_keypoints():
    pred = build_extractor("surf")({"image": torch.rand(1, 1, 12, 12)})
    assert pred["keypoints"].shape == (1, 0, 2)


@pytest.mark.parametrize("conf", [{"n_layers": 2}, {"n_octaves": 0}, {"hessian_threshold": -1.0},
                                  {"hessian_treshold": 1e-3}])
def test_bad_conf_raises_config_error(conf):
    with pytest.raises(ConfigError):
        build_extractor("surf", conf)
