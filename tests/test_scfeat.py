"""SCFeat: 8-point solver, F2R + coupling bridge, peakiness, line-to-window loss, policy-gradient rewards, training
stages and the extractor (NMS, sub-pixel refinement, data contract)."""
import json

import numpy as np
import pytest
import torch
from test_caps import PlanePairs, plane_scene

from featlab.errors import ConfigError
from featlab.geometry.eight_point import eight_point, fundamental_error, random_subsets
from featlab.geometry.epipolar import epipolar_distance, fundamental_from_pose
from featlab.losses import scfeat as L
from featlab.nn.f2r import CouplingBridge, SCFeatNet, peakiness

TINY = {"depth": 18, "widths": [8, 16, 32], "stem_width": 8, "decoder_widths": [16, 8], "descriptor_dim": 16,
        "detector_width": 8, "detector_blocks": 1}


def two_view(n=50, seed=0):
    """Random 3D points seen by two cameras: points0, points1 (n, 2) pixels, K (3, 3), T_0to1 (4, 4), F (3, 3)."""
    rng = np.random.default_rng(seed)
    X = np.c_[rng.uniform(-1, 1, n), rng.uniform(-1, 1, n), rng.uniform(3, 6, n)]
    a = np.radians(8)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    t = np.array([0.4, 0.05, 0.1])
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    X1 = X @ R.T + t
    p0 = (X @ K.T)[:, :2] / X[:, 2:]
    p1 = (X1 @ K.T)[:, :2] / X1[:, 2:]
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    return (torch.from_numpy(p0), torch.from_numpy(p1), torch.from_numpy(K), torch.from_numpy(T),
            fundamental_from_pose(torch.from_numpy(K), torch.from_numpy(K), torch.from_numpy(T)))


# ---------------------------------------------------------------------------------------------- 8-point
class TestEightPoint:
    def test_recovers_F_from_exact_matches(self):
        p0, p1, K, _, F_gt = two_view()
        for n in (8, 50):
            F_est = eight_point(p0[:n], p1[:n])
            assert float(fundamental_error(F_est, F_gt, K, K)) < 1e-6
            assert epipolar_distance(p0, p1, F_est).max() < 1e-6  # also on the points it did not see
            assert abs(float(F_est.norm()) - 1) < 1e-9
            assert torch.linalg.matrix_rank(F_est) == 2

    def test_batched_matches_single(self):
        p0, p1, K, _, F_gt = two_view(40)
        sub = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [10, 11, 12, 13, 14, 15, 16, 39], [3, 9, 17, 20, 25, 30, 33, 38]])
        F_batch = eight_point(p0[sub], p1[sub])
        assert F_batch.shape == (3, 3, 3)
        for k in range(3):
            single = eight_point(p0[sub[k]], p1[sub[k]])
            assert float(fundamental_error(F_batch[k], single, K, K)) < 1e-8
            assert float(fundamental_error(F_batch[k], F_gt, K, K)) < 1e-6

    def test_invariant_to_coordinate_scaling(self):
        p0, p1, K, _, F_gt = two_view()
        s = 7.3
        S = torch.diag(torch.tensor([1 / s, 1 / s, 1.0], dtype=torch.float64))
        F_scaled = eight_point(p0 * s, p1 * s)
        # x' = s x  =>  F' = S^T F S with S = diag(1/s, 1/s, 1)
        expected = S.T @ F_gt @ S
        Ks = torch.diag(torch.tensor([s, s, 1.0], dtype=torch.float64)) @ K
        assert float(fundamental_error(F_scaled, expected, Ks, Ks)) < 1e-6

    def test_error_is_scale_and_sign_free_and_grows(self):
        p0, p1, K, T, F_gt = two_view()
        assert float(fundamental_error(-3.0 * F_gt, F_gt, K, K)) < 1e-9
        F_noisy = eight_point(p0 + torch.randn_like(p0) * 2.0, p1)
        assert float(fundamental_error(F_noisy, F_gt, K, K)) > 1e-3

    def test_rejects_too_few_points(self):
        p0, p1, *_ = two_view(7)
        with pytest.raises(ValueError):
            eight_point(p0, p1)

    def test_random_subsets_fresh_and_cover_all_indices(self):
        g = torch.Generator().manual_seed(0)
        a = random_subsets(10, 100, 8, generator=g)
        b = random_subsets(10, 100, 8, generator=g)
        assert a.shape == (100, 8) and not torch.equal(a, b)  # fresh draws on every call (the reference re-seeds)
        assert set(a.flatten().tolist()) == set(range(10))  # the last match can be drawn
        assert all(len(set(r.tolist())) == 8 for r in a)  # distinct within a subset


# -------------------------------------------------------------------------------------- network, bridge
class TestNetwork:
    def test_peakiness_spike_above_plateau(self):
        x = torch.zeros(1, 4, 9, 9)
        x[0, 1, 4, 4] = 1.0  # one channel spikes at one pixel
        plateau = torch.zeros(1, 4, 9, 9)
        plateau[0, 1, 2:7, 2:7] = 1.0  # the same value over a 5x5 plateau
        p_spike, p_plateau = peakiness(x), peakiness(plateau)
        assert p_spike.shape == (1, 1, 9, 9)
        assert float(p_spike[0, 0, 4, 4]) > float(p_plateau[0, 0, 4, 4]) + 0.1
        assert float(p_spike[0, 0, 4, 4]) == pytest.approx(float(p_spike.max()))
        assert float(peakiness(5 * x)[0, 0, 4, 4]) == pytest.approx(float(p_spike[0, 0, 4, 4]), rel=1e-5)

    def test_bridge_pn_cn_standardise_their_axes(self):
        torch.manual_seed(0)
        x = torch.randn(2, 16, 6, 7) * 3 + torch.linspace(-2, 5, 16)[None, :, None, None]
        br = CouplingBridge(16)
        pn = br.pn_standardize(x)
        assert torch.allclose(pn.mean(1), torch.zeros(2, 6, 7), atol=1e-5)
        assert torch.allclose(pn.var(1, unbiased=False), torch.ones(2, 6, 7), atol=1e-3)
        assert torch.allclose(br.pn(x), pn, atol=1e-6)  # gamma = 1, beta = 0 at initialisation
        cn = br.cn(x)
        assert torch.allclose(cn.mean((2, 3)), torch.zeros(2, 16), atol=1e-5)
        assert torch.allclose(cn.var((2, 3), unbiased=False), torch.ones(2, 16), atol=1e-3)
        w = br.weights.detach()
        assert w.tolist() == pytest.approx([0.7, 0.3])
        assert torch.allclose(br(x), 0.7 * br.pn(x) + 0.3 * cn, atol=1e-5)

    def test_shapes_padding_and_frozen_detector_inputs(self):
        net = SCFeatNet(TINY)
        out = net(torch.rand(1, 3, 50, 70))
        assert out["local_map"].shape == (1, 16, 16, 20)  # 64 x 80 padded extent at stride 4
        assert out["scores"].shape == (1, 1, 50, 70) and float(out["scores"].detach().min()) >= 0
        out["scores"].sum().backward()  # the detector's loss never reaches the description network
        assert all(p.grad is None for p in net.description_parameters())
        assert any(p.grad is not None for p in net.detector.parameters())

    def test_faithful_layout(self):
        full = SCFeatNet({"depth": 50, "widths": [64, 128, 256], "stem_width": 64, "decoder_widths": [512, 256]})
        assert full.encoder.out_channels == [256, 512, 1024]
        assert (full.fuse4.in_channels, full.fuse8.in_channels, full.fuse16.in_channels) == (256, 512, 1024)
        assert (full.fuse.in_channels, full.fuse.out_channels) == (384, 128)

    def test_bad_config(self):
        with pytest.raises(ConfigError):
            SCFeatNet({"extract_from": "both"})
        with pytest.raises(ConfigError):
            SCFeatNet({"no_such_key": 1})


# --------------------------------------------------------------------------------------- line-to-window
class TestLineToWindow:
    def test_segments_clip_to_image(self):
        lines = torch.tensor([[0.0, 1.0, -10.0], [1.0, 0.0, -30.0], [1.0, -1.0, 0.0], [0.0, 1.0, 500.0]])
        start, end, valid = L.line_segments_in_image(lines, (40, 60))
        assert valid.tolist() == [True, True, True, False]
        seg = sorted([tuple(start[0].tolist()), tuple(end[0].tolist())])
        assert seg == [(0.0, 10.0), (60.0, 10.0)]
        assert sorted([start[2].tolist(), end[2].tolist()]) == [[0.0, 0.0], [40.0, 40.0]]

    def test_loss_zero_on_line_and_grows_off_it(self):
        p0, p1, K, T, F = two_view(60)
        F, p0, p1 = F.float()[None], p0.float()[None], p1.float()[None]
        valid = torch.ones(1, 60, dtype=torch.bool)
        stds = torch.rand(1, 60) + 0.5
        on, _, mask = L.line_to_window_loss(p0, p1, stds, F, (240, 320), valid)
        assert float(on) < 1e-5 and bool(mask.all())
        prev = float(on)
        for shift in (1.0, 3.0, 8.0):
            off, dist, _ = L.line_to_window_loss(p0, p1 + shift, stds, F, (240, 320), valid)
            assert float(off) > prev
            prev = float(off)
        far, _, mask = L.line_to_window_loss(p0, p1 + 100.0, stds, F, (240, 320), valid)
        assert not bool(mask.any()) and float(far) == 0.0  # far (wrong) matches leave the loss

    def test_window_finds_match_on_a_translated_field(self):
        """Image 1 = image 0 shifted by 12 px in x (pure sideways translation, horizontal epipolar lines): the
        expected locations lie on the lines and at the true matches; gradients are finite."""
        torch.manual_seed(0)
        h, w, shift = 64, 96, 12.0
        K = torch.tensor([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]])
        T = torch.eye(4)
        T[0, 3] = -0.12  # depth 1 everywhere: 12 px disparity
        F = fundamental_from_pose(K, K, T)[None]
        from featlab import pixels

        base = torch.randn(1, 16, 1, 64)
        base = torch.nn.functional.interpolate(base, size=(1, 256), mode="bilinear", align_corners=False)
        field = base.expand(1, 16, 64, 256) + 0.3 * torch.randn(1, 16, 1, 1)
        cols = pixels.pixel_grid(h // 4, w // 4, 4)
        map0 = pixels.sample_map(field, (cols + torch.tensor([64.0, 0]))[None], (64, 256))[0].T.reshape(1, 16, 16, 24)
        map1 = pixels.sample_map(field, (cols + torch.tensor([64.0 + shift, 0]))[None], (64, 256))[0].T.reshape(
            1, 16, 16, 24)
        map1.requires_grad_(True)
        q = torch.tensor([[[30.0, 20.0], [50.0, 40.0], [70.0, 30.0]]])
        desc = pixels.sample_map(map0, q, (h, w), normalize=True)
        m = L.line_to_window_match(q, desc, map1, F, (h, w), (h, w), {"jitter": 0.0, "temperature": 0.02})
        assert m["valid"].all()
        d = epipolar_distance(q, m["points"], F, symmetric=False)
        assert float(d.detach().max()) < 0.5
        assert torch.allclose(m["points"][..., 0], q[..., 0] - shift, atol=2.0)
        loss, _, _ = L.line_to_window_loss(q, m["points"], m["stds"], F, (h, w), m["valid"])
        loss.backward()
        assert torch.isfinite(map1.grad).all()

    def test_loss_wrapper_both_directions(self):
        scene = plane_scene(3, (64, 96))
        pairs = PlanePairs(scene, [(0, 2)])
        item = pairs[0]
        net = SCFeatNet(TINY)
        img = torch.stack([torch.from_numpy(item[f"image{s}"]).permute(2, 0, 1).float() / 255 for s in "01"])
        maps = net.describe(img)
        data = {"image0": img[:1], "K0": torch.from_numpy(item["K0"]).float()[None],
                "K1": torch.from_numpy(item["K1"]).float()[None],
                "T_0to1": torch.from_numpy(item["T_0to1"]).float()[None],
                "points0": torch.rand(1, 20, 2) * torch.tensor([96.0, 64.0]),
                "points1": torch.rand(1, 20, 2) * torch.tensor([96.0, 64.0])}
        losses, metrics = L.LineToWindowLoss()({"local_map0": maps["local_map"][:1],
                                                "local_map1": maps["local_map"][1:]}, data)
        assert {"epipolar01", "epipolar10", "total"} <= set(losses) and torch.isfinite(losses["total"])
        losses["total"].backward()
        assert net.fuse.weight.grad is not None and torch.isfinite(net.fuse.weight.grad).all()


# ------------------------------------------------------------------------------------------ policy gradient
class TestPolicyGradient:
    def test_rewards_documented_values(self):
        p0, p1, K, T, F = two_view(6)
        F = F.float()
        q0, q1 = p0.float(), p1.float()
        q1_bad = q1.clone()
        q1_bad[0] += torch.tensor([0.0, 30.0])  # off its epipolar line
        rewards, good = L.epipolar_rewards(q0, q1_bad, F)
        assert float(rewards[1, 1]) == 1.0 and bool(good[1, 1])  # consistent match: +1
        assert float(rewards[0, 0]) == -0.25 and not bool(good[0, 0])  # inconsistent: -0.25
        r = L.scfeat_rewards(good, 0.3)
        assert float(r[1, 1]) == pytest.approx(0.7) and float(r[0, 0]) == pytest.approx(-0.3)

    def test_loss_gradient_follows_reward(self):
        logp0 = torch.zeros(2, requires_grad=True)
        logp1 = torch.zeros(2, requires_grad=True)
        P = torch.tensor([[0.9, 0.0], [0.0, 0.9]])
        R = torch.tensor([[1.0, -0.25], [-0.25, -0.25]])
        loss, expected = L.policy_gradient_loss(logp0, logp1, P, R, keypoint_penalty=0.0)
        loss.backward()
        assert float(logp0.grad[0]) < 0 < float(logp0.grad[1])  # raise the good keypoint, lower the bad
        assert float(expected) == pytest.approx(0.9 - 0.225)

    def test_acceptance_choice(self):
        from featlab.training.scfeat import sample_cell_keypoints

        torch.manual_seed(0)
        low = torch.full((16, 16), 0.05)
        _, _, acc = sample_cell_keypoints(low, 8, "ratio")
        assert torch.allclose(acc, torch.full((4,), 0.05 / 1.05), atol=1e-5)  # can go below 0.5
        _, _, acc_ref = sample_cell_keypoints(low, 8, "reference")
        assert bool((acc_ref >= 0.5).all())  # the reference's defect, kept as an option

    def test_sampled_keypoints_lie_in_their_cells(self):
        from featlab.training.scfeat import sample_cell_keypoints

        scores = torch.zeros(16, 24)
        scores[2, 5] = 1e4  # cell (0, 0): row 2, col 5 takes all the mass
        scores[10, 19] = 1e4  # cell (1, 2)
        torch.manual_seed(0)
        kp, logp, _ = sample_cell_keypoints(scores, 8, "ratio")
        # zero-score cells are accepted with probability ~1e-8: only the two peaks remain, each nearly certain
        assert {tuple(p) for p in kp.tolist()} == {(5.5, 2.5), (19.5, 10.5)}
        assert torch.allclose(logp, torch.zeros(2), atol=1e-3)

    def test_few_steps_raise_expected_reward(self):
        """A free score map trained by the policy gradient on a synthetic pair where only keypoints in the left
        half of image 0 (and anywhere in image 1) have good matches: the expected reward rises."""
        from featlab.training.scfeat import sample_cell_keypoints

        torch.manual_seed(0)
        raw = torch.zeros(2, 16, 16, requires_grad=True)
        opt = torch.optim.Adam([raw], lr=0.2)

        def run():
            s = torch.nn.functional.softplus(raw)
            kp0, lp0, _ = sample_cell_keypoints(s[0], 4)
            kp1, lp1, _ = sample_cell_keypoints(s[1], 4)
            good = (kp0[:, 0] < 8)[:, None].expand(len(kp0), len(kp1))
            R = torch.where(good, 1.0, -0.25)
            P = torch.full((len(kp0), len(kp1)), 1.0 / max(len(kp1), 1))
            return L.policy_gradient_loss(lp0, lp1, P, R, 0.001)

        def mean_reward(n=20):
            with torch.no_grad():
                return float(np.mean([float(run()[1]) for _ in range(n)]))

        before = mean_reward()
        for _ in range(40):
            opt.zero_grad()
            run()[0].backward()
            opt.step()
        assert mean_reward() > before + 0.5

    def test_fundamental_loss_small_for_exact_matches(self):
        from featlab.training.scfeat import fundamental_loss

        p0, p1, K, _, F = two_view(30)
        g = torch.Generator().manual_seed(1)
        assert float(fundamental_loss(p0.float(), p1.float(), F, K, K, 20, g)) < 1e-4
        wrong = p1.float()[torch.randperm(30, generator=g)]
        assert float(fundamental_loss(p0.float(), wrong, F, K, K, 20, g)) > 0.1


# ------------------------------------------------------------------------------------------------ extraction
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from featlab.extractors.scfeat import save_scfeat_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("scfeat") / "tiny.safetensors"
    save_scfeat_weights(SCFeatNet(TINY), path, extra={"note": "random"})
    return path


@pytest.fixture(scope="module")
def small_scene():
    return plane_scene(5, (64, 96))


class TestExtraction:
    def test_nms_and_subpixel_on_synthetic_scores(self):
        from featlab.extractors.scfeat import detect_keypoints

        scores = torch.zeros(20, 30)
        scores[5, 7] = 1.0  # a symmetric peak: stays on the pixel centre
        scores[5, 6] = scores[5, 8] = 0.5
        scores[12, 20] = 1.0  # an asymmetric peak: the right neighbour pulls the point right
        scores[12, 21] = 0.5
        scores[12, 22] = 0.9  # not a local maximum of radius 1? it is (its neighbours are 0.5 and 0)
        kp, sc = detect_keypoints(scores, max_keypoints=10, nms_radius=1, score_threshold=0.6)
        assert sc.tolist() == pytest.approx([1.0, 1.0, 0.9])
        pts = kp.tolist()
        assert pts[0] == pytest.approx([7.5, 5.5])  # featlab pixels: centre of pixel (row 5, col 7)
        assert pts[1][0] == pytest.approx(20.5 + 0.5 / 1.5) and pts[1][1] == pytest.approx(12.5)
        kp_raw, _ = detect_keypoints(scores, 10, 1, 0.6, subpixel=False)
        assert kp_raw[1].tolist() == pytest.approx([20.5, 12.5])
        kp2, _ = detect_keypoints(scores, max_keypoints=1, nms_radius=1)
        assert len(kp2) == 1
        kp3, _ = detect_keypoints(scores, 10, nms_radius=2, score_threshold=0.6)  # 0.9 is within 2 px of 1.0
        assert len(kp3) == 2

    def test_output_contract_and_descriptor_map(self, tiny_weights):
        from featlab import pixels
        from featlab.extractors import build_extractor
        from featlab.extractors.scfeat import SCFeat

        ext = SCFeat({"weights": str(tiny_weights), "max_keypoints": 100})
        img = torch.rand(2, 3, 48, 64)
        pred = ext({"image": img})
        n = pred["keypoints"].shape[1]
        assert 0 < n <= 100
        assert pred["descriptors"].shape == (2, n, 16)
        kp = pred["keypoints"]
        inside = (kp[..., 0] >= 0) & (kp[..., 0] <= 64) & (kp[..., 1] >= 0) & (kp[..., 1] <= 48)
        mask = pred.get("keypoint_masks", torch.ones(2, n, dtype=torch.bool))
        assert bool(inside[mask].all())
        norms = pred["descriptors"].norm(dim=-1)[mask]
        assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5)
        sc = pred["keypoint_scores"][0][mask[0]]
        assert bool((sc[:-1] >= sc[1:]).all())
        # descriptors come from local_map (the map the loss trained), not desc_map
        maps = ext.net(img[:1])
        expected = pixels.sample_map(maps["local_map"], kp[:1], (48, 64), normalize=True)
        assert torch.allclose(pred["descriptors"][:1], expected * mask[:1, :, None], atol=1e-5)
        ref = SCFeat({"weights": str(tiny_weights), "max_keypoints": 100, "extract_from": "desc"})({"image": img})
        assert not torch.allclose(ref["descriptors"], pred["descriptors"])
        desc = build_extractor("scfeat-desc", {"weights": str(tiny_weights), "max_keypoints": 30})
        p2 = desc({"image": img[:1]})
        assert p2["descriptors"].shape[-1] == 16

    def test_cli_extract_writes_hloc_features(self, tiny_weights, tmp_path):
        import cv2
        import h5py

        from featlab.cli import main

        imgs = tmp_path / "imgs"
        imgs.mkdir()
        rng = np.random.default_rng(0)
        for k in range(2):
            cv2.imwrite(str(imgs / f"{k}.png"), (rng.uniform(0, 255, (40, 56, 3))).astype(np.uint8))
        out = tmp_path / "feats.h5"
        code = main(["extract", "--model", "scfeat", str(imgs), "-o", str(out), "--max-keypoints", "50",
                     "--conf", f"weights={tiny_weights}"])
        assert code == 0
        with h5py.File(out, "r") as f:
            for name in ("0.png", "1.png"):
                kp = f[name]["keypoints"][()]  # hloc convention: centre of the top-left pixel at (0, 0)
                assert 0 < len(kp) <= 50
                assert (kp[:, 0] >= -0.5).all() and (kp[:, 0] <= 55.5).all()
                assert (kp[:, 1] >= -0.5).all() and (kp[:, 1] <= 39.5).all()


# ---------------------------------------------------------------------------------------------- training
class TestTraining:
    def conf(self, **extra):
        base = {"model": TINY, "data": {"image_size": [64, 96], "num_workers": 0},
                "val": {"max_keypoints": 64},
                "train": {"max_steps": 2, "val_every": 2, "checkpoint_every": 1, "log_every": 1, "progress": False,
                          "dtype": "float32"}}
        for k, v in extra.items():
            base.setdefault(k, {}).update(v) if isinstance(v, dict) else base.__setitem__(k, v)
        return base

    def test_two_stages_and_resume(self, small_scene, tmp_path):
        scene = small_scene
        from featlab.training import loop
        from featlab.training.scfeat import SCFeatTask

        pairs, val = PlanePairs(scene, [(0, 2), (1, 3)]), PlanePairs(scene, [(2, 4)])
        task = SCFeatTask(self.conf(), train_pairs=pairs, val_pairs=val)
        summary = loop.train(task, task.conf.train, tmp_path / "desc")
        assert summary["step"] == 2
        rec = loop.read_metrics(tmp_path / "desc" / "metrics.jsonl")
        tr = [r for r in rec if r["kind"] == "train"]
        assert all(np.isfinite(r["loss"]) for r in tr) and "loss_epipolar10" in tr[0]
        assert {"val/auc@10", "val/sift_auc@10"} <= set(rec[-1])
        # detector stage from the descriptor run: only the detector changes
        desc_w = tmp_path / "desc" / "final.safetensors"
        conf2 = self.conf(stage="detector", init=str(desc_w))
        conf2["train"]["max_steps"] = 1
        task2 = SCFeatTask(conf2, train_pairs=pairs, val_pairs=val)
        before = {k: v.clone() for k, v in task2.model.state_dict().items()}
        loop.train(task2, task2.conf.train, tmp_path / "det")
        after = task2.model.state_dict()
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed and all(k.startswith("detector.") for k in changed)
        rec2 = loop.read_metrics(tmp_path / "det" / "metrics.jsonl")
        assert "expected_reward" in [r for r in rec2 if r["kind"] == "train"][0]
        assert "val/desc_auc@10" in rec2[-1] and "val/keypoints" in rec2[-1]
        # resume continues the detector run to a larger budget
        conf2["train"]["max_steps"] = 2
        task3 = SCFeatTask(conf2, train_pairs=pairs, val_pairs=val)
        assert loop.train(task3, task3.conf.train, tmp_path / "det", resume=True)["step"] == 2
        meta = json.loads((tmp_path / "det" / "final.json").read_text())
        assert meta["training"]["stage"] == "detector" and meta["model"]["extract_from"] == "local"

    def test_detector_for_a_handcrafted_descriptor(self, small_scene, tmp_path):
        """detector.descriptor=rootsift: the detector stage trains with RootSIFT describing its keypoints, only the
        detector changes, validation reports RootSIFT at SIFT's keypoints as desc_auc, and the exported weights
        extract RootSIFT (at the recorded size, dominant orientation) at the learned keypoints."""
        from featlab.extractors.scfeat import SCFeat, describe_handcrafted, save_scfeat_weights
        from featlab.training import loop
        from featlab.training.scfeat import SCFeatTask

        pairs, val = PlanePairs(small_scene, [(0, 2), (1, 3)]), PlanePairs(small_scene, [(2, 4)])
        torch.manual_seed(0)
        init = save_scfeat_weights(SCFeatNet(TINY), tmp_path / "desc.safetensors")
        with pytest.raises(ConfigError):  # the descriptor stage trains SCFeat's own descriptor
            SCFeatTask(self.conf(detector={"descriptor": "rootsift"}), train_pairs=pairs, val_pairs=None)
        with pytest.raises(ConfigError):
            SCFeatTask(self.conf(stage="detector", init=str(init), detector={"descriptor": "surf"}),
                       train_pairs=pairs, val_pairs=None)
        conf = self.conf(stage="detector", init=str(init), detector={"descriptor": "rootsift", "keypoint_size": 5.0})
        conf["train"]["max_steps"] = 1
        task = SCFeatTask(conf, train_pairs=pairs, val_pairs=val)
        before = {k: v.clone() for k, v in task.model.state_dict().items()}
        loop.train(task, task.conf.train, tmp_path / "det")
        changed = {k for k, v in task.model.state_dict().items() if not torch.equal(before[k], v)}
        assert changed and all(k.startswith("detector.") for k in changed)
        rec = loop.read_metrics(tmp_path / "det" / "metrics.jsonl")
        assert np.isfinite([r["loss"] for r in rec if r["kind"] == "train"]).all()
        assert {"val/auc@10", "val/desc_auc@10", "val/sift_auc@10"} <= set(rec[-1])
        meta = json.loads((tmp_path / "det" / "final.json").read_text())
        assert meta["detector"]["descriptor"] == "rootsift" and meta["detector"]["keypoint_size"] == 5.0
        ext = SCFeat({"weights": str(tmp_path / "det" / "final.safetensors"), "max_keypoints": 50})
        img = torch.rand(1, 3, 48, 64)
        pred = ext({"image": img})
        kp = pred["keypoints"][0]
        assert ext.descriptor_dim == 128 and pred["descriptors"].shape == (1, len(kp), 128)
        assert torch.allclose(pred["descriptors"][0], describe_handcrafted(ext.describer, img[0], kp, 5.0))
        own = SCFeat({"weights": str(tmp_path / "det" / "final.safetensors"), "max_keypoints": 50,
                      "descriptor": "scfeat"})
        assert own({"image": img})["descriptors"].shape[-1] == 16

    def test_detector_stage_needs_init_and_guard(self, small_scene):
        scene = small_scene
        from featlab.training.scfeat import SCFeatTask, check_conf

        pairs = PlanePairs(scene, [(0, 2)])
        with pytest.raises(ConfigError):
            SCFeatTask(self.conf(stage="detector"), train_pairs=pairs, val_pairs=None)
        from featlab.conf import resolve_conf
        from featlab.training.scfeat import default_conf

        bad = resolve_conf(default_conf, {"data": {"colmap": ["/x/posed/strecha/Herz-Jesus-P25"]}})
        with pytest.raises(ConfigError):
            check_conf(bad)


def test_shipped_weights_load_and_describe():
    """The shipped scfeat weights: both stages trained (sidecar), own keypoints inside the image with unit
    descriptors, and scfeat-desc describing SIFT's keypoints with them."""
    from featlab.extractors import build_extractor
    from skimage import data as skdata

    gray = torch.from_numpy(skdata.camera()[::2, ::2].copy()).float()[None, None] / 255.0  # 256 x 256
    ext = build_extractor("scfeat", {"max_keypoints": 300})
    assert ext.meta["format"] == "featlab-scfeat/1" and ext.meta["training"]["stage"] == "detector"
    with torch.no_grad():
        pred = ext({"image": gray})
    kp = pred["keypoints"][0]
    assert 0 < len(kp) <= 300 and (kp >= -0.5).all() and (kp <= 255.5).all()
    assert torch.allclose(pred["descriptors"][0].norm(dim=-1), torch.ones(len(kp)), atol=1e-4)
    desc = build_extractor("scfeat-desc", {"max_keypoints": 300})
    with torch.no_grad():
        pred = desc({"image": gray})
    assert pred["descriptors"].shape[-1] == 128 and pred["keypoints"].shape[1] > 0


def test_shipped_rootsift_detector_describes_its_keypoints_with_rootsift():
    """The shipped scfeat-rootsift weights: a detector trained for RootSIFT (sidecar), its keypoints inside the image
    and described by RootSIFT (non-negative, unit norm, 128-d) at the recorded size with the dominant orientation."""
    from featlab.extractors import build_extractor
    from featlab.extractors.scfeat import describe_handcrafted
    from skimage import data as skdata

    image = torch.from_numpy(skdata.astronaut()[::2, ::2].copy()).permute(2, 0, 1)[None].float() / 255.0
    ext = build_extractor("scfeat-rootsift", {"max_keypoints": 200})
    assert ext.meta["detector"]["descriptor"] == "rootsift" and ext.meta["training"]["stage"] == "detector"
    with torch.no_grad():
        pred = ext({"image": image})
    kp, desc = pred["keypoints"][0], pred["descriptors"][0]
    assert len(kp) == 200 and (kp >= 0).all() and (kp <= 256).all() and desc.shape == (200, 128)
    assert (desc >= 0).all() and torch.allclose(desc.norm(dim=-1), torch.ones(200), atol=1e-4)
    assert torch.allclose(desc, describe_handcrafted(ext.describer, image[0], kp, ext.keypoint_size), atol=1e-6)
