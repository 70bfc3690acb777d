"""Residual descriptor v2: oriented patches (pixel convention, equivariance), PatchNet, fusion, loss, extractor,
training end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featlab.errors import ConfigError, InputError
from featlab.extractors import build_extractor
from featlab.extractors.patch_residual import (PatchResidualNet, extract_patches, fused_squared_distances,
                                               gaussian_pyramid, load_patch_residual_weights,
                                               patch_sample_points, save_patch_residual_weights)
from featlab.io.image import image_to_tensor, rgb_to_gray
from featlab.losses.hardnet import hardest_in_batch_loss, infonce_loss
from featlab.matching import match_descriptors
from featlab.nn.patchnet import PatchNet

SIZE = 320


@pytest.fixture(scope="module")
def photo():
    import cv2
    from skimage.data import astronaut

    return np.ascontiguousarray(cv2.resize(astronaut(), (SIZE, SIZE), interpolation=cv2.INTER_AREA))


@pytest.fixture(scope="module")
def frames(photo):
    """RootSIFT keypoints of the photo with their frames."""
    pred = build_extractor("rootsift", {"max_keypoints": 300})({"image": image_to_tensor(photo)})
    return pred["keypoints"][0], pred["scales"][0], pred["oris"][0]


def _similarity(theta: float, scale: float, size: int) -> np.ndarray:
    """Rotation by theta (deg, x towards y) and scaling about the photo centre, landing at the centre of a
    size x size image (featlab pixels)."""
    t = np.deg2rad(theta)
    R = scale * np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])
    H = np.eye(3)
    H[:2, :2] = R
    H[:2, 2] = np.array([size / 2.0] * 2) - R @ np.array([SIZE / 2.0] * 2)
    return H


@pytest.fixture(scope="module")
def calibrated_net(photo, frames):
    """An untrained PatchResidualNet whose BatchNorm statistics come from the photo's patches: with the default
    statistics (mean 0, var 1) an untrained net maps every patch to nearly one vector (cosine ~0.99 between
    unrelated patches), which would make any invariance test pass."""
    torch.manual_seed(0)
    net = PatchResidualNet()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass sets the statistics
    with torch.no_grad():
        net.train()
        net.h(net.patches(rgb_to_gray(image_to_tensor(photo)), *frames))
    return net.eval()


# ----------------------------------------------------------------------------------------------- patches
class TestPatchGeometry:
    def test_sample_points_hand_checked(self):
        kp = torch.tensor([[10.0, 20.0], [5.0, 5.0]])
        pts = patch_sample_points(kp, torch.tensor([2.0, 4.0]), torch.tensor([0.0, 90.0]), 4, 2.0).view(2, 4, 4, 2)
        # side 4 px, 4 samples: 1 px apart, the first 1.5 px before the centre along each axis
        torch.testing.assert_close(pts[0, 0, 0], torch.tensor([8.5, 18.5]))
        torch.testing.assert_close(pts[0, 0, 1], torch.tensor([9.5, 18.5]))  # columns along x
        torch.testing.assert_close(pts[0, 1, 0], torch.tensor([8.5, 19.5]))  # rows along y
        # kp.angle 90: columns run along +y (OpenCV's angle, x towards y), rows along -x; side 8, step 2
        torch.testing.assert_close(pts[1, 0, 0], torch.tensor([8.0, 2.0]))
        torch.testing.assert_close(pts[1, 0, 1], torch.tensor([8.0, 4.0]))
        torch.testing.assert_close(pts[1, 1, 0], torch.tensor([6.0, 2.0]))
        torch.testing.assert_close(pts.mean((1, 2)), kp)  # centred on the keypoint

    def test_pyramid_levels_sit_on_featlab_pixel_centres(self):
        # a linear ramp is kept by any symmetric blur: level l pixel (i, j) must hold the ramp at its centre
        # ((j + 0.5) 2^l, (i + 0.5) 2^l) in image pixels (away from the replicated border)
        h, w = 70, 90  # not multiples of 2^(levels-1): padded inside
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        ramp = (0.01 * xs + 0.02 * ys)[None, None].double()
        maps, (hp, wp) = gaussian_pyramid(ramp, 4)
        assert (hp, wp) == (72, 96) and [tuple(m.shape[-2:]) for m in maps] == [(72, 96), (36, 48), (18, 24), (9, 12)]
        for lv, m in enumerate(maps[1:], 1):
            s = 2 ** lv
            cy, cx = torch.meshgrid((torch.arange(m.shape[-2]) + 0.5) * s, (torch.arange(m.shape[-1]) + 0.5) * s,
                                    indexing="ij")
            inner = (cx > 3 * s) & (cy > 3 * s) & (cx < w - 3 * s) & (cy < h - 3 * s)
            assert inner.sum() > 0
            torch.testing.assert_close(m[0, 0][inner], (0.01 * cx + 0.02 * cy)[inner].double())

    def test_patches_read_the_image_at_the_sample_points(self):
        h, w = 64, 80
        ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
        ramp = (0.01 * xs + 0.02 * ys)[None, None]
        kp = torch.tensor([[40.3, 30.7], [35.0, 33.0]])
        size, angle = torch.tensor([3.0, 1.5]), torch.tensor([33.0, 250.0])
        patches = extract_patches(ramp, kp, size, angle, patch_size=8, window=2.0, levels=3)
        pts = patch_sample_points(kp, size, angle, 8, 2.0)
        torch.testing.assert_close(patches.view(2, -1), 0.01 * pts[..., 0] + 0.02 * pts[..., 1], atol=1e-5, rtol=0)

    def test_large_keypoints_read_a_coarser_level(self):
        # a fine checkerboard (period 2 px) averages to grey at the scale of a large keypoint: a patch sampled
        # from the full-resolution image instead would alias into stripes
        board = ((torch.arange(128)[:, None] + torch.arange(128)[None]) % 2).float()[None, None]
        patch = extract_patches(board, torch.tensor([[64.0, 64.0]]), torch.tensor([8.0]), torch.tensor([10.0]),
                                patch_size=32, window=7.5)
        assert patch.std() < 0.05 and abs(patch.mean() - 0.5) < 0.05
        aliased = extract_patches(board, torch.tensor([[64.0, 64.0]]), torch.tensor([8.0]), torch.tensor([10.0]),
                                  patch_size=32, window=7.5, levels=1)
        assert aliased.std() > 0.1  # measured 0.17 (0.5 is a full-contrast board)

    def test_no_keypoints(self):
        out = extract_patches(torch.rand(1, 1, 32, 32), torch.zeros(0, 2), torch.zeros(0), torch.zeros(0))
        assert out.shape == (0, 1, 32, 32)


# ---------------------------------------------------------------------------------------------- invariance
def _views(photo, frames, net, theta, scale, rotate_frames=True):
    from featlab.datasets.synthetic import warp_image
    from featlab.geometry.homography import warp_points_homography

    size = int(round(SIZE * max(scale, 1.0)))
    H = _similarity(theta, scale, size)
    image1 = warp_image(photo, H, (size, size))
    kp0, s0, a0 = frames
    kp1 = torch.from_numpy(np.asarray(warp_points_homography(kp0.double().numpy(), H))).float()
    # keypoints whose whole patch lies inside the photo (both views then see the same content)
    half = 7.5 * s0 * 0.71
    inside = ((kp0 - half[:, None]) > 0).all(1) & ((kp0 + half[:, None]) < SIZE).all(1)
    assert inside.sum() > 100
    with torch.no_grad():
        d0 = net.h(net.patches(rgb_to_gray(image_to_tensor(photo)), kp0[inside], s0[inside], a0[inside]))
        a1 = a0 + theta if rotate_frames else a0
        d1 = net.h(net.patches(rgb_to_gray(image_to_tensor(image1)), kp1[inside], s0[inside] * scale,
                               a1[inside]))
    return d0, d1


class TestInvariance:
    @pytest.mark.parametrize("theta,scale", [(90.0, 1.0), (30.0, 1.0), (0.0, 1.5), (30.0, 1.5)])
    def test_h_at_ground_truth_frames_is_nearly_the_same(self, photo, frames, calibrated_net, theta, scale):
        d0, d1 = _views(photo, frames, calibrated_net, theta, scale)
        cos = (d0 * d1).sum(1)
        assert cos.median() > 0.9, cos.median()  # measured 0.98-1.00
        assert (d0 * d1.roll(1, 0)).sum(1).median() < 0.6  # while unrelated patches stay apart (measured ~0.38)
        nn_correct = ((d0 @ d1.T).argmax(1) == torch.arange(len(d0))).float().mean()
        assert nn_correct > 0.85, nn_correct  # measured 0.93-1.0 (misses: SIFT's copies of a location)

    def test_frames_without_the_rotation_do_not_match(self, photo, frames, calibrated_net):
        # the same check fails when the patch ignores the keypoint's orientation: the test above has teeth
        d0, d1 = _views(photo, frames, calibrated_net, 30.0, 1.0, rotate_frames=False)
        assert (d0 * d1).sum(1).median() < 0.7  # measured 0.46


# ------------------------------------------------------------------------------------------------- network
class TestNetwork:
    def test_patchnet_shapes_unit_norm_and_contrast_invariance(self):
        torch.manual_seed(0)
        net = PatchNet().eval()
        x = torch.rand(7, 1, 32, 32)
        d = net(x)
        assert d.shape == (7, 128) and d.dtype == torch.float32
        torch.testing.assert_close(d.norm(dim=1), torch.ones(7))
        # per-patch normalisation (up to its eps, 1e-3 of the std)
        torch.testing.assert_close(net(0.5 * x + 0.2), d, atol=2e-3, rtol=0)
        with pytest.raises(ValueError, match="patches must be"):
            net(torch.rand(2, 1, 16, 16))

    def test_folded_and_channels_last_give_the_same_descriptors(self):
        from featlab.nn import fold_batchnorm

        torch.manual_seed(0)
        net = PatchNet()
        net.train()
        net(torch.rand(64, 1, 32, 32))  # non-trivial running statistics
        net.eval()
        x = torch.rand(5, 1, 32, 32)
        ref = net(x)
        folded = fold_batchnorm(net).set_channels_last(True)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
        torch.testing.assert_close(folded(x), ref, atol=1e-5, rtol=0)

    def test_bad_config(self):
        with pytest.raises(ConfigError, match="multiple of 8"):
            PatchResidualNet({"patch": {"size": 30}})
        with pytest.raises(ConfigError, match="window"):
            PatchResidualNet({"patch": {"window": 0.0}})
        with pytest.raises(ConfigError, match="unknown config key"):
            PatchResidualNet({"patch": {"sise": 32}})


class TestFusion:
    def test_fused_distance_formula(self):
        torch.manual_seed(0)
        net = PatchResidualNet()
        net.set_fusion(0.6, 0.8)
        g0, g1, h0, h1 = (F.normalize(torch.randn(5, 128), dim=1) for _ in range(4))
        f0, f1 = net.fuse(g0, h0), net.fuse(g1, h1)
        torch.testing.assert_close(f0.norm(dim=1), torch.ones(5))
        dg2, dh2 = torch.cdist(g0, g1) ** 2, torch.cdist(h0, h1) ** 2
        torch.testing.assert_close(torch.cdist(f0, f1) ** 2, fused_squared_distances(dg2, dh2, 0.6, 0.8),
                                   atol=1e-5, rtol=0)
        with pytest.raises(ValueError):
            net.set_fusion(-1.0, 1.0)

    @pytest.mark.parametrize("selector", [False, True])
    def test_b_zero_matches_exactly_as_g(self, photo, weights_file, plain_weights_file, selector):
        """b = 0 and no selector (or a selector whose learned logit is constant: its rank is g's log response) is
        RootSIFT, keypoint for keypoint and match for match."""
        from featlab.datasets.synthetic import warp_image

        image1 = warp_image(photo, _similarity(25.0, 0.9, SIZE), (SIZE, SIZE))
        g = build_extractor("rootsift", {"max_keypoints": 200})
        path = weights_file if selector else plain_weights_file
        fused = build_extractor("residual-sift", {"weights": str(path), "max_keypoints": 200})
        if selector:
            torch.nn.init.zeros_(fused.net.selector.mlp[-1].weight)
        assert fused.net.fusion.tolist() == [1.0, 0.0]  # an unfitted model
        preds = {}
        for name, ext in (("g", g), ("fused", fused)):
            p0, p1 = (ext({"image": image_to_tensor(im)}) for im in (photo, image1))
            preds[name] = (p0, p1, match_descriptors(p0["descriptors"][0], p1["descriptors"][0])[0])
        torch.testing.assert_close(preds["fused"][0]["keypoints"], preds["g"][0]["keypoints"])
        assert torch.equal(preds["fused"][2], preds["g"][2])
        assert (preds["g"][2] >= 0).sum() > 50
        # with b > 0 the learned part changes the matching (so the equality above is not vacuous)
        fused.net.set_fusion(0.5, 0.87)
        d0, d1 = (fused({"image": image_to_tensor(im)})["descriptors"][0] for im in (photo, image1))
        assert not torch.equal(match_descriptors(d0, d1)[0], preds["g"][2])


def test_fusion_fit_never_trades_correct_matches_for_precision():
    from featlab.training.patch_residual import fit_fusion

    # columns: b = 0 (g), a mix, h alone. h alone has the best MMA but on half the matches: it loses
    mma = np.array([[0.80, 0.84, 0.95], [0.70, 0.74, 0.90]])
    matches = np.array([[100, 100, 40], [200, 200, 90]])
    assert fit_fusion(mma, matches) == 1
    assert fit_fusion(mma, matches, min_correct=0.0) == 2  # plain MMA maximisation
    assert fit_fusion(np.full((2, 3), 0.5), matches) == 0  # ties go to g
    assert fit_fusion(mma[:, [0, 2]], matches[:, [0, 2]]) == 0  # nothing qualifies: g


# ---------------------------------------------------------------------------------------------------- loss
class TestLoss:
    def test_lower_for_matching_than_for_shuffled_pairs(self):
        torch.manual_seed(0)
        a = F.normalize(torch.randn(64, 128), dim=1)
        p = F.normalize(a + 0.1 * torch.randn(64, 128), dim=1)
        loss, metrics = hardest_in_batch_loss(a, p)
        shuffled, m_shuffled = hardest_in_batch_loss(a, p[torch.randperm(64)])
        assert loss < 0.5 * shuffled
        assert metrics["mutual_nn_accuracy"] == 1.0 and m_shuffled["mutual_nn_accuracy"] < 0.2
        # hand-checked: identical pairs, negatives orthogonal (distance sqrt 2): hinge 1 + 0 - 1.414 < 0
        eye = torch.eye(4, 8)
        zero, _ = hardest_in_batch_loss(eye, eye)
        assert float(zero) == 0.0

    def test_excluded_negatives_are_ignored(self):
        a = torch.eye(3, 8)
        p = a.clone()
        p[1] = a[0]  # row 1's positive is a copy of row 0's: the hardest negative of pair 0 at distance 0
        hard, _ = hardest_in_batch_loss(a, p)
        exclude = torch.zeros(3, 3, dtype=torch.bool)
        exclude[0, 1] = exclude[1, 0] = True
        eased, _ = hardest_in_batch_loss(a, p, exclude=exclude)
        assert hard > eased

    def test_extra_candidates_compete_in_their_direction_unless_excluded(self):
        a = torch.eye(3, 8)
        p = a.clone()
        base, m_base = hardest_in_batch_loss(a, p)
        assert float(base) == 0.0 and m_base["mutual_nn_accuracy"] == 1.0
        extra = a[:1].clone()  # a distractor identical to pair 0's descriptors
        # in image 1: it ties with p_0 as a_0's nearest (first hinge of pair 0 = margin), the second is untouched
        loss1, m1 = hardest_in_batch_loss(a, p, extra1=extra)
        loss0, m0 = hardest_in_batch_loss(a, p, extra0=extra)
        assert float(loss1) == pytest.approx(0.5 / 3, abs=1e-4) and float(loss0) == pytest.approx(0.5 / 3, abs=1e-4)
        assert m1["mutual_nn_accuracy"] == pytest.approx(2 / 3) and m0["mutual_nn_accuracy"] == pytest.approx(2 / 3)
        excl = torch.zeros(3, 1, dtype=torch.bool)
        excl[0, 0] = True  # e.g. the distractor lies within negative_radius of pair 0's keypoint
        eased, _ = hardest_in_batch_loss(a, p, extra1=extra, exclude_extra1=excl)
        assert float(eased) == 0.0

    def test_infonce_ranks_against_all_candidates(self):
        torch.manual_seed(0)
        a = F.normalize(torch.randn(32, 16), dim=1)
        p = F.normalize(a + 0.05 * torch.randn(32, 16), dim=1)
        loss, metrics = infonce_loss(a, p)
        shuffled, _ = infonce_loss(a, p[torch.randperm(32)])
        assert loss < 0.2 * shuffled and metrics["mutual_nn_accuracy"] == 1.0
        # a distractor copying a_0 in image 1 beats p_0 as a_0's neighbour: the loss rises, unless excluded
        with_extra, m_extra = infonce_loss(a, p, extra1=a[:1])
        excl = torch.zeros(32, 1, dtype=torch.bool)
        excl[0, 0] = True
        eased, _ = infonce_loss(a, p, extra1=a[:1], exclude_extra1=excl)
        assert with_extra > loss and m_extra["mutual_nn_accuracy"] == pytest.approx(31 / 32)
        assert float(eased) == pytest.approx(float(loss), abs=1e-5)  # float32 log-sum-exp of logits ~20

    def test_a_few_steps_lower_it(self, photo, frames):
        # positives: the photo's patches against those of a rotated, scaled view at ground-truth frames
        from featlab.datasets.synthetic import warp_image
        from featlab.geometry.homography import warp_points_homography

        H = _similarity(40.0, 1.2, SIZE)
        image1 = warp_image(photo, H, (SIZE, SIZE))
        kp0, s0, a0 = frames
        kp1 = torch.from_numpy(np.asarray(warp_points_homography(kp0.double().numpy(), H))).float()
        ok = torch.nonzero(((kp1 > 10) & (kp1 < SIZE - 10)).all(1))[:96, 0]
        net = PatchResidualNet()
        p0 = net.patches(rgb_to_gray(image_to_tensor(photo)), kp0[ok], s0[ok], a0[ok])
        p1 = net.patches(rgb_to_gray(image_to_tensor(image1)), kp1[ok], s0[ok] * 1.2, a0[ok] + 40.0)
        torch.manual_seed(0)
        h = PatchNet()
        opt = torch.optim.Adam(h.parameters(), lr=1e-3)
        losses = []
        for _ in range(6):
            d = h(torch.cat([p0, p1]))
            loss, _ = hardest_in_batch_loss(d[: len(p0)], d[len(p0):])
            opt.zero_grad()
            loss.backward()
            assert all(torch.isfinite(q.grad).all() for q in h.parameters() if q.grad is not None)
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.8 * losses[0], losses


# ----------------------------------------------------------------------------------------------- extractor
@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "v2.safetensors"
    return save_patch_residual_weights(PatchResidualNet({"selector_hidden": 64}), path,
                                       {"name": "rootsift", "conf": {}})


@pytest.fixture(scope="module")
def plain_weights_file(tmp_path_factory):
    """Weights without a keypoint selector (g's own top-k)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "v2-plain.safetensors"
    return save_patch_residual_weights(PatchResidualNet({"selector_hidden": 0}), path, {"name": "rootsift", "conf": {}})


class TestExtractor:
    def test_data_contract(self, photo, weights_file):
        ext = build_extractor("residual-sift", {"weights": str(weights_file), "max_keypoints": 150})
        assert ext.descriptor_dim == 128  # unfitted (b = 0): g's descriptor, h not computed
        ext.net.set_fusion(0.6, 0.8)
        flat = np.full_like(photo, 128)  # few or no keypoints: padded in the batch
        image = torch.cat([image_to_tensor(photo), image_to_tensor(flat)])
        pred = ext({"image": image})
        b, n = pred["keypoints"].shape[:2]
        assert b == 2 and n == 150 and ext.descriptor_dim == 256
        assert pred["descriptors"].shape == (2, n, 256) and pred["descriptors"].dtype == torch.float32
        assert pred["keypoint_scores"].shape == (2, n) and pred["image_size"].tolist() == [[SIZE, SIZE]] * 2
        masks = pred["keypoint_masks"]
        torch.testing.assert_close(pred["descriptors"][masks].norm(dim=-1), torch.ones(int(masks.sum())))
        assert (pred["descriptors"][~masks] == 0).all()
        # the first image alone gives the same descriptors
        alone = ext({"image": image[:1]})
        torch.testing.assert_close(alone["descriptors"][0], pred["descriptors"][0][masks[0]], atol=1e-5, rtol=0)
        # grey input is accepted
        assert ext({"image": image[:1].mean(1, keepdim=True)})["descriptors"].shape[-1] == 256

    def test_missing_default_weights_say_how_to_train(self, tmp_path, monkeypatch):
        import featlab.extractors.patch_residual as module

        monkeypatch.setattr(module, "WEIGHTS_DIR", tmp_path)  # a checkout without the shipped file
        with pytest.raises(InputError, match="train them with `bash scripts/reproduce_models.sh residual-sift`"):
            build_extractor("residual-sift")

    def test_weights_roundtrip_and_errors(self, weights_file, tmp_path):
        net, meta = load_patch_residual_weights(weights_file)
        assert meta["handcrafted"]["name"] == "rootsift" and meta["fusion"] == [1.0, 0.0]
        assert net.fusion.tolist() == [1.0, 0.0]
        with pytest.raises(InputError, match="not found"):
            build_extractor("residual-sift", {"weights": str(tmp_path / "missing.safetensors")})
        with pytest.raises(ConfigError, match="trained with handcrafted='rootsift'"):
            build_extractor("residual-sift", {"weights": str(weights_file), "handcrafted": "sift"})
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(b"junk")
        bad.with_suffix(".json").write_text(json.dumps({"format": "featlab-residual/1", "model": {}}))
        with pytest.raises(InputError, match="not a featlab sidecar"):
            build_extractor("residual-sift", {"weights": str(bad)})


# ------------------------------------------------------------------------------------------------ training
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        cv2.imwrite(str(folder / f"{name}.png"), cv2.resize(getattr(data, name)(), (192, 144))[..., ::-1])
    return folder


TINY = ["data.image_size=[96,128]", "handcrafted.max_keypoints=100", "data.pairs_per_step=2",
        "data.max_positives=16", "val.num_pairs=1", "val.presets=[moderate]", "val.image_size=[96,128]",
        "val.max_keypoints=100", "val.fusion_steps=3", "train.progress=false", "train.log_every=1",
        "train.num_threads=null", "train.val_every=2", "train.checkpoint_every=1",
        "loss.fusion_angle=45", "data.max_distractors=8"]


def test_training_runs_checkpoints_resumes_and_exports(photos, tmp_path, monkeypatch, capsys):
    from featlab.cli import main
    from featlab.io import weights as weights_io
    from featlab.training.loop import read_metrics

    monkeypatch.setattr(weights_io, "SHIPPED_WEIGHTS_DIR", tmp_path / "weights")
    run = tmp_path / "run"
    base = ["train", "residual-v2", "--photos", str(photos), "--val-photos", str(photos), "-o", str(run)]
    assert main(base + [*TINY, "train.max_steps=2"]) == 0
    assert (run / "checkpoints" / "last.pt").is_file()
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "val"] == [0, 2]
    val = records[0]
    assert {"val/mma@3", "val/g_mma@3", "val/sel_mma@3", "val/h_mma@3", "val/fusion_b", "val/mma@3/moderate",
            "val/g_correct@3", "val/sel_correct@3"} <= set(val)
    # the fitted fusion is at least as good as g's descriptor alone at the selected keypoints (b = 0 is on the grid)
    assert all(r["val/mma@3"] >= r["val/sel_mma@3"] for r in records if r["kind"] == "val")
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["selector_bce"]) for r in records if r["kind"] == "train")
    side = json.loads((run / "best.json").read_text())
    assert side["handcrafted"]["name"] == "rootsift" and len(side["fusion"]) == 2
    capsys.readouterr()
    # resume: continues from step 2
    assert main(["train", "residual-v2", "-o", str(run), "--resume", "train.max_steps=3", "--export",
                 "residual-sift"]) == 0
    assert max(r["step"] for r in read_metrics(run / "metrics.jsonl")) == 3
    assert json.loads(capsys.readouterr().out.splitlines()[0])["step"] == 3
    exported = tmp_path / "weights" / "residual-sift.safetensors"
    assert exported.is_file()
    ext = build_extractor("residual-sift", {"weights": str(exported), "max_keypoints": 40})
    assert ext({"image": torch.rand(1, 3, 64, 80)})["descriptors"].shape[-1] == (256 if side["fusion"][1] > 0 else 128)


def test_distractors_are_non_positives_g_confusions_first():
    from featlab.training.patch_residual import distractors

    rng = np.random.default_rng(0)
    desc = np.eye(6, 8)  # keypoints 0..5 of an image, orthogonal descriptors
    partner = np.eye(6, 8)[[4, 1]]  # partners of positives 0 and 1: g confuses the first with keypoint 4
    out = distractors(desc, partner, np.array([0, 1]), 1, rng)
    assert out.tolist() == [4]  # the confusion first; keypoint 1 (a positive, g's right answer) never
    out = distractors(desc, partner, np.array([0, 1]), 10, rng)
    assert out.tolist() == [2, 3, 4, 5]
    assert distractors(desc, partner, np.array([0, 1]), 0, rng).tolist() == []


def test_training_warps_reach_180_degrees_and_both_zoom_directions(photos):
    from featlab.conf import load_yaml_with_overrides, resolve_conf
    from featlab.geometry.homography import local_rotation_scale
    from featlab.rng import role_rng
    from featlab.training import patch_residual as tp

    conf = resolve_conf(tp.default_conf, load_yaml_with_overrides(tp.DEFAULT_CONFIG, [
        f"data.photos=[{photos}]", "val.photos=null", *TINY]))
    stream = tp.PatchPairStream([photos / "astronaut.png"], conf, seed=0)
    photo = np.zeros((144, 192, 3), np.uint8)
    angles, scales = [], []
    for i in range(60):
        _, _, H = stream.warped_pair(role_rng(0, "train", i), photo)
        angle, scale = local_rotation_scale(H, (64.0, 48.0))
        angles.append(abs(angle))
        scales.append(scale)
    assert max(angles) > 120 and min(scales) < 0.8 and max(scales) > 1.3
    item = stream[0]
    assert item["patches0"].shape == (16, 1, 32, 32) and item["masks"].dtype == bool


class TestSelector:
    def test_rank_follows_the_learned_logit(self, photo, weights_file):
        """A selector that scores detections by their distance to the image border keeps the central ones, where g
        (by response) keeps others: the extractor's keypoints are the selector's."""
        from featlab.nn.selector import NUM_GEOMETRY_FEATURES

        ext = build_extractor("residual-sift", {"weights": str(weights_file), "max_keypoints": 40})
        sel = ext.net.selector
        with torch.no_grad():  # identity normalisation; logit = 100 * border feature
            sel.norm.running_mean.zero_()
            sel.norm.running_var.fill_(1.0)
            for p in sel.mlp.parameters():
                p.zero_()
            sel.mlp[0].weight[0, NUM_GEOMETRY_FEATURES - 1] = 1.0
            sel.mlp[-1].weight[0, 0] = 100.0
        g = build_extractor("rootsift", {"max_keypoints": -1})
        all_kp = g({"image": image_to_tensor(photo)})["keypoints"][0]
        kp = ext({"image": image_to_tensor(photo)})["keypoints"][0]
        border = lambda k: torch.stack([k[:, 0], k[:, 1], SIZE - k[:, 0], SIZE - k[:, 1]], -1).amin(-1)
        assert len(kp) == 40 and len(all_kp) > 80
        assert border(kp).min() >= 0.2 * SIZE - 1e-3  # every kept detection is away from the border
        assert (border(all_kp) < 0.2 * SIZE).sum() > 20  # ... while g has many near it

    def test_loss_ignores_padding_and_learns_a_separable_label(self):
        from featlab.losses.selector import selector_loss
        from featlab.nn.selector import KeypointSelector

        torch.manual_seed(0)
        feats = torch.randn(2, 50, 131)
        labels = (feats[..., 5] > 0).float()
        masks = torch.ones(2, 50, dtype=torch.bool)
        masks[1, 30:] = False
        sel = KeypointSelector(128, 16)
        logits = torch.zeros(2, 50)
        logits[masks] = sel(feats[masks])
        base, _ = selector_loss({"selector_logits": logits}, {"selector_labels": labels, "selector_masks": masks})
        noisy = logits.clone()
        noisy[~masks] = 1e3  # padding rows do not count
        same, _ = selector_loss({"selector_logits": noisy}, {"selector_labels": labels, "selector_masks": masks})
        assert torch.allclose(base, same)
        opt = torch.optim.Adam(sel.parameters(), 1e-2)
        for _ in range(60):
            out = torch.zeros(2, 50)
            out[masks] = sel(feats[masks])
            loss, m = selector_loss({"selector_logits": out}, {"selector_labels": labels, "selector_masks": masks})
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.5 * base.item() and float(m["selector_accuracy"]) > 0.9
