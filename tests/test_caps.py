"""CAPS: ResNet encoders, the ResUNet, coarse-to-fine matching, the epipolar loss, training and the extractor."""
import json

import cv2
import numpy as np
import pytest
import torch

from featlab import pixels
from featlab.errors import ConfigError, InputError
from featlab.geometry.epipolar import fundamental_from_pose
from featlab.geometry.homography import warp_image_homography
from featlab.losses.caps import (CAPSLoss, epipolar_errors, epipolar_line_valid, epipolar_loss,
                                 inverse_std_weights, match_coarse_to_fine, normalize_maps, soft_match)
from featlab.nn.resnet import ResNetEncoder
from featlab.nn.resunet import ResUNet, map_extent

TINY = {"depth": 18, "widths": [16, 32, 64], "stem_width": 16, "coarse_dim": 32, "fine_dim": 32}


# ------------------------------------------------------------------------------------------------ fixtures
def rotation(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    a, b = np.radians(yaw_deg), np.radians(pitch_deg)
    Ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return Ry @ Rx


def plane_scene(n_views: int = 6, size=(96, 128), plane_z: float = 2.0):
    """Views of a textured plane Z = plane_z (world), rendered exactly with the plane-induced homographies.

    Returns images uint8 (n, H, W, 3), depths float32 (n, H, W) metres, K (3, 3), T_c2w (n, 4, 4).
    """
    from skimage.data import astronaut

    rng = np.random.default_rng(0)
    tex = astronaut().astype(np.float32)
    noise = cv2.resize(rng.uniform(0, 255, (64, 64, 3)).astype(np.float32), tex.shape[1::-1])
    tex = torch.from_numpy(0.6 * tex + 0.4 * noise).permute(2, 0, 1)[None] / 255.0
    h, w = size
    K = np.array([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]])
    s = 3.2 / tex.shape[-1]  # texture pixel -> metres on the plane, texture centred on the optical axis
    A = np.array([[s, 0, -1.6], [0, s, -1.6], [0, 0, 1]])
    images, depths, poses = [], [], []
    grid = pixels.pixel_grid(h, w).numpy().astype(np.float64)
    rays = np.c_[grid, np.ones(len(grid))] @ np.linalg.inv(K).T
    for i in range(n_views):
        T_c2w = np.eye(4)
        T_c2w[:3, :3] = rotation(2.5 * i - 6, 1.5 * np.sin(i))
        T_c2w[:3, 3] = [0.06 * i - 0.15, 0.03 * np.cos(i), 0.05 * np.sin(0.7 * i)]
        T_w2c = np.linalg.inv(T_c2w)
        R, t = T_w2c[:3, :3], T_w2c[:3, 3]
        H = K @ np.c_[R[:, 0], R[:, 1], R[:, 2] * plane_z + t] @ A
        img = warp_image_homography(tex, H, size)[0]
        images.append((img.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy())
        C = T_c2w[:3, 3]
        dirs = rays @ T_c2w[:3, :3].T
        depths.append(((plane_z - C[2]) / dirs[:, 2]).reshape(h, w).astype(np.float32))
        poses.append(T_c2w)
    return np.stack(images), np.stack(depths), K, np.stack(poses)


class PlanePairs:
    """A posed-pair dataset over :func:`plane_scene` views."""

    def __init__(self, scene, pairs):
        self.images, _, self.K, self.T_c2w = scene
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, k):
        i, j = self.pairs[k]
        return {"name": f"{i}-{j}", "image0": self.images[i], "image1": self.images[j], "K0": self.K,
                "K1": self.K, "T_0to1": np.linalg.inv(self.T_c2w[j]) @ self.T_c2w[i]}


@pytest.fixture(scope="module")
def scene():
    return plane_scene()


def random_field_maps(size, shift, dims=(48, 48), seed=0):
    """Coarse/fine maps of two images whose descriptor fields are identical up to a translation: the map of image 1
    at pixel y holds the field at y - shift. Coarse fields vary at 32 px, fine fields at 8 px."""
    h, w = size
    out = []
    for offset in (torch.zeros(2), torch.as_tensor(shift, dtype=torch.float32)):
        maps = {}
        for name, stride, dim, cell in (("coarse", 16, dims[0], 32), ("fine", 4, dims[1], 8)):
            g = torch.Generator().manual_seed(seed + cell)
            base = torch.randn(1, dim, 1024 // cell, 1024 // cell, generator=g)
            centres = pixels.pixel_grid(h // stride, w // stride, stride) - offset + 256
            vals = pixels.sample_map(base, centres[None], (1024, 1024))[0]
            maps[name] = vals.T.reshape(1, dim, h // stride, w // stride)
        out.append(normalize_maps(maps))
    return out


def two_view_correspondences(n=200, seed=0):
    """Random 3D points seen by two cameras -> (p0, p1 (1, n, 2), K (1, 3, 3), T_0to1 (1, 4, 4), size (H, W))."""
    rng = np.random.default_rng(seed)
    K = np.array([[300.0, 0, 160], [0, 300.0, 120], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3] = rotation(8, -4)
    T[:3, 3] = [0.3, -0.05, 0.1]
    X0 = np.c_[rng.uniform(-1, 1, n), rng.uniform(-0.7, 0.7, n), rng.uniform(3, 6, n)]
    X1 = X0 @ T[:3, :3].T + T[:3, 3]
    p0 = X0 @ K.T
    p1 = X1 @ K.T
    t = lambda a: torch.tensor(a, dtype=torch.float32)[None]  # noqa: E731
    return t(p0[:, :2] / p0[:, 2:]), t(p1[:, :2] / p1[:, 2:]), t(K), t(T), (240, 320)


# ------------------------------------------------------------------------------------------------ networks
class TestNetworks:
    @pytest.mark.parametrize("depth,channels", [(18, [64, 128, 256, 512]), (34, [64, 128, 256, 512]),
                                                (50, [256, 512, 1024, 2048])])
    def test_resnet_strides(self, depth, channels):
        enc = ResNetEncoder(depth=depth, num_stages=4).eval()
        with torch.no_grad():
            maps = enc(torch.rand(1, 3, 64, 96))
        assert enc.strides == [4, 8, 16, 32] and enc.out_channels == channels
        for m, s, c in zip(maps, enc.strides, channels):
            assert tuple(m.shape) == (1, c, 64 // s, 96 // s)

    def test_resnet_three_stages_and_blocks(self):
        enc = ResNetEncoder(depth=34, num_stages=3)
        assert [len(s) for s in enc.stages] == [3, 4, 6]
        with pytest.raises(ValueError, match="depth"):
            ResNetEncoder(depth=20)

    @pytest.mark.parametrize("depth", [18, 34, 50])
    def test_resunet_shapes(self, depth):
        net = ResUNet({"depth": depth}).eval()
        with torch.no_grad():
            out = net(torch.rand(2, 3, 64, 96))
        assert tuple(out["coarse"].shape) == (2, 128, 4, 6)
        assert tuple(out["fine"].shape) == (2, 128, 16, 24)

    def test_resunet_pads_odd_sizes_and_gray(self):
        net = ResUNet(TINY).eval()
        assert map_extent(70, 100) == (80, 112)
        with torch.no_grad():
            out = net(torch.rand(1, 1, 70, 100))
        assert tuple(out["coarse"].shape) == (1, 32, 5, 7) and tuple(out["fine"].shape) == (1, 32, 20, 28)

    def test_resunet_paper_layout_parameters(self):
        # ResNet-50 layout of the paper (decoder 512, 256): ~20.5 M parameters; ResNet-18 variant ~3.6 M
        n50 = sum(p.numel() for p in ResUNet({"depth": 50}).parameters())
        n18 = sum(p.numel() for p in ResUNet({"depth": 18}).parameters())
        assert 20.0e6 < n50 < 21.0e6 and 3.4e6 < n18 < 3.8e6

    def test_resunet_bad_config(self):
        with pytest.raises(ConfigError, match="unknown config key"):
            ResUNet({"depht": 18})
        with pytest.raises(ConfigError, match="depth"):
            ResUNet({"depth": 101})


# ------------------------------------------------------------------------------------------------ matching
class TestMatching:
    @pytest.mark.parametrize("shift", [(20.0, 8.0), (-12.0, 28.0), (-13.0, 7.0)])
    def test_coarse_to_fine_finds_translation(self, shift):
        size = (192, 256)
        maps0, maps1 = random_field_maps(size, shift)
        pts0 = pixels.pixel_grid(size[0] // 8, size[1] // 8, 8)
        target = pts0 + torch.tensor(shift)
        keep = pixels.inside_image(target, size, border=12)
        pts0, target = pts0[keep][None], target[keep][None]
        out = match_coarse_to_fine(pts0, maps0, maps1, size, size)
        err_c = (out["coarse_points"] - target).norm(dim=-1)
        err_f = (out["fine_points"] - target).norm(dim=-1)
        assert err_c.median() < 8.0  # within half a coarse cell
        assert err_f.median() < 1.5 and (err_f < 3).float().mean() > 0.95
        assert (err_f.median() < err_c.median())
        assert out["fine_stds"].median() < out["coarse_stds"].median()

    def test_window_restricts_search(self):
        # a single query whose best match lies outside the window must be matched inside it
        target = torch.zeros(1, 2, 4, 4)
        target[0, 0] = 1.0  # every cell: (1, 0)
        target[0, :, 3, 3] = torch.tensor([0.0, 1.0])  # cell (3, 3) is the only (0, 1)
        q = torch.tensor([[[0.0, 1.0]]])
        e, std, best = soft_match(q, target, (16, 16), 0.02)
        assert torch.allclose(best, torch.tensor([[[14.0, 14.0]]]))
        e, std, best = soft_match(q, target, (16, 16), 0.02, window_centres=torch.tensor([[[2.0, 2.0]]]),
                                  window_half=(4.0, 4.0))
        assert (e <= 6.0 + 1e-5).all() and (best <= 6.0).all()
        # uniform inside the 2x2 cells of the window: mean at their centre, std = sqrt(2) * 2 px
        assert torch.allclose(e, torch.tensor([[[4.0, 4.0]]]), atol=1e-4)
        assert std.item() == pytest.approx(np.sqrt(8.0), abs=1e-3)

    def test_chunks_match_unchunked(self):
        maps0, maps1 = random_field_maps((64, 96), (8.0, 4.0), seed=3)
        pts = torch.rand(1, 37, 2) * torch.tensor([96.0, 64.0])
        a = match_coarse_to_fine(pts, maps0, maps1, (64, 96), (64, 96), chunk_size=5)
        b = match_coarse_to_fine(pts, maps0, maps1, (64, 96), (64, 96), chunk_size=1000)
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=0)

    def test_soft_match_gradcheck(self):
        torch.manual_seed(0)
        q = torch.nn.functional.normalize(torch.randn(1, 3, 4, dtype=torch.float64), dim=-1).requires_grad_()
        t = torch.nn.functional.normalize(torch.randn(1, 4, 3, 4, dtype=torch.float64), dim=1).requires_grad_()
        centres = torch.tensor([[[6.0, 6.0], [10.0, 2.0], [2.0, 10.0]]], dtype=torch.float64)

        def fn(q, t):
            return soft_match(q, t, (12, 16), 0.5, window_centres=centres, window_half=(6.0, 6.0))[0]

        assert torch.autograd.gradcheck(fn, (q, t))


# ------------------------------------------------------------------------------------------------ loss
class TestLoss:
    def test_fundamental_from_pose_used_by_the_loss(self):
        p0, p1, K, T, size = two_view_correspondences()
        F = fundamental_from_pose(K, K, T)
        assert epipolar_errors(p0, p1, F).max() < 1e-2
        # the reverse direction uses F^T
        assert epipolar_errors(p1, p0, F.transpose(-1, -2)).max() < 1e-2

    def test_loss_zero_on_lines_and_grows_off_them(self):
        p0, p1, K, T, size = two_view_correspondences()
        F = fundamental_from_pose(K, K, T)
        mask = torch.ones(p0.shape[:2], dtype=torch.bool)
        loss0, _ = epipolar_loss(p0, p1, F, size, mask)
        assert loss0.item() < 1e-4
        # slide along the epipolar line: still zero
        line = torch.cat([p0, torch.ones_like(p0[..., :1])], -1) @ F.transpose(-1, -2)
        direction = torch.nn.functional.normalize(torch.stack([-line[..., 1], line[..., 0]], -1), dim=-1)
        assert epipolar_loss(p0, p1 + 15 * direction, F, size, mask)[0].item() < 1e-4
        # move off the line along its normal by d pixels: loss = d / longer side
        normal = torch.nn.functional.normalize(line[..., :2], dim=-1)
        values = [epipolar_loss(p0, p1 + d * normal, F, size, mask)[0].item() for d in (1.0, 4.0, 16.0)]
        np.testing.assert_allclose(values, np.array([1.0, 4.0, 16.0]) / 320, rtol=1e-3)

    def test_inverse_std_weights(self):
        std = torch.tensor([[1.0, 2.0, 4.0, 100.0]])
        mask = torch.tensor([[True, True, True, False]])
        w = inverse_std_weights(std, mask)
        assert w[0, 3] == 0 and w[mask].mean().item() == pytest.approx(1.0)
        assert w[0, 0] / w[0, 1] == pytest.approx(2.0, rel=1e-4)

    def test_validity_masks(self):
        # pure x-translation, same K: epipolar lines are the rows y = y0
        K = torch.tensor([[[100.0, 0, 64], [0, 100.0, 48], [0, 0, 1]]])
        T = torch.eye(4)[None].clone()
        T[0, 0, 3] = 0.2
        F = fundamental_from_pose(K, K, T)
        pts = torch.tensor([[[10.0, 10.0], [50.0, 40.0], [30.0, 60.0]]])
        assert epipolar_line_valid(pts, F, (96, 128)).tolist() == [[True, True, True]]
        assert epipolar_line_valid(pts, F, (48, 128)).tolist() == [[True, True, False]]  # y0 = 60 misses
        # forward motion: the epipole is the principal point, whose epipolar line is undefined
        T2 = torch.eye(4)[None].clone()
        T2[0, 2, 3] = 0.5
        F2 = fundamental_from_pose(K, K, T2)
        assert epipolar_line_valid(torch.tensor([[[64.0, 48.0], [10.0, 10.0]]]), F2, (96, 128)).tolist() == \
            [[False, True]]

    def test_caps_loss_oracle_maps_vs_random(self):
        """Translating camera parallel to a fronto-parallel plane at depth Z: the image moves by f * tx / Z. Maps
        that follow this motion give near-zero epipolar errors; random maps do not."""
        size, f, Z, tx = (192, 256), 200.0, 4.0, -0.4  # image shift f * tx / Z = -20 px
        K = torch.tensor([[[f, 0, 128], [0, f, 96], [0, 0, 1]]])
        T = torch.eye(4)[None].clone()
        T[0, 0, 3] = tx
        T[0, 1, 3] = 0.1  # diagonal epipolar lines: shift (-20, 5)
        maps0, maps1 = random_field_maps(size, (-20.0, 5.0))
        pts = pixels.pixel_grid(12, 16, 16) + 3.0
        pts0 = pts[pixels.inside_image(pts + torch.tensor([-20.0, 5.0]), size, border=8)][None]
        pts1 = pts[pixels.inside_image(pts - torch.tensor([-20.0, 5.0]), size, border=8)][None]
        data = {"image0": torch.zeros(1, 3, *size), "image1": torch.zeros(1, 3, *size), "K0": K, "K1": K,
                "T_0to1": T, "points0": pts0, "points1": pts1}
        loss_fn = CAPSLoss()
        good, m_good = loss_fn({"coarse0": maps0["coarse"], "fine0": maps0["fine"], "coarse1": maps1["coarse"],
                                "fine1": maps1["fine"]}, data)
        torch.manual_seed(0)
        rand = {k: torch.randn_like(v) for k, v in {"coarse0": maps0["coarse"], "fine0": maps0["fine"],
                                                    "coarse1": maps1["coarse"], "fine1": maps1["fine"]}.items()}
        bad, m_bad = loss_fn(rand, data)
        assert m_good["fine_error"] < 1.0 and m_bad["fine_error"] > 5 * m_good["fine_error"]
        assert good["total"] < 0.3 * bad["total"]
        assert good["fine"].item() < 0.005

    def test_unknown_loss_key(self):
        with pytest.raises(ConfigError):
            CAPSLoss({"temprature": 0.1})


# ------------------------------------------------------------------------------------------------ training
def plane_batch(scene, pairs=((0, 2), (1, 3)), num_queries=200, sift_fraction=0.9):
    from featlab.training.caps import PosedPairStream
    from featlab.conf import resolve_conf
    from featlab.training.caps import default_conf

    conf = resolve_conf(default_conf, {"data": {"image_size": [96, 128], "num_queries": num_queries,
                                                "sift_fraction": sift_fraction, "photometric": {"enabled": False}}})
    stream = PosedPairStream(PlanePairs(scene, list(pairs)), conf.data, seed=0)
    items = [stream[i] for i in range(len(pairs))]
    return torch.utils.data.default_collate(items)


class TestTraining:
    def test_posed_pair_stream(self, scene):
        from featlab.training.caps import resize_with_intrinsics

        batch = plane_batch(scene, num_queries=64)
        assert tuple(batch["image0"].shape) == (2, 3, 96, 128) and tuple(batch["points1"].shape) == (2, 64, 2)
        assert batch["points0"].min() >= 0 and (batch["points0"][..., 0] <= 128).all()
        # resizing scales K with the image: a point and its projection scale together
        img, K = resize_with_intrinsics(np.zeros((96, 128, 3), np.uint8), scene[2], (48, 32))
        assert img.shape == (48, 32, 3)
        X = np.array([0.3, -0.2, 2.0])
        p_full, p_small = scene[2] @ X, K @ X
        np.testing.assert_allclose(p_small[:2] / p_small[2], p_full[:2] / p_full[2] * [32 / 128, 48 / 96])

    def test_queries_are_the_sift_extractors_keypoints(self, scene):
        """Training queries come from featlab's one SIFT extractor (its pixel conversion, 0.25 px correction
        included), not from a second OpenCV SIFT: with sift_fraction 1 and as many queries as distinct keypoints,
        the queries are exactly the extractor's keypoints."""
        from featlab.extractors import build_extractor
        from featlab.io.image import image_to_tensor
        from featlab.training.caps import resize_with_intrinsics

        image, _ = resize_with_intrinsics(scene[0][0], scene[2], (96, 128))
        with torch.no_grad():
            kps = build_extractor("sift", {"max_keypoints": -1})({"image": image_to_tensor(image)})["keypoints"]
        expected = np.unique(kps[0].numpy(), axis=0)
        assert len(expected) > 20
        batch = plane_batch(scene, pairs=((0, 2),), num_queries=len(expected), sift_fraction=1.0)
        np.testing.assert_array_equal(np.unique(batch["points0"][0].numpy(), axis=0), expected)

    def test_gradients_finite_and_steps_lower_loss(self, scene):
        torch.manual_seed(0)
        batch = plane_batch(scene)
        net = ResUNet(TINY)
        loss_fn = CAPSLoss()
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        losses = []
        for step in range(12):
            maps = net(torch.cat([batch["image0"], batch["image1"]]))
            pred = {"coarse0": maps["coarse"][:2], "coarse1": maps["coarse"][2:],
                    "fine0": maps["fine"][:2], "fine1": maps["fine"][2:]}
            terms, metrics = loss_fn(pred, batch)
            opt.zero_grad()
            terms["total"].backward()
            if step == 0:
                grads = [p.grad for p in net.parameters() if p.grad is not None]
                assert grads and all(torch.isfinite(g).all() for g in grads)
                assert sum(g.abs().sum() for g in grads) > 0
            opt.step()
            losses.append(terms["total"].item())
        assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])

    def test_bf16_autocast_loss_is_float32(self, scene):
        batch = plane_batch(scene, num_queries=32)
        net = ResUNet(TINY)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            maps = net(torch.cat([batch["image0"], batch["image1"]]))
            terms, _ = CAPSLoss()({"coarse0": maps["coarse"][:2], "coarse1": maps["coarse"][2:],
                                   "fine0": maps["fine"][:2], "fine1": maps["fine"][2:]}, batch)
        assert maps["fine"].dtype == torch.bfloat16 and terms["total"].dtype == torch.float32

    def test_tiny_training_run(self, scene, tmp_path):
        from featlab.extractors import build_extractor
        from featlab.training import loop
        from featlab.training.caps import CAPSTask

        conf = {"model": TINY, "data": {"image_size": [96, 128], "num_queries": 64, "num_workers": 0},
                "val": {"max_keypoints": 128},
                "train": {"max_steps": 3, "val_every": 2, "checkpoint_every": 2, "log_every": 1, "progress": False,
                          "dtype": "float32"}}
        task = CAPSTask(conf, train_pairs=PlanePairs(scene, [(0, 2), (1, 3), (2, 4)]),
                        val_pairs=PlanePairs(scene, [(3, 5), (0, 1)]))
        summary = loop.train(task, task.conf.train, tmp_path / "run")
        assert summary["step"] == 3
        records = loop.read_metrics(tmp_path / "run" / "metrics.jsonl")
        val = [r for r in records if r["kind"] == "val"]
        assert len(val) == 3 and {"val/auc@10", "val/fine_error", "val/sift_auc@10"} <= set(val[-1])
        train_rec = [r for r in records if r["kind"] == "train"]
        assert all(np.isfinite(r["loss"]) for r in train_rec) and "loss_fine" in train_rec[0]
        weights = tmp_path / "run" / "final.safetensors"
        meta = json.loads(weights.with_suffix(".json").read_text())
        assert meta["model"]["widths"] == [16, 32, 64]
        ext = build_extractor("caps-sift", {"weights": str(weights), "max_keypoints": 50})
        pred = ext({"image": torch.from_numpy(scene[0][0]).permute(2, 0, 1)[None].float() / 255})
        assert pred["descriptors"].shape[-1] == 64

    def test_cli_train_on_rgbd_folder(self, scene, tmp_path):
        """`featlab train caps --data SEQ` on a 7-Scenes-layout folder written from the plane scene."""
        from featlab.cli import main

        images, depths, K, poses = scene
        seq = tmp_path / "seq"
        seq.mkdir()
        for i in range(len(images)):
            cv2.imwrite(str(seq / f"frame-{i:06d}.color.png"), cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
            cv2.imwrite(str(seq / f"frame-{i:06d}.depth.png"), (depths[i] * 1000).round().astype(np.uint16))
            np.savetxt(seq / f"frame-{i:06d}.pose.txt", poses[i])
        np.savetxt(seq / "camera-intrinsics.txt", K)
        run = tmp_path / "run"
        args = ["train", "caps", "--data", str(seq), "-o", str(run), "model.depth=18", "model.widths=[16,32,64]",
                "model.stem_width=16", "model.coarse_dim=16", "model.fine_dim=16", "data.rgbd.focal=100.0",
                "data.image_size=[96,128]", "data.num_queries=32", "data.num_workers=0", "data.frame_range=[0,5]",
                "data.gaps=[2]", "val.frame_range=[3,6]", "val.gaps=[2]", "val.num_pairs=1", "train.max_steps=2",
                "train.val_every=2", "train.progress=false", "train.dtype=float32"]
        assert main(args) == 0
        assert (run / "best.safetensors").is_file() and (run / "config.yaml").is_file()
        assert main(["train", "caps", "-o", str(tmp_path / "nodata")]) == 2  # no --data: one-line error


    def test_cli_train_on_colmap_and_synthetic_rooms(self, tmp_path):
        """`featlab train caps --colmap PROJECT data.synthetic.scenes=1`: posed COLMAP views and a rendered room,
        no sequence; the room's pairs are labelled synthetic; Herz-Jesus-P25 is refused as training data."""
        from scenes import write_colmap_text

        from featlab.cli import main
        from featlab.conf import resolve_conf
        from featlab.datasets.render import render_collection
        from featlab.training.caps import default_conf, training_pairs

        room = write_colmap_text(render_collection({"seed": 5, "num_frames": 6, "image_size": [96, 128]}),
                                 tmp_path / "room")
        conf = resolve_conf(default_conf, {"data": {"colmap": [str(room)], "colmap_repeat": 2, "image_size": [96, 128],
                                                    "synthetic": {"scenes": 1, "frames": 8, "min_gap": 1,
                                                                  "max_gap": 2}}})
        pairs = training_pairs(conf)
        items = [pairs[k] for k in range(len(pairs))]
        colmap_items = [it for it in items if not it.get("synthetic")]
        rendered = [it for it in items if it.get("synthetic")]
        assert colmap_items and rendered and all(it["name"].startswith("synthetic:") for it in rendered)
        assert len(colmap_items) % 2 == 0  # each COLMAP pair twice
        assert all(it["image0"].shape == (96, 128, 3) and np.allclose(it["T_0to1"][3], [0, 0, 0, 1]) for it in items)
        run = tmp_path / "run"
        args = ["train", "caps", "--colmap", str(room), "-o", str(run), "model.depth=18", "model.widths=[16,32,64]",
                "model.stem_width=16", "model.coarse_dim=16", "model.fine_dim=16", "data.image_size=[96,128]",
                "data.num_queries=32", "data.num_workers=0", "data.synthetic.scenes=1", "data.synthetic.frames=8",
                "data.synthetic.min_gap=1", "data.synthetic.max_gap=2", "val.num_pairs=0", "train.max_steps=2",
                "train.progress=false", "train.dtype=float32"]
        assert main(args) == 0 and (run / "final.safetensors").is_file()
        hj = tmp_path / "posed" / "strecha" / "Herz-Jesus-P25"
        hj.parent.mkdir(parents=True)
        room.rename(hj)
        assert main(args[:3] + [str(hj)] + ["-o", str(tmp_path / "hj")] + args[5:]) == 2


# ------------------------------------------------------------------------------------------------ extractor
@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    from featlab.extractors.caps import save_caps_weights

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("caps") / "tiny.safetensors"
    save_caps_weights(ResUNet(TINY), path, extra={"note": "random"})
    return path


class TestExtractor:
    def test_output_contract(self, tiny_weights):
        from skimage.data import astronaut

        from featlab.extractors import build_extractor, extract_image

        img = cv2.resize(astronaut(), (160, 120))
        ext = build_extractor("caps-sift", {"weights": str(tiny_weights), "max_keypoints": 100})
        assert ext.descriptor_dim == 64
        pred = ext({"image": torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255})
        n = pred["keypoints"].shape[1]
        assert 10 < n <= 100
        assert tuple(pred["descriptors"].shape) == (1, n, 64) and pred["descriptors"].dtype == torch.float32
        assert tuple(pred["keypoint_scores"].shape) == (1, n)
        torch.testing.assert_close(pred["descriptors"].norm(dim=-1), torch.ones(1, n))
        # each level is normalised before the concatenation: both halves have norm 1/sqrt(2)
        torch.testing.assert_close(pred["descriptors"][..., :32].norm(dim=-1), torch.full((1, n), 0.5 ** 0.5))
        # same keypoints as SIFT alone
        sift = build_extractor("sift", {"max_keypoints": 100})
        torch.testing.assert_close(pred["keypoints"], sift({"image": torch.from_numpy(img).permute(2, 0, 1)[None]
                                                            .float() / 255})["keypoints"])
        out = extract_image(ext, img, resize=(64, 80))
        assert out["descriptors"].shape[1] == 64 and out["keypoints"][:, 0].max() <= 160
        # a batch of two images with different keypoint counts: padded entries are masked and zero
        flat = np.full_like(img, 128)
        flat[40:80, 50:110] = 30
        batch = torch.from_numpy(np.stack([img, flat])).permute(0, 3, 1, 2).float() / 255
        pred2 = ext({"image": batch})
        masks = pred2["keypoint_masks"]
        assert masks[0].all() and not masks[1].all()
        assert (pred2["descriptors"][1][~masks[1]] == 0).all()
        torch.testing.assert_close(pred2["descriptors"][1][masks[1]].norm(dim=-1), torch.ones(int(masks[1].sum())))

    def test_generic_detector_and_bf16(self, tiny_weights):
        from skimage.data import astronaut

        from featlab.extractors import build_extractor

        img = torch.from_numpy(cv2.resize(astronaut(), (160, 120))).permute(2, 0, 1)[None].float() / 255
        ext = build_extractor("caps", {"weights": str(tiny_weights), "detector": "orb", "max_keypoints": 64,
                                       "detector_conf": {"fast_threshold": 10}})
        pred = ext({"image": img})
        assert pred["keypoints"].shape[1] > 0 and pred["descriptors"].shape[-1] == 64
        fast = build_extractor("caps", {"weights": str(tiny_weights), "detector": "orb", "max_keypoints": 64,
                                        "detector_conf": {"fast_threshold": 10}, "dtype": "bfloat16",
                                        "channels_last": True})
        pred_bf16 = fast({"image": img})
        cos = (pred["descriptors"] * pred_bf16["descriptors"]).sum(-1)
        assert cos.min() > 0.97

    def test_missing_or_bad_weights(self, tmp_path, tiny_weights):
        from featlab.extractors import build_extractor

        with pytest.raises(InputError, match="featlab train caps"):
            build_extractor("caps-sift", {"weights": str(tmp_path / "none.safetensors")})
        lonely = tmp_path / "lonely.safetensors"
        lonely.write_bytes(tiny_weights.read_bytes())
        with pytest.raises(InputError, match="sidecar"):
            build_extractor("caps-sift", {"weights": str(lonely)})
        corrupt = tmp_path / "corrupt.safetensors"
        corrupt.write_bytes(b"not a safetensors file")
        corrupt.with_suffix(".json").write_text(tiny_weights.with_suffix(".json").read_text())
        with pytest.raises(InputError, match="cannot read"):
            build_extractor("caps-sift", {"weights": str(corrupt)})
        with pytest.raises(ConfigError):
            build_extractor("caps", {"weights": str(tiny_weights), "detector": "caps-sift"})


def test_shipped_caps_weights_describe_sift_keypoints():
    from skimage.data import astronaut

    from featlab.extractors import build_extractor, extract_image

    image = astronaut()[::2, ::2].copy()  # 256 x 256
    ext = build_extractor("caps-sift", {"max_keypoints": 80})  # featlab/weights/caps-resnet18
    sift = extract_image(build_extractor("sift", {"max_keypoints": 80}), image, resize=None)
    out = extract_image(ext, image, resize=None)
    np.testing.assert_allclose(out["keypoints"], sift["keypoints"])
    assert out["descriptors"].shape == (len(sift["keypoints"]), 256)
    np.testing.assert_allclose(np.linalg.norm(out["descriptors"], axis=1), 1.0, atol=1e-5)
