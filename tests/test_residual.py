"""Residual descriptor: network variants, triplet loss, ground-truth correspondences, weights, extractor, ONNX."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from featlab.errors import ConfigError, InputError
from featlab.extractors import build_extractor
from featlab.extractors.residual import (ResidualDescriptorNet, export_onnx, load_residual_weights,
                                         OnnxResidualRunner, save_residual_weights, train_hint)
from featlab.losses.triplet import TripletLoss, invert_matches, pairwise_distances, triplet_loss
from featlab.nn import TrimmedSuperPoint
from featlab.training.residual import homography_correspondences

VARIANTS = [({}, 256), ({"fusion": "sum"}, 128), ({"fusion": "product"}, 128), ({"fusion": "none"}, 256),
            ({"backbone": "small"}, 256), ({"fusion": "none", "batchnorm": True}, 256)]


def _inputs(b=2, n=20, h=61, w=83, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(b, 3, h, w, generator=g)
    kpts = torch.rand(b, n, 2, generator=g) * torch.tensor([w, h])
    g_desc = F.normalize(torch.rand(b, n, 128, generator=g), dim=-1)
    return image, kpts, g_desc


class TestNetwork:
    @pytest.mark.parametrize("conf,dim", VARIANTS)
    def test_shapes_and_unit_norm(self, conf, dim):
        torch.manual_seed(0)
        net = ResidualDescriptorNet(conf).eval()
        image, kpts, g_desc = _inputs()  # 61 x 83: not a multiple of 8, padded inside
        desc = net(image, kpts, g_desc)
        assert desc.shape == (2, 20, dim) and desc.dtype == torch.float32
        assert net.out_dim == dim
        torch.testing.assert_close(desc.norm(dim=-1), torch.ones(2, 20))

    def test_small_variant_halves_the_encoder(self):
        def convs(m):
            return [c for c in m.encoder if isinstance(c, torch.nn.Conv2d)]

        full, small = TrimmedSuperPoint(variant="full"), TrimmedSuperPoint(variant="small")
        assert [c.out_channels for c in convs(full)] == [64, 64, 64, 64, 128, 128, 128, 128]
        assert [c.out_channels for c in convs(small)] == [64, 64, 128, 128]
        assert full(torch.rand(1, 3, 32, 48)).shape == small(torch.rand(1, 3, 32, 48)).shape == (1, 128, 4, 6)

    def test_h_is_sampled_at_the_keypoint_location(self):
        # shifting the image content by 8 px (one map cell) and the keypoints with it gives the same h descriptors
        torch.manual_seed(0)
        net = ResidualDescriptorNet({"fusion": "none"}).eval()
        image = torch.rand(1, 3, 64, 96)
        shifted = torch.zeros_like(image)
        shifted[..., 8:] = image[..., :-8]
        kpts = torch.tensor([[[40.3, 20.7], [60.0, 33.1]]])
        d0 = net(image, kpts, torch.zeros(1, 2, 128))
        d1 = net(shifted, kpts + torch.tensor([8.0, 0.0]), torch.zeros(1, 2, 128))
        # receptive fields reach the image border differently, so only approximately equal
        assert F.cosine_similarity(d0, d1, dim=-1).min() > 0.95

    @pytest.mark.parametrize("fusion", ["concat", "sum", "product"])
    def test_training_starts_from_the_refined_handcrafted_descriptor(self, fusion):
        torch.manual_seed(0)
        net = ResidualDescriptorNet({"fusion": fusion}).eval()
        image, kpts, g_desc = _inputs(b=1, h=32, w=48)
        desc = net(image, kpts, g_desc)
        f_g = F.normalize(net.f(g_desc), dim=-1)
        if fusion == "concat":
            # the f part points exactly along f(g); h starts small but not zero (a zero h in its own dimensions
            # of the concatenation would get exactly zero gradient and never train)
            assert F.cosine_similarity(desc[..., :128], f_g, dim=-1).min() > 0.9999
            h_norm = desc[..., 128:].norm(dim=-1)
            assert (h_norm > 0).all() and (h_norm < desc[..., :128].norm(dim=-1)).all()
        else:
            torch.testing.assert_close(desc, f_g)

    def test_bad_fusion_config(self):
        with pytest.raises(ConfigError):
            ResidualDescriptorNet({"fusion": "max"})
        with pytest.raises(ConfigError):
            ResidualDescriptorNet({"fusion": "sum", "f_dims": [256, 64]})
        with pytest.raises(ConfigError):
            ResidualDescriptorNet({"fusoin": "sum"})

    @pytest.mark.parametrize("fusion", ["concat", "sum", "product", "none"])
    def test_gradients_reach_h_and_f_but_not_g(self, fusion):
        torch.manual_seed(0)
        net = ResidualDescriptorNet({"fusion": fusion})
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        image, kpts, g_desc = _inputs(n=12)
        matches0 = torch.arange(12).repeat(2, 1)
        for step in range(2):  # (sum/product start h's output layer at zero: lower layers need one step first)
            opt.zero_grad()
            desc0 = net(image, kpts, g_desc)
            desc1 = net(image.flip(-1), kpts, g_desc.roll(1, dims=1))
            loss, _ = triplet_loss(desc0, desc1, matches0, mining="hardest")
            loss.backward()
            if step == 0:
                assert net.h.head[-1].weight.grad.abs().sum() > 0
                if fusion in ("concat", "none"):
                    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
                opt.step()
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        # g's descriptors are constant inputs: no autograd history, no gradient, and no g parameter in the net
        assert not g_desc.requires_grad and g_desc.grad is None and g_desc.grad_fn is None
        assert all(n.startswith(("h.", "f.")) for n, _ in net.named_parameters())
        assert (net.f is None) == (fusion == "none")

    def test_bf16_compute_gives_float32_close_to_fp32(self):
        torch.manual_seed(0)
        net = ResidualDescriptorNet().eval()
        image, kpts, g_desc = _inputs(b=1, h=32, w=48)
        ref = net(image, kpts, g_desc)
        out = net.set_compute("bfloat16", channels_last=True)(image, kpts, g_desc)
        assert out.dtype == torch.float32
        assert (out - ref).abs().max() < 0.05


class TestTripletLoss:
    @staticmethod
    def _one_hot(n):
        return torch.eye(n)[None]  # (1, n, n): orthogonal unit vectors, pairwise distance sqrt(2)

    def test_zero_for_true_matches_with_separated_negatives(self):
        desc = self._one_hot(8)
        matches0 = torch.arange(8)[None]
        for mining in ("random", "hardest"):
            loss, m = triplet_loss(desc, desc, matches0, margin=1.0, mining=mining,
                                   generator=torch.Generator().manual_seed(0))
            assert loss.item() == pytest.approx(0.0, abs=1e-5)
            assert m["triplet_accuracy"].item() == 1.0 and m["num_anchors"].item() == 8

    def test_rises_for_shuffled_matches(self):
        desc = self._one_hot(8)
        good, _ = triplet_loss(desc, desc, torch.arange(8)[None], mining="hardest")
        bad, m = triplet_loss(desc, desc, torch.arange(8).roll(1)[None], mining="hardest")
        # positive at sqrt(2), hardest negative (the true match) at 0: loss = sqrt(2) + 1
        assert bad.item() == pytest.approx(2 ** 0.5 + 1.0, abs=1e-4) and bad > good + 1.0
        assert m["triplet_accuracy"].item() == 0.0

    def test_hand_computed_value_and_squared_distance(self):
        a = torch.tensor([[[1.0, 0.0]]])
        b = F.normalize(torch.tensor([[[1.0, 0.2], [0.6, 1.0]]]), dim=-1)
        d = pairwise_distances(a, b)[0, 0]
        loss, _ = triplet_loss(a, b, torch.tensor([[0]]), margin=1.0, mining="hardest")
        assert loss.item() == pytest.approx(max(0.0, d[0] - d[1] + 1.0).item(), abs=1e-6)
        loss_sq, _ = triplet_loss(a, b, torch.tensor([[0]]), margin=2.0, mining="hardest", distance="squared")
        assert loss_sq.item() == pytest.approx(max(0.0, d[0] ** 2 - d[1] ** 2 + 2.0).item(), abs=1e-5)

    def test_hardest_outside_radius_ignores_neighbours_of_the_positive(self):
        # image 1 holds the true match and a near-duplicate 1 px away with the same descriptor
        desc0 = torch.tensor([[[1.0, 0.0, 0.0]]])
        desc1 = torch.tensor([[[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
        kpts1 = torch.tensor([[[10.0, 10.0], [11.0, 10.0], [50.0, 50.0]]])
        hard, _ = triplet_loss(desc0, desc1, torch.tensor([[0]]), kpts1, mining="hardest")
        outside, m = triplet_loss(desc0, desc1, torch.tensor([[0]]), kpts1, mining="hardest-outside-radius",
                                  negative_radius=4.0)
        assert hard.item() == pytest.approx(1.0, abs=1e-5)  # d(a,p) = d(a,n) = 0
        assert outside.item() == pytest.approx(0.0, abs=1e-5)
        assert m["negative_distance"].item() == pytest.approx(2 ** 0.5, abs=1e-5)

    def test_masks_unmatched_and_padding(self):
        desc = self._one_hot(4)
        matches0 = torch.tensor([[0, -1, 2, -1]])
        mask1 = torch.tensor([[True, True, True, False]])
        loss, m = triplet_loss(desc, desc, matches0, mask1=mask1, mining="hardest")
        assert m["num_anchors"].item() == 2 and loss.item() == pytest.approx(0.0, abs=1e-5)
        empty, m = triplet_loss(desc, desc, torch.full((1, 4), -1), mining="hardest")
        assert empty.item() == 0.0 and m["num_anchors"].item() == 0

    def test_random_mining_is_reproducible_and_gradients_finite(self):
        torch.manual_seed(0)
        d0 = F.normalize(torch.randn(2, 30, 16), dim=-1).requires_grad_()
        d1 = F.normalize(torch.randn(2, 30, 16), dim=-1)
        matches0 = torch.arange(30).repeat(2, 1)
        l1, _ = triplet_loss(d0, d1, matches0, mining="random", generator=torch.Generator().manual_seed(3))
        l2, _ = triplet_loss(d0, d1, matches0, mining="random", generator=torch.Generator().manual_seed(3))
        assert l1.item() == l2.item()
        l1.backward()
        assert torch.isfinite(d0.grad).all() and d0.grad.abs().sum() > 0

    def test_wrapper_symmetric_and_invert(self):
        matches0 = torch.tensor([[2, -1, 0]])
        assert invert_matches(matches0, 4).tolist() == [[2, -1, 0, -1]]
        desc = self._one_hot(3)
        losses, m = TripletLoss({"mining": "hardest"})({"descriptors0": desc, "descriptors1": desc[:, [2, 1, 0]]},
                                                      {"matches0": matches0})
        assert losses["total"].item() == pytest.approx(0.0, abs=1e-5) and "triplet_accuracy" in m
        with pytest.raises(ConfigError):
            TripletLoss({"mining": "semi-hard"})
        with pytest.raises(ConfigError):
            TripletLoss({"margn": 1.0})


class TestTripletLossSignature:
    """The configured loss has featlab's one loss signature: ``loss(pred, data) -> (losses, metrics)``."""

    @staticmethod
    def _pair(seed=0, b=2, n=12, m=10):
        g = torch.Generator().manual_seed(seed)
        pred = {"descriptors0": F.normalize(torch.randn(b, n, 8, generator=g), dim=-1).requires_grad_(),
                "descriptors1": F.normalize(torch.randn(b, m, 8, generator=g), dim=-1)}
        matches0 = torch.where(torch.rand(b, n, generator=g) < 0.6, torch.randint(0, m, (b, n), generator=g), -1)
        matches0[:, 0] = 0  # at least one anchor per pair (a duplicate target is fine for the loss)
        data = {"matches0": matches0, "keypoints0": torch.rand(b, n, 2, generator=g) * 50,
                "keypoints1": torch.rand(b, m, 2, generator=g) * 50,
                "keypoint_masks0": torch.ones(b, n, dtype=torch.bool), "keypoint_masks1": torch.arange(m) < m - 2}
        data["keypoint_masks1"] = data["keypoint_masks1"].expand(b, m)
        return pred, data

    def test_one_direction_is_the_pure_function(self):
        pred, data = self._pair()
        losses, metrics = TripletLoss({"symmetric": False})(pred, data)
        ref, ref_metrics = triplet_loss(pred["descriptors0"], pred["descriptors1"], data["matches0"],
                                        data["keypoints1"], data["keypoint_masks1"])
        assert set(losses) == {"total", "triplet0"}
        torch.testing.assert_close(losses["total"], ref)
        assert losses["total"].item() > 0
        for k, v in ref_metrics.items():
            torch.testing.assert_close(metrics[k], v)

    def test_symmetric_is_the_mean_of_both_directions_with_finite_gradients(self):
        pred, data = self._pair(seed=1)
        losses, metrics = TripletLoss()(pred, data)
        d0, d1 = pred["descriptors0"], pred["descriptors1"]
        fwd, _ = triplet_loss(d0, d1, data["matches0"], data["keypoints1"], data["keypoint_masks1"])
        bwd, _ = triplet_loss(d1, d0, invert_matches(data["matches0"], d1.shape[1]), data["keypoints0"],
                              data["keypoint_masks0"])
        torch.testing.assert_close(losses["triplet0"], fwd)
        torch.testing.assert_close(losses["triplet1"], bwd)
        torch.testing.assert_close(losses["total"], 0.5 * (fwd + bwd))
        losses["total"].backward()
        assert torch.isfinite(d0.grad).all() and d0.grad.abs().sum() > 0
        assert all(not v.requires_grad for v in metrics.values())

    def test_random_mining_uses_the_given_generator(self):
        pred, data = self._pair(seed=2)
        loss_fn = TripletLoss({"mining": "random"})
        a, _ = loss_fn(pred, data, generator=torch.Generator().manual_seed(5))
        b, _ = loss_fn(pred, data, generator=torch.Generator().manual_seed(5))
        assert a["total"].item() == b["total"].item()


class TestCorrespondences:
    def test_identity_shift_and_radius(self):
        kp0 = np.array([[10.0, 10.0], [30.0, 12.0], [50.0, 40.0]])
        H = np.array([[1.0, 0, 2.0], [0, 1.0, 0], [0, 0, 1.0]])  # x + 2
        kp1 = np.array([[52.0, 40.5], [12.0, 10.0], [80.0, 80.0]])
        assert homography_correspondences(kp0, kp1, H, radius=3.0).tolist() == [1, -1, 0]
        assert homography_correspondences(kp0, kp1, H, radius=0.4).tolist() == [1, -1, -1]
        assert homography_correspondences(kp0, kp1[:0], H, radius=3.0).tolist() == [-1, -1, -1]

    def test_duplicate_locations_are_paired_by_descriptor(self):
        # SIFT repeats a location with two orientations: both copies match their own counterparts
        kp = np.array([[20.0, 20.0], [20.0, 20.0]])
        d0 = np.array([[1.0, 0.0], [0.0, 1.0]])
        d1 = d0[[1, 0]]
        m = homography_correspondences(kp, kp, np.eye(3), 3.0, d0, d1)
        assert m.tolist() == [1, 0]


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    torch.manual_seed(0)
    net = ResidualDescriptorNet()
    path = tmp_path_factory.mktemp("weights") / "res.safetensors"
    save_residual_weights(net, path, {"name": "sift", "conf": {"max_keypoints": 512}}, extra={"training": {}})
    return path


@pytest.fixture(scope="module")
def photo():
    from skimage.data import astronaut

    import cv2

    return cv2.resize(astronaut(), (160, 160), interpolation=cv2.INTER_AREA)


class TestExtractor:
    def test_weights_roundtrip(self, weights_file):
        net, meta = load_residual_weights(weights_file)
        assert meta["handcrafted"]["name"] == "sift" and meta["model"]["fusion"] == "concat"
        torch.manual_seed(0)
        ref = ResidualDescriptorNet()
        for (k, v), (k2, v2) in zip(ref.state_dict().items(), net.state_dict().items()):
            assert k == k2 and torch.equal(v, v2)

    def test_extract(self, weights_file, photo):
        from featlab.extractors import extract_image

        ext = build_extractor("residual-sift-v1", {"weights": str(weights_file), "max_keypoints": 100})
        sift = build_extractor("sift", {"max_keypoints": 100})
        out, ref = extract_image(ext, photo, resize=None), extract_image(sift, photo, resize=None)
        assert out["descriptors"].shape == (len(ref["keypoints"]), 256) and out["descriptors"].dtype == np.float32
        np.testing.assert_allclose(out["keypoints"], ref["keypoints"])
        np.testing.assert_allclose(np.linalg.norm(out["descriptors"], axis=1), 1.0, atol=1e-5)
        assert not any(p.requires_grad for p in ext.parameters())

    def test_gray_input_and_bf16(self, weights_file, photo):
        ext = build_extractor("residual-sift-v1", {"weights": str(weights_file), "max_keypoints": 50,
                                                "dtype": "bfloat16", "channels_last": True})
        gray = torch.from_numpy(photo.mean(2, dtype=np.float32) / 255.0)[None, None]
        pred = ext({"image": gray})
        assert pred["descriptors"].dtype == torch.float32 and pred["descriptors"].shape[-1] == 256

    def test_missing_default_weights_says_how_to_train(self):
        with pytest.raises(InputError, match="featlab train residual"):
            build_extractor("residual-sift-small", {"weights": "no-such-residual-weights"})
        assert "model.backbone=small" in train_hint("residual-sift-small")
        with pytest.raises(InputError, match="not found"):
            build_extractor("residual-sift-v1", {"weights": "/nonexistent/x.safetensors"})

    def test_mismatched_handcrafted_and_corrupt_sidecar(self, weights_file, tmp_path):
        with pytest.raises(ConfigError, match="rootsift"):
            build_extractor("residual-rootsift", {"weights": str(weights_file)})
        bad = tmp_path / "bad.safetensors"
        bad.write_bytes(b"not a safetensors file")
        bad.with_suffix(".json").write_text(json.dumps({"format": "featlab-residual/1", "model": {}}))
        with pytest.raises(InputError, match="cannot read"):
            build_extractor("residual-sift-v1", {"weights": str(bad)})

    def test_onnx_backend_matches_torch(self, weights_file, photo, tmp_path):
        torch_ext = build_extractor("residual-sift-v1", {"weights": str(weights_file), "max_keypoints": 80})
        onnx_ext = build_extractor("residual-sift-v1", {"weights": str(weights_file), "max_keypoints": 80,
                                                     "backend": "onnx"})
        image = torch.from_numpy(photo[:150, :130]).permute(2, 0, 1)[None].float() / 255  # not multiples of 8
        a, b = torch_ext({"image": image}), onnx_ext({"image": image})
        torch.testing.assert_close(a["keypoints"], b["keypoints"])
        assert (a["descriptors"] - b["descriptors"]).abs().max() < 1e-4
        # the exported graph directly, other sizes and keypoint counts (dynamic axes)
        net, _ = load_residual_weights(weights_file)
        runner = OnnxResidualRunner(export_onnx(net, tmp_path / "m.onnx"))
        image, kpts, g_desc = _inputs(b=1, n=33, h=72, w=100, seed=1)
        with torch.no_grad():
            assert (runner(image, kpts, g_desc) - net(image, kpts, g_desc)).abs().max() < 1e-4


class TestPartNormAndInit:
    def test_part_norm_gives_both_parts_equal_weight(self):
        torch.manual_seed(0)
        net = ResidualDescriptorNet({"part_norm": True})
        image, kpts, g_desc = _inputs(b=1, n=20, h=64, w=80, seed=3)
        out = net(image, kpts, g_desc)
        np.testing.assert_allclose(out.norm(dim=-1).detach().numpy(), 1.0, atol=1e-5)
        # each half has norm 1/sqrt(2), whatever the scales of f(g) and h
        np.testing.assert_allclose(out[..., :128].norm(dim=-1).detach().numpy(), 2 ** -0.5, atol=1e-5)
        np.testing.assert_allclose(out[..., 128:].norm(dim=-1).detach().numpy(), 2 ** -0.5, atol=1e-5)
        with torch.no_grad():
            net.h.head[-1].weight.mul_(1e-3)
        np.testing.assert_allclose(net(image, kpts, g_desc)[..., 128:].norm(dim=-1).detach().numpy(), 2 ** -0.5,
                                   atol=1e-5)

    def test_identity_f(self):
        from featlab.training.residual import identity_init_mlp

        net = ResidualDescriptorNet()
        identity_init_mlp(net.f)
        x = torch.randn(7, 128)  # signed values (SURF) pass too
        torch.testing.assert_close(net.f(x), x)
        with pytest.raises(ConfigError, match="identity"):
            identity_init_mlp(ResidualDescriptorNet({"f_dims": [200, 200, 128]}).f)
        with pytest.raises(ConfigError, match="fusion"):
            identity_init_mlp(None)

    def test_h_from_a_wider_model_projects_its_output(self, tmp_path, photo):
        import cv2

        from featlab.training.residual import init_h_from

        torch.manual_seed(1)
        src = ResidualDescriptorNet({"fusion": "none", "backbone": "small"}).eval()  # 256-d h
        path = save_residual_weights(src, tmp_path / "nf.safetensors", {"name": "sift", "conf": {}})
        cv2.imwrite(str(tmp_path / "p.png"), photo[..., ::-1])
        dst = ResidualDescriptorNet({"backbone": "small"}).eval()  # 128-d h
        init_h_from(dst, path, [tmp_path / "p.png"], (64, 80))
        image = torch.from_numpy(photo[:64, :80]).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            a, b = src.dense(image).flatten(2)[0], dst.dense(image).flatten(2)[0]  # (256, n), (128, n)
        # b holds the top principal directions of a: it keeps (almost) all of a's energy, and the pairwise
        # inner products of the projected descriptors are those of the originals
        assert b.pow(2).sum() > 0.95 * a.pow(2).sum()
        torch.testing.assert_close(b.T @ b, a.T @ a, rtol=0.1, atol=0.05 * float((a.T @ a).abs().max()))
        with pytest.raises(ConfigError, match="backbone"):
            init_h_from(ResidualDescriptorNet(), path, [tmp_path / "p.png"], (64, 80))


@pytest.mark.parametrize("name", ["residual-sift", "residual-sift-v1", "residual-sift-joint", "residual-rootsift-upright", "residual-surf",
                                  "residual-sift-nofusion", "residual-sift-small"])
def test_shipped_weights_load_and_describe(name, photo):
    from featlab.extractors import extract_image

    ext = build_extractor(name, {"max_keypoints": 60})  # the weights shipped in featlab/weights
    out = extract_image(ext, photo, resize=None)
    assert len(out["keypoints"]) > 10 and out["descriptors"].shape == (len(out["keypoints"]), ext.descriptor_dim)
    assert ext.descriptor_dim in ((128, 256) if name == "residual-sift" else (256,))  # 128: fitted b = 0, g alone
    np.testing.assert_allclose(np.linalg.norm(out["descriptors"], axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", ["residual-sift", "residual-sift-v1", "caps-sift"])
def test_channels_last_default_gives_the_contiguous_descriptors(name, photo):
    from featlab.extractors import extract_image

    ext = build_extractor(name, {"max_keypoints": 60})
    assert ext.conf.channels_last  # the measured-faster default on CPU (docs/results/RESULTS-before-issue8.md, Speed)
    ref = extract_image(build_extractor(name, {"max_keypoints": 60, "channels_last": False}), photo, resize=None)
    out = extract_image(ext, photo, resize=None)
    np.testing.assert_allclose(out["descriptors"], ref["descriptors"], atol=1e-5)
