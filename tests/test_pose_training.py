"""pose-sift training (featlab train pose): the sparse epipolar loss, the split of posed collections, the task end
to end on a tiny COLMAP model, and fine-tuning from shipped weights."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from featlab.datasets import splits
from featlab.errors import ConfigError
from featlab.losses.epipolar_sparse import EpipolarSparseLoss, epipolar_sparse_loss, line_distances
from scenes import write_colmap_text


# ------------------------------------------------------------------------------------------------- helpers
def two_view_scene(n: int = 60, seed: int = 0):
    """Random 3D points seen by two cameras: keypoints (featlab pixels), K, T_0to1, image size (H, W)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 0.8, 0.5], dtype=torch.float64)
    X[:, 2] += 5.0
    K = torch.tensor([[200.0, 0.0, 160.0], [0.0, 200.0, 120.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    a = 0.25
    R = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]],
                     dtype=torch.float64)
    t = torch.tensor([-1.0, 0.1, 0.2], dtype=torch.float64)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = R, t

    def project(P):
        x = P @ K.T
        return x[:, :2] / x[:, 2:]

    return project(X), project(X @ R.T + t), K, T, (240, 320)


def batch_of(k0, k1, K, T, size, dtype=torch.float32):
    return {"keypoints0": k0[None].to(dtype), "keypoints1": k1[None].to(dtype), "K0": K[None], "K1": K[None],
            "T_0to1": T[None], "image_size0": torch.tensor(size), "image_size1": torch.tensor(size)}


def unit(x):
    return torch.nn.functional.normalize(x, dim=-1)


# ----------------------------------------------------------------------------------------------------- loss
class TestEpipolarSparseLoss:
    def test_zero_on_the_lines_and_growing_off_them(self):
        k0, k1, K, T, size = two_view_scene()
        d = unit(torch.randn(len(k0), 64, generator=torch.Generator().manual_seed(1)))
        pred = {"descriptors0": d[None], "descriptors1": d[None]}
        conf = {"temperature": 0.01}
        at_gt, m = epipolar_sparse_loss(pred, batch_of(k0, k1, K, T, size), conf)
        assert float(at_gt["total"]) < 1e-5 and float(m["epipolar_error"]) < 1e-2
        # image-1 keypoints moved off their epipolar lines (along the line normal) by growing distances
        F = torch.linalg.inv(K).T @ torch.linalg.cross(T[:3, 3].expand(3, 3), torch.eye(3, dtype=torch.float64)).T \
            @ T[:3, :3] @ torch.linalg.inv(K)  # [t]_x R: the columns of cross(t, e_i)
        lines = torch.cat([k0, torch.ones(len(k0), 1, dtype=torch.float64)], 1) @ F.T
        normals = unit(lines[:, :2])
        totals = []
        for shift in (1.0, 4.0, 16.0):
            moved = batch_of(k0, k1 + shift * normals, K, T, size)
            losses, metrics = epipolar_sparse_loss(pred, moved, conf)
            totals.append(float(losses["total"]))
            assert float(metrics["epipolar_error"]) == pytest.approx(shift, rel=0.05)
        assert totals[0] > 100 * float(at_gt["total"]) and totals[0] < totals[1] < totals[2]
        # wrong matches (descriptors shuffled) cost far more than right ones
        perm = torch.randperm(len(k0), generator=torch.Generator().manual_seed(2))
        wrong, _ = epipolar_sparse_loss({"descriptors0": d[None], "descriptors1": d[perm][None]},
                                        batch_of(k0, k1, K, T, size), conf)
        assert float(wrong["expected"]) > 1e3 * float(at_gt["expected"])

    def test_line_distances_match_epipolar_errors(self):
        from featlab.geometry.epipolar import epipolar_distance, fundamental_from_pose

        k0, k1, K, T, _ = two_view_scene(10)
        F = fundamental_from_pose(K, K, T)
        D = line_distances(k0, k1 + 3.0, F)
        np.testing.assert_allclose(torch.diagonal(D).numpy(),
                                   epipolar_distance(k0, k1 + 3.0, F, symmetric=False).numpy(), rtol=1e-9)

    def test_finite_gradients_float64(self):
        k0, k1, K, T, size = two_view_scene(12)
        d0 = unit(torch.randn(12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
        d1 = unit(d0 + 0.3 * torch.randn(12, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(4)))
        d0.requires_grad_(True)
        d1.requires_grad_(True)
        losses, _ = epipolar_sparse_loss({"descriptors0": d0[None], "descriptors1": d1[None]},
                                         batch_of(k0, k1 + 2.0, K, T, size, torch.float64))
        losses["total"].backward()
        for grad in (d0.grad, d1.grad):
            assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0

    def test_masks_padding_and_lines_outside(self):
        k0, k1, K, T, size = two_view_scene(20)
        d = unit(torch.randn(20, 16, generator=torch.Generator().manual_seed(5)))
        data = batch_of(k0, k1, K, T, size)
        clean, _ = epipolar_sparse_loss({"descriptors0": d[None], "descriptors1": d[None]}, data,
                                        {"temperature": 0.01})
        # padding rows with garbage positions and descriptors equal to real ones change nothing when masked
        pad = torch.tensor([[5000.0, -300.0]])
        data_p = batch_of(torch.cat([k0, pad.double()]), torch.cat([k1, pad.double()]), K, T, size)
        data_p["masks0"] = data_p["masks1"] = torch.tensor([[True] * 20 + [False]])
        dp = torch.cat([d, d[:1]])[None]
        padded, _ = epipolar_sparse_loss({"descriptors0": dp, "descriptors1": dp}, data_p, {"temperature": 0.01})
        assert float(padded["total"]) == pytest.approx(float(clean["total"]), abs=1e-7)
        # a query whose epipolar line misses image 1 enters no term: its loss does not count
        far = batch_of(k0 + torch.tensor([1e5, 0.0], dtype=torch.float64), k1, K, T, size)
        _, metrics = epipolar_sparse_loss({"descriptors0": d[None], "descriptors1": d[None]}, far,
                                          {"temperature": 0.01, "symmetric": False})
        assert float(metrics["valid_fraction"]) < 1.0

    def test_bad_config(self):
        with pytest.raises(ConfigError):
            EpipolarSparseLoss({"temperature": 0.0})
        with pytest.raises(ConfigError):
            EpipolarSparseLoss({"cycle_weight": -1.0})
        with pytest.raises(ConfigError):
            EpipolarSparseLoss({"tempreature": 0.1})

    def test_a_few_steps_on_one_posed_pair_lower_it(self):
        """h of the pose-sift model on real patches of a rendered posed pair: 15 Adam steps lower the loss."""
        from featlab.datasets.posed import PosedPairs
        from featlab.datasets.render import render_collection
        from featlab.extractors.patch_residual import PatchResidualNet, extract_patches
        from featlab.training.patch_residual import build_g, describe
        from featlab.conf import resolve_conf

        torch.manual_seed(0)
        coll = render_collection({"num_frames": 3, "image_size": [240, 320], "step": 6.0, "seed": 1})
        item = PosedPairs(coll, [(0, 2)], {"depth": False})[0]
        g = build_g(resolve_conf({"name": "rootsift", "conf": None}, {}), 300)
        net = PatchResidualNet()
        feats = [describe(g, item[f"image{v}"]) for v in "01"]
        patches = [extract_patches(f["gray"], f["keypoints"], f["scales"], f["oris"]) for f in feats]
        data = {"keypoints0": feats[0]["keypoints"][None], "keypoints1": feats[1]["keypoints"][None],
                "K0": torch.as_tensor(item["K0"])[None], "K1": torch.as_tensor(item["K1"])[None],
                "T_0to1": torch.as_tensor(item["T_0to1"])[None], "image_size0": torch.tensor([240, 320]),
                "image_size1": torch.tensor([240, 320])}
        opt = torch.optim.Adam(net.h.parameters(), lr=1e-3)
        loss_fn = EpipolarSparseLoss({"cycle_weight": 0.0})
        net.train()
        values = []
        for _ in range(15):
            h = net.h(torch.cat(patches))
            n0 = len(patches[0])
            pred = {"descriptors0": h[None, :n0], "descriptors1": h[None, n0:]}
            loss = loss_fn(pred, data)[0]["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()
            values.append(float(loss.detach()))
        assert np.mean(values[-3:]) < 0.9 * np.mean(values[:3])


# --------------------------------------------------------------------------------------------------- splits
class TestCollectionSplit:
    @pytest.mark.parametrize("n,fractions,buffer", [(30, (0.6, 0.2, 0.2), 1), (12, (0.6, 0.2, 0.2), 1),
                                                     (100, (0.7, 0.1, 0.2), 10), (7, (1, 0, 1), 2)])
    def test_parts_disjoint_with_buffers(self, n, fractions, buffer):
        order = list(np.random.default_rng(n).permutation(n))
        parts = splits.split_views(order, fractions, buffer)
        sets = {k: set(v) for k, v in parts.items()}
        assert not (sets["train"] & sets["heldout"]) and not (sets["select"] & sets["heldout"])
        assert not (sets["train"] & sets["select"])
        for k, f in zip(splits.VIEW_PARTS, fractions):
            assert (len(sets[k]) > 0) == (f > 0)
        # buffers: no held-out view is within `buffer` positions of a train or select view in the order
        pos = {v: p for p, v in enumerate(order)}
        held = [pos[v] for v in sets["heldout"]]
        others = [pos[v] for v in sets["train"] | sets["select"]]
        assert min(abs(a - b) for a in held for b in others) > buffer
        assert len(set().union(*sets.values())) == n - buffer * (sum(f > 0 for f in fractions) - 1)

    def test_too_few_views(self):
        with pytest.raises(ConfigError):
            splits.split_views(range(3), (0.6, 0.2, 0.2), 1)
        with pytest.raises(ConfigError):
            splits.split_views(range(30), (0.6, -0.2, 0.2), 1)

    def test_viewpoint_order_is_the_arc(self):
        """Cameras on an arc around a point, given in a shuffled order, come back ordered along the arc."""
        angles = np.radians(np.arange(0, 150, 10.0))
        perm = np.random.default_rng(0).permutation(len(angles))
        T = []
        for a in angles[perm]:
            c = np.array([5 * np.sin(a), 0.0, -5 * np.cos(a)])  # centre; looks at the origin, y down
            z = -c / np.linalg.norm(c)
            x = np.cross([0.0, -1.0, 0.0], z)
            x /= np.linalg.norm(x)
            y = np.cross(z, x)
            R = np.stack([x, y, z])
            M = np.eye(4)
            M[:3, :3], M[:3, 3] = R, -R @ c
            T.append(M)
        order = splits.viewpoint_order(np.stack(T))
        got = angles[perm][order]
        assert np.all(np.diff(got) > 0) or np.all(np.diff(got) < 0)

    def test_collection_parts_and_pairs_never_cross(self, colmap_root):
        from featlab.training.pose import SplitCollection

        for split in ("frame", "viewpoint"):
            s = SplitCollection({"root": str(colmap_root), "split": split, "gaps": [1, 2, 3, 4, 5]}, 0, None, False)
            held = set(s.parts["heldout"])
            assert held and s.pairs["heldout"]
            for part in ("train", "select"):
                assert not held & set(s.parts[part])
                assert all(i not in held and j not in held for i, j in s.pairs[part])
            assert all(i in held and j in held for i, j in s.pairs["heldout"])

    def test_guard_refuses_evaluation_frames(self, tmp_path):
        conf = {"data": {"collections": [{"root": str(tmp_path / "posed/strecha/Herz-Jesus-P25")}]}}
        with pytest.raises(ConfigError, match="evaluation-only"):
            splits.check_sources(splits.sources_of(conf))
        seq = tmp_path / "7scenes_redkitchen"
        conf = {"data": {"collections": [{"root": str(seq), "split": "ranges",
                                          "ranges": {"train": [0, 350], "select": [360, 450]}}]}}
        with pytest.raises(ConfigError, match="evaluation-only frames"):
            splits.check_sources(splits.sources_of(conf))
        conf["data"]["collections"][0]["ranges"]["select"] = [360, 400]
        splits.check_sources(splits.sources_of(conf))


# ------------------------------------------------------------------------------------------------ end to end


@pytest.fixture(scope="module")
def colmap_root(tmp_path_factory):
    from featlab.datasets.render import render_collection

    rendered = render_collection({"num_frames": 14, "image_size": [192, 256], "step": 4.0, "seed": 3})
    return write_colmap_text(rendered, tmp_path_factory.mktemp("posecolmap") / "room")


def _train(args, capsys):
    from featlab.cli import main

    rc = main(["train", "pose", *args])
    return rc, capsys.readouterr().out


TINY = ["train.max_steps=3", "train.val_every=3", "train.checkpoint_every=3", "train.progress=false",
        "handcrafted.max_keypoints=96", "val.max_keypoints=128", "val.fusion_steps=3", "train.num_threads=1",
        "data.pairs_per_step=1", "val.photos=null"]


class TestTrainPose:
    def test_end_to_end_on_a_tiny_colmap_model(self, colmap_root, tmp_path, capsys):
        run = tmp_path / "run"
        rc, out = _train(["--data", str(colmap_root), "--split", "viewpoint", "--gaps", "1", "2", "3",
                          "--image-size", "256", "-o", str(run), *TINY], capsys)
        assert rc == 0
        report = json.loads((run / "heldout.json").read_text())
        assert report["pairs"]["room"] > 0
        for key in ("before", "after", "rootsift"):
            assert 0.0 <= report[key]["room"]["auc@10"] <= 1.0
        # no --init: the initial model is RootSIFT alone (fusion b = 0), so "before" is RootSIFT's AUC exactly
        assert report["before"]["room"] == {**report["rootsift"]["room"], "fusion_b": 0.0}
        assert "held-out pairs" in out and (run / "best.safetensors").is_file()
        meta = json.loads((run / "best.json").read_text())
        views = meta["training"]["collections"][0]["views"]
        assert not set(views["heldout"]) & (set(views["train"]) | set(views["select"]))
        records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert any("val/auc_mean" in r and "val/g_auc@10" in r for r in records)
        assert any(math.isfinite(r.get("loss", float("nan"))) for r in records)
        # the weights load as the pose-sift extractor and describe an image with unit 256-d rows
        from featlab.extractors import build_extractor
        from featlab.io.image import image_to_tensor, read_image

        ext = build_extractor("pose-sift", {"weights": str(run / "best.safetensors"), "max_keypoints": 50})
        img = read_image(sorted((colmap_root / "images").iterdir())[0])
        pred = ext({"image": image_to_tensor(img)})
        # 256-d (g and h) at a fitted fusion with h's weight b > 0; 128-d (RootSIFT exactly) at b = 0
        assert pred["descriptors"].shape[-1] == (256 if meta["fusion"][1] > 0 else 128) == ext.descriptor_dim
        np.testing.assert_allclose(pred["descriptors"][0].norm(dim=-1).numpy(), 1.0, atol=1e-5)

    def test_init_loads_the_weights_exactly(self, colmap_root, tmp_path, capsys):
        from featlab.extractors.patch_residual import PatchResidualNet, save_patch_residual_weights
        from featlab.training.pose import PoseTask

        torch.manual_seed(7)
        net = PatchResidualNet()
        for p in net.parameters():
            p.data.add_(0.01 * torch.randn_like(p))
        net.set_fusion(0.6, 0.8)
        path = save_patch_residual_weights(net, tmp_path / "init.safetensors",
                                           {"name": "rootsift", "conf": {"max_keypoints": 96}})
        conf = {"init": str(path), "handcrafted": {"max_keypoints": 96}, "val": {"photos": None, "max_pairs": 1},
                "data": {"collections": [{"root": str(colmap_root)}]}}
        task = PoseTask(conf)
        for key, value in net.state_dict().items():
            assert torch.equal(task.model.state_dict()[key], value), key
        assert task.init_info["path"] == str(path)
        # a mismatched model section is refused, not silently half-loaded
        with pytest.raises(ConfigError, match="model config"):
            PoseTask({**conf, "model": {"h_dim": 64}})

    def test_epipolar_precision_needs_the_true_pose(self, colmap_root):
        """The selection's epipolar precision: high for RootSIFT on exact rendered poses, low once the pose is
        wrong (so it measures matches against the geometry, not the matcher alone); the criterion fits the fusion."""
        from featlab.training.pose import PoseTask

        conf = {"handcrafted": {"max_keypoints": 96}, "data": {"collections": [{"root": str(colmap_root)}]},
                "val": {"photos": None, "max_pairs": 2, "max_keypoints": 256, "fusion_steps": 3,
                        "criterion": "epi_precision"}}
        task = PoseTask(conf)
        assert task.val_pairs
        with torch.no_grad():
            true = task.pair_scores(task.val_pairs, [0.0])
            wrong_pairs = []
            for p in task.val_pairs:
                T = np.array(p["T_0to1"])
                c, s = math.cos(math.radians(15)), math.sin(math.radians(15))
                T[:3, :3] = np.array([[1, 0, 0], [0, c, -s], [0, s, c]]) @ T[:3, :3]
                wrong_pairs.append({**p, "T_0to1": T})
            wrong = task.pair_scores(wrong_pairs, [0.0])
            metrics = task.validate()
        assert np.all(true["correct"] <= true["matches"]) and true["matches"].sum() > 0
        np.testing.assert_array_equal(true["matches"], wrong["matches"])  # the same matches, another geometry
        p_true = true["correct"].sum() / true["matches"].sum()
        p_wrong = wrong["correct"].sum() / wrong["matches"].sum()
        assert p_true > 0.5 and p_wrong < 0.5 * p_true
        assert 0.0 <= metrics["epi_precision"] <= 1.0
        assert metrics["epi_precision"] == max(metrics[f"phi{d}/epi_precision"] for d in (0, 45, 90))
        with pytest.raises(ConfigError, match="criterion"):
            PoseTask({**conf, "val": {**conf["val"], "criterion": "precision"}})

    def test_init_from_shipped_pose_sift(self, colmap_root):
        from featlab.conf import load_yaml
        from featlab.extractors.patch_residual import load_patch_residual_weights
        from featlab.io.weights import SHIPPED_WEIGHTS_DIR
        from featlab.training.pose import DEFAULT_CONFIG, PoseTask

        net, meta = load_patch_residual_weights(SHIPPED_WEIGHTS_DIR / "pose-sift.safetensors")
        # the recipe's model section is the shipped model's, so `featlab train pose --init pose-sift` (the
        # walk-through) needs no model.* overrides
        assert meta["model"] == {**meta["model"], **load_yaml(DEFAULT_CONFIG)["model"]}
        assert meta["fusion"][1] > 0 and meta["handcrafted"]["name"] == "rootsift"  # h has weight: trained, selected
        task = PoseTask({"init": "pose-sift", "model": meta["model"], "val": {"photos": None, "max_pairs": 1},
                         "data": {"collections": [{"root": str(colmap_root)}]}})
        for key, value in net.state_dict().items():
            assert torch.equal(task.model.state_dict()[key], value), key

    def test_errors(self, tmp_path, capsys):
        from featlab.cli import main

        assert main(["train", "pose", "-o", str(tmp_path / "r"), "data.collections=[]"]) == 2
        assert main(["train", "pose", "--data", str(tmp_path), "-o", str(tmp_path / "r2")]) == 2
        err = capsys.readouterr().err
        assert "no posed collection featlab reads" in err
