"""depthkp (learned keypoints and descriptors on depth maps): network, sampling layer, pose-derived positives,
losses, training task, extractor contract and shipped weights. Fast, on tiny synthetic depth maps."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from featlab.conf import resolve_conf
from featlab.extractors import build_extractor, extract_depth
from featlab.extractors.depthkp import load_depthkp_weights, save_depthkp_weights
from featlab.geometry.depth import backproject, project, transform_points
from featlab.losses.depthkp import (contrastive_loss, correct_match_labels, depth_correspondences, depthkp_loss,
                                    score_loss)
from featlab.nn.depthnet import DepthKPNet, encode_depth, sample_proposals, valid_cells
from featlab.training.depthkp import propose

TINY = {"channels": [4, 8, 8, 8], "head_channels": 8, "descriptor_dim": 16}


def _K(h, w, f=60.0):
    return torch.tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])


def _pose(angle_deg=5.0, t=(0.1, -0.05, 0.02)):
    a = np.radians(angle_deg)
    T = np.eye(4)
    T[:3, :3] = [[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]]
    T[:3, 3] = t
    return T


@pytest.fixture(scope="module")
def rendered_pair():
    """Two views of a synthetic rendered room (exact depth, K, poses) at 48x64, as a batch of one pair."""
    from featlab.datasets.render import render_collection

    coll = render_collection({"num_frames": 4, "image_size": [48, 64], "seed": 3, "step": 4.0})
    d = [torch.from_numpy(coll.load_depth(k))[None, None] for k in (0, 2)]
    K = torch.from_numpy(coll.K[0]).float()[None]
    return {"depth0": d[0], "depth1": d[1], "K0": K, "K1": K.clone(),
            "T_0to1": torch.from_numpy(coll.relative_pose(0, 2)).float()[None]}


# ------------------------------------------------------------------------------------------------- geometry
def test_lift_transform_project_round_trips():
    g = torch.Generator().manual_seed(0)
    K = _K(48, 64)[None]
    pts = torch.rand(1, 50, 2, generator=g) * torch.tensor([64.0, 48.0])
    z = 1 + 3 * torch.rand(1, 50, generator=g)
    T = torch.from_numpy(_pose()).float()[None]
    X1 = transform_points(T, backproject(pts, z, K))
    X0 = transform_points(torch.linalg.inv(T), X1)
    back, z0 = project(X0, K)
    assert torch.allclose(back, pts, atol=1e-3)
    assert torch.allclose(z0, z, atol=1e-4)


def test_positives_are_depth_consistent_and_occluded_points_never_positives():
    """Same camera in both views; view 1 has an occluder (1 m) over its left half in front of the 4 m wall that
    view 0 sees: left-half points are occluded in view 1 and never positives, right-half points are."""
    h, w = 32, 40
    depth0 = torch.full((1, 1, h, w), 4.0)
    depth1 = depth0.clone()
    depth1[..., : w // 2] = 1.0
    depth0[..., 0, :] = 0.0  # no depth in view 0's top row: no correspondence there either
    K = _K(h, w)[None]
    T = torch.eye(4)[None]
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    pts = torch.stack([xs, ys], -1).reshape(1, -1, 2)
    points1, valid = depth_correspondences(pts, depth0, depth1, K, K, T, depth_tolerance=0.05)
    left = pts[0, :, 0] < w / 2
    top = pts[0, :, 1] < 1
    assert not valid[0, left].any()  # occluded: never a positive
    assert valid[0, ~left & ~top].all()
    assert not valid[0, top].any()
    assert torch.allclose(points1[0, ~left & ~top], pts[0, ~left & ~top], atol=1e-4)


def test_correspondences_follow_the_pose_on_a_rendered_pair(rendered_pair):
    """Where the rendered pair says a point is visible, its transfer lands where view 1 sees the same 3D point."""
    d = rendered_pair
    g = torch.Generator().manual_seed(1)
    pts = torch.rand(1, 300, 2, generator=g) * torch.tensor([64.0, 48.0])
    p1, valid = depth_correspondences(pts, d["depth0"], d["depth1"], d["K0"], d["K1"], d["T_0to1"])
    assert valid.sum() > 50
    back, valid_back = depth_correspondences(p1, d["depth1"], d["depth0"], d["K1"], d["K0"],
                                             torch.linalg.inv(d["T_0to1"]))
    ok = valid & valid_back
    # nearest-pixel depth sampling: the round trip is exact up to a pixel of depth quantisation
    assert (back - pts)[ok].norm(dim=-1).median() < 1.0


# ------------------------------------------------------------------------------------------------- network
def test_network_shapes_and_input_encoding():
    net = DepthKPNet(TINY)
    depth = torch.rand(2, 1, 48, 64) + 1
    depth[0, 0, :5] = 0
    out = net(depth)
    assert out["scores"].shape == (2, 1, 12, 16)
    assert out["descriptors"].shape == (2, 16, 12, 16)
    enc = encode_depth(depth)
    assert enc.shape == (2, 2, 48, 64)
    assert (enc[0, 0, :5] == 0).all() and (enc[0, 1, :5] == 0).all() and (enc[0, 1, 5:] == 1).all()
    # relief is invariant to moving the whole scene away: median subtracted
    assert torch.allclose(encode_depth(depth[1:] + 2.0), encode_depth(depth[1:]), atol=1e-5)
    with pytest.raises(ValueError):
        net(torch.rand(1, 1, 50, 64))


def test_sampling_layer_returns_top_k_in_score_order():
    h, w = 6, 8
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 1, h, w, generator=g)
    desc = torch.randn(1, 5, h, w, generator=g)
    mask = torch.ones(1, h, w, dtype=torch.bool)
    mask[0, 0, 0] = False
    logits[0, 0, 0, 0] = 100.0  # the best cell is masked (no depth): never proposed
    out = sample_proposals(logits, desc, mask, k=7, image_size=(h * 4, w * 4), nms_radius=0)
    expected = torch.sort(torch.where(mask[0], logits[0, 0], -torch.inf).flatten(), descending=True).values[:7]
    assert torch.allclose(out["logits"][0], expected)
    assert (out["keypoint_scores"][0][:-1] >= out["keypoint_scores"][0][1:]).all()
    # keypoints are the cell centres of those cells; descriptors are the cells' (unit) vectors
    flat = torch.where(mask[0], logits[0, 0], -torch.inf).flatten()
    idx = torch.argsort(flat, descending=True)[:7]
    cells = torch.stack([idx % w, idx // w], -1).float()
    assert torch.allclose(out["keypoints"][0], (cells + 0.5) * 4)
    d = desc[0].permute(1, 2, 0).reshape(-1, 5)[idx]
    assert torch.allclose(out["descriptors"][0], torch.nn.functional.normalize(d, dim=-1), atol=1e-5)
    # NMS keeps local maxima only: no two proposals are neighbours
    nms = sample_proposals(logits, desc, mask, k=-1, image_size=(h * 4, w * 4), nms_radius=1)
    kp = nms["keypoints"][0][nms["keypoint_masks"][0]]
    gaps = (kp[:, None] - kp[None]).abs().max(-1).values + torch.eye(len(kp)) * 100
    assert gaps.min() > 4.0
    # more proposals asked than cells: padded, masked
    big = sample_proposals(logits, desc, mask, k=100, image_size=(h * 4, w * 4), nms_radius=0)
    assert big["keypoints"].shape[1] == h * w and big["keypoint_masks"].sum() == h * w - 1


def test_valid_cells_need_depth():
    depth = torch.ones(1, 1, 8, 8)
    depth[..., :4, :4] = 0
    cells = valid_cells(depth, stride=4)
    assert cells.tolist() == [[[False, True], [True, True]]]


# ------------------------------------------------------------------------------------------------- losses
def test_contrastive_loss_zero_at_ideal_and_grows_when_perturbed():
    g = torch.Generator().manual_seed(0)
    n = 20
    # orthogonal unit descriptors: distance sqrt(2) > margin 1 between different points
    anchors = torch.eye(32)[:n][None]
    pts = torch.arange(n, dtype=torch.float32)[None, :, None].repeat(1, 1, 2) * 20
    valid = torch.ones(1, n, dtype=torch.bool)
    masks = torch.ones(1, n, dtype=torch.bool)
    loss, m = contrastive_loss(anchors, anchors, anchors, pts, pts, valid, masks, margin=1.0, num_negatives=5)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)
    noisy = torch.nn.functional.normalize(anchors + 0.5 * torch.randn(anchors.shape, generator=g), dim=-1)
    noisy.requires_grad_(True)
    loss2, _ = contrastive_loss(noisy, anchors, anchors, pts, pts, valid, masks, margin=1.0, num_negatives=5)
    assert loss2.item() > 0.05
    loss2.backward()
    assert torch.isfinite(noisy.grad).all()
    # an anchor without a correspondence contributes nothing
    none = torch.zeros_like(valid)
    loss3, m3 = contrastive_loss(noisy, anchors, anchors, pts, pts, none, masks)
    assert loss3.item() == 0.0 and m3["num_positives"].item() == 0


def test_score_loss_raises_correct_proposals_and_lowers_others():
    logits = torch.zeros(1, 6, requires_grad=True)
    targets = torch.tensor([[1, 0, 1, 0, 0, 1]])
    mask = torch.tensor([[True, True, True, True, False, True]])
    score_loss(logits, targets, mask).backward()
    step = -logits.grad[0]
    assert (step[targets[0].bool()] > 0).all()
    assert (step[(~targets[0].bool()) & mask[0]] < 0).all()
    assert step[4] == 0  # no correspondence: left out


def test_score_loss_on_a_rendered_pair_raises_correct_matches(rendered_pair):
    """Proposals of a synthetic rendered pair with descriptors that identify 3D points: those whose nearest
    neighbour is the true correspondence are labelled correct and a step on the score loss raises exactly them."""
    d = rendered_pair
    torch.manual_seed(0)
    net = DepthKPNet(TINY)
    out = propose(net, torch.cat([d["depth0"], d["depth1"]]), 64, 1)
    kp0, kp1 = out["keypoints"][:1], out["keypoints"][1:]
    p01, valid = depth_correspondences(kp0, d["depth0"], d["depth1"], d["K0"], d["K1"], d["T_0to1"])
    # ideal descriptors: encode the 3D world position (view-0 frame) of each keypoint
    z0 = torch.stack([d["depth0"][0, 0, int(y), int(x)] for x, y in kp0[0]])[None]
    X0 = backproject(kp0, z0, d["K0"])
    z1 = torch.stack([d["depth1"][0, 0, int(y), int(x)] for x, y in kp1[0]])[None]
    X1in0 = transform_points(torch.linalg.inv(d["T_0to1"]), backproject(kp1, z1, d["K1"]))
    enc = lambda X: torch.nn.functional.normalize(torch.cat([X, torch.ones_like(X[..., :1])], -1), dim=-1)  # noqa
    masks0, masks1 = out["keypoint_masks"][:1], out["keypoint_masks"][1:]
    correct = correct_match_labels(enc(X0), enc(X1in0), kp1, p01, valid & masks0, masks1, match_radius=4.0)
    assert correct.any() and (valid & masks0 & ~correct).any()
    assert not (correct & ~valid).any()  # never a correct match without a depth-consistent correspondence
    logits = out["logits"][:1].detach().clone().requires_grad_(True)
    before = torch.sigmoid(logits.detach())
    score_loss(logits, correct, valid & masks0).backward()
    after = torch.sigmoid(logits.detach() - 10.0 * logits.grad)
    assert (after[correct] > before[correct]).all()
    assert (after[valid & masks0 & ~correct] < before[valid & masks0 & ~correct]).all()


def _pred(net, batch, k=64):
    out = propose(net, torch.cat([batch["depth0"], batch["depth1"]]), k, 1)
    return {f"{key}{s}": v[sl] for key, v in out.items() if key != "keypoint_scores"
            for s, sl in (("0", slice(0, 1)), ("1", slice(1, 2)))}


def test_loss_is_pure_and_decreases_over_a_few_steps(rendered_pair):
    torch.manual_seed(0)
    net = DepthKPNet(TINY)
    net.eval()  # fixed BatchNorm statistics: the same input gives the same loss
    conf = {"negative_radius": 4.0, "num_negatives": 8}
    with torch.no_grad():
        a, ma = depthkp_loss(_pred(net, rendered_pair), rendered_pair, conf)
        b, mb = depthkp_loss(_pred(net, rendered_pair), rendered_pair, conf)
    assert a["total"].item() == b["total"].item() and ma["num_positives"] == mb["num_positives"]
    assert ma["num_positives"] > 10
    # random negatives are pure too: drawn from a generator seeded by data["seed"]
    rconf = {**conf, "hard_negatives": False}
    with torch.no_grad():
        r1 = depthkp_loss(_pred(net, rendered_pair), {**rendered_pair, "seed": 5}, rconf)[0]["total"]
        r2 = depthkp_loss(_pred(net, rendered_pair), {**rendered_pair, "seed": 5}, rconf)[0]["total"]
    assert r1.item() == r2.item()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        opt.zero_grad()
        loss = depthkp_loss(_pred(net, rendered_pair), rendered_pair, conf)[0]["total"]
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]


# ------------------------------------------------------------------------------------------------- extractor
def _tiny_weights(tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "tiny.safetensors"
    save_depthkp_weights(DepthKPNet(TINY).eval(), path, {"note": "test"})
    return path


def test_extractor_runs_on_a_depth_map_and_returns_the_contract(tmp_path, rendered_pair):
    ext = build_extractor("depthkp", {"weights": str(_tiny_weights(tmp_path)), "max_keypoints": 50,
                                      "target_focal": None})
    assert ext.inputs == "depth"
    depth = rendered_pair["depth0"][..., :45, :62]  # not a multiple of 8: padded inside
    depth = depth.clone()
    depth[..., :10, :] = 0  # no depth at the top: no keypoint there
    with torch.no_grad():
        pred = ext({"depth": depth, "intrinsics": rendered_pair["K0"]})
    kp, sc, de = pred["keypoints"], pred["keypoint_scores"], pred["descriptors"]
    n = kp.shape[1]
    assert 0 < n <= 50 and sc.shape == (1, n) and de.shape == (1, n, 16)
    assert (sc[0, :-1] >= sc[0, 1:]).all()
    assert torch.allclose(de.norm(dim=-1), torch.ones(1, n), atol=1e-5)
    assert (kp[..., 0] > 0).all() and (kp[..., 0] < 62).all() and (kp[..., 1] < 45).all()
    # every keypoint lies on a pixel with depth (it is lifted to 3D with it)
    assert (depth[0, 0, kp[0, :, 1].long(), kp[0, :, 0].long()] > 0).all()
    assert pred["image_size"].tolist() == [[62, 45]]
    # extract_depth on a 2x larger map (focal doubled): the extractor resizes it to its target focal itself and
    # maps the keypoints back, whatever the caller's resize
    big = np.kron(rendered_pair["depth0"][0, 0].numpy(), np.ones((2, 2), np.float32))
    K = rendered_pair["K0"][0].double().numpy()
    K_big = np.diag([2.0, 2.0, 1.0]) @ K
    ext2 = build_extractor("depthkp", {"weights": str(_tiny_weights(tmp_path)), "max_keypoints": 30,
                                       "target_focal": float(K[0, 0])})
    out = extract_depth(ext2, big, K_big, resize=None)
    with torch.no_grad():
        small = ext2({"depth": rendered_pair["depth0"], "intrinsics": rendered_pair["K0"]})
    assert out["image_size"].tolist() == [128, 96]
    assert np.allclose(out["keypoints"], small["keypoints"][0].numpy() * 2)
    assert np.allclose(out["descriptors"], small["descriptors"][0].numpy(), atol=1e-5)


def test_weights_round_trip_and_bad_files(tmp_path):
    from featlab.errors import InputError

    path = _tiny_weights(tmp_path)
    net, meta = load_depthkp_weights(path)
    assert meta["format"] == "featlab-depthkp/1" and meta["model"]["descriptor_dim"] == 16
    side = path.with_suffix(".json")
    side.write_text(json.dumps({**meta, "model": {**meta["model"], "descriptor_dim": 32}}))
    with pytest.raises(InputError):
        load_depthkp_weights(path)
    with pytest.raises(InputError):
        load_depthkp_weights(tmp_path / "missing.safetensors")


def test_shipped_weights_load_and_run():
    ext = build_extractor("depthkp")
    assert ext.meta["format"] == "featlab-depthkp/1" and "training" in ext.meta
    depth = torch.full((1, 1, 64, 80), 2.0)
    depth[..., 20:40, 30:50] = 1.5  # a box in front of a wall
    with torch.no_grad():
        pred = ext({"depth": depth, "intrinsics": _K(64, 80)[None]})
    assert pred["keypoints"].shape[1] > 0
    assert torch.allclose(pred["descriptors"].norm(dim=-1), torch.ones(1, pred["keypoints"].shape[1]), atol=1e-5)


# ------------------------------------------------------------------------------------------------- training
def test_train_command_runs_end_to_end_on_synthetic_rooms(tmp_path):
    """`featlab train depthkp` on a tiny rendered (synthetic) room, two steps, then --resume to three."""
    from featlab.cli import main

    run = tmp_path / "run"
    common = ["data.synthetic.scenes=1", "data.synthetic.frames=8", "data.synthetic.gaps=[2]",
              "data.image_size=[48,64]", "data.num_proposals=32", "model.channels=[4,8,8,8]",
              "model.head_channels=8", "model.descriptor_dim=16", "train.progress=false", "train.val_every=1"]
    assert main(["train", "depthkp", "-o", str(run), *common, "train.max_steps=2"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2]
    assert (run / "final.safetensors").is_file()
    net, meta = load_depthkp_weights(run / "final.safetensors")
    assert meta["training"]["step"] == 2 and any("synthetic" in k for k in meta["data"])
    assert main(["train", "depthkp", "-o", str(run), "--resume", "train.max_steps=3"]) == 0
    assert load_depthkp_weights(run / "final.safetensors")[1]["training"]["step"] == 3


def test_config_rejects_unknown_keys():
    from featlab.errors import ConfigError
    from featlab.losses.depthkp import default_conf

    with pytest.raises(ConfigError):
        resolve_conf(default_conf, {"margn": 1.0})
    with pytest.raises(ConfigError):
        resolve_conf(default_conf, {"margin": -1.0})


@pytest.mark.slow
def test_selection_pairs_of_7scenes_stay_off_the_report_frames():
    from featlab.datasets import splits
    from featlab.training.depthkp import sequence_pairs

    root = splits.data_path(splits.SEVEN_SCENES)
    if not root.is_dir():
        pytest.skip(f"7-Scenes not found at {root}")
    pairs = sequence_pairs(root, {"focal": 585.0}, splits.SELECT_FRAMES, [20, 30], 0.3, None, [240, 320],
                           num_pairs=12)
    assert all(splits.SELECT_FRAMES[0] <= i < j < splits.SELECT_FRAMES[1] for i, j in pairs.pairs)
    item = pairs[0]
    assert item["depth0"].shape == (240, 320) and np.isclose(item["K0"][0, 0], 292.5)


def test_validation_registers_a_pair_of_identical_views_exactly(rendered_pair):
    """Selection metrics on a pair whose two views are the same depth map: every mutual match is a true one, and
    the registration finds the identity."""
    from featlab.training.depthkp import DepthKPTask, DepthPairList, synthetic_pairs

    depth = rendered_pair["depth0"][0, 0].numpy()
    K = rendered_pair["K0"][0].double().numpy()
    same = DepthPairList("synthetic:same", lambda i: depth, K, lambda i, j: np.eye(4), [(0, 1)], (48, 64), True)
    conf = {"model": TINY, "data": {"image_size": [48, 64], "synthetic": {"scenes": 1, "frames": 4, "gaps": [1]}},
            "val": {"max_keypoints": 40}}
    torch.manual_seed(0)
    task = DepthKPTask(conf, train_sources=synthetic_pairs(resolve_conf({"scenes": 1, "frames": 4, "gaps": [1],
                                                                          "seed": 0, "depth_noise": 0.0,
                                                                          "render": {"image_size": [48, 64]}}),
                                                           (48, 64), 0.3), val_pairs=same)
    task.model.eval()
    with torch.no_grad():
        metrics = task.validate()
    assert metrics["match_count"] > 10
    assert metrics["inlier_ratio"] == pytest.approx(1.0)
    assert metrics["recall@2deg5cm"] == 1.0 and metrics["rot_error_median"] < 1e-3
