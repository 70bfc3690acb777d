"""Cheap speed that costs no quality: SIFT in one detectAndCompute pass, BatchNorm folded into convolutions.

Each speed-up must give the outputs of the slower path it replaced (the timings are in the report, not here).
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from featlab.extractors import build_extractor
from featlab.nn import ResNetEncoder, ResUNet, TrimmedSuperPoint, fold_batchnorm
from featlab.pixels import from_opencv


def _has_batchnorm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


# ------------------------------------------------------------------------------------------------ SIFT one pass
@pytest.fixture(scope="module")
def gray_480x640():
    from skimage.data import astronaut

    return cv2.resize(cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY), (640, 480), interpolation=cv2.INTER_AREA)


def _two_pass_sift(gray: np.ndarray, k: int):
    """The replaced path, written out: detect, keep the k best by response (stable), describe them."""
    sift = cv2.SIFT_create(nfeatures=0, nOctaveLayers=3, contrastThreshold=0.04, edgeThreshold=10.0, sigma=1.6)
    kps = sift.detect(gray, None)
    if 0 <= k < len(kps):
        kps = sorted(kps, key=lambda p: -p.response)[:k]
    kps, desc = sift.compute(gray, kps)
    response = np.array([p.response for p in kps], np.float32)
    order = np.argsort(-response, kind="stable")  # the extractor returns them by decreasing response
    pts = np.array([p.pt for p in kps], np.float32)[order]
    desc = desc[order].astype(np.float32)
    return from_opencv(pts - np.float32(0.25)), response[order], desc / (np.linalg.norm(desc, axis=1,
                                                                                        keepdims=True) + 1e-8)


# k=10 cuts through keypoints of equal response (one location, several orientations): ties are broken as detect's
# order does; 500 cuts without a tie; -1 keeps all 1138
@pytest.mark.parametrize("k", [10, 500, -1])
def test_sift_one_pass_equals_detect_then_compute(gray_480x640, k):
    pts, scores, desc, _, _ = build_extractor("sift", {"max_keypoints": k}).detect_and_describe(gray_480x640)
    ref_pts, ref_scores, ref_desc = _two_pass_sift(gray_480x640, k)
    assert len(pts) == (k if k >= 0 else len(ref_pts)) > 0
    np.testing.assert_array_equal(pts, ref_pts)
    np.testing.assert_array_equal(scores, ref_scores)
    np.testing.assert_array_equal(desc, ref_desc)


def test_sift_top_k_has_a_tie_at_the_cut(gray_480x640):
    # guards the k=10 case above: it only tests the tie-break while the 10th and 11th responses are equal
    response = np.sort([p.response for p in cv2.SIFT_create().detect(gray_480x640, None)])[::-1]
    assert response[9] == response[10]


# ------------------------------------------------------------------------------------------------ BN folding
def _randomise_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial running statistics and affine parameters, so that a wrong fold shows in the outputs."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            if m.running_mean is not None:
                m.running_mean.copy_(0.2 * torch.randn(c, generator=g))
                m.running_var.copy_(0.5 + torch.rand(c, generator=g))
            m.weight.data.copy_(0.5 + torch.rand(c, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(c, generator=g))
    return module.eval()


@pytest.mark.parametrize("make", [
    lambda: TrimmedSuperPoint(batchnorm=True),
    lambda: TrimmedSuperPoint(variant="small", batchnorm=True),
    lambda: ResUNet({"widths": [16, 32, 64], "stem_width": 16}),
    lambda: ResNetEncoder(depth=50, num_stages=2, widths=(8, 16), stem_width=8),  # Bottleneck blocks
], ids=["superpoint", "superpoint-small", "resunet18", "resnet50"])
def test_fold_batchnorm_is_equivalent_and_leaves_no_batchnorm(make):
    torch.manual_seed(0)
    net = _randomise_batchnorm(make())
    folded = fold_batchnorm(net)
    assert _has_batchnorm(net) and not _has_batchnorm(folded)
    assert not folded.training
    x = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))

    def outputs(module, x):
        with torch.no_grad():
            y = module(x)
        return list(y.values()) if isinstance(y, dict) else y if isinstance(y, list) else [y]

    # float32: equal up to rounding, ~1e-5 of the output's scale (raw maps reach ~10 after 10 random layers)
    for r, o in zip(outputs(net, x), outputs(folded, x)):
        assert r.abs().max() > 0.1  # a real signal, not all zeros
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5 * r.abs().max().item())
    # float64 (folded in float64): the fold is exact algebra, so only float64 rounding is left
    net64 = net.double()
    for r, o in zip(outputs(net64, x.double()), outputs(fold_batchnorm(net64), x.double())):
        torch.testing.assert_close(o, r, rtol=1e-10, atol=1e-10 * r.abs().max().item())


def test_fold_batchnorm_leaves_training_parts_alone():
    # BatchNorm not right after a conv, and BatchNorm without running statistics (batch statistics even in eval
    # mode), cannot be folded: they stay, and the result is still equivalent
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                        nn.BatchNorm2d(4, track_running_stats=False))
    _randomise_batchnorm(net)
    folded = fold_batchnorm(net)
    assert isinstance(folded[2], nn.BatchNorm2d) and isinstance(folded[4], nn.BatchNorm2d)
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), net(x))


def test_learned_extractors_fold_batchnorm_at_inference(tmp_path):
    from featlab.extractors.caps import load_caps_weights, save_caps_weights
    from featlab.extractors.residual import ResidualDescriptorNet, load_residual_weights, save_residual_weights

    torch.manual_seed(0)
    res_path, caps_path = tmp_path / "res.safetensors", tmp_path / "caps.safetensors"
    save_residual_weights(_randomise_batchnorm(ResidualDescriptorNet({"batchnorm": True, "backbone": "small"})),
                          res_path, {"name": "sift", "conf": {}})
    save_caps_weights(_randomise_batchnorm(ResUNet({"widths": [16, 32, 64], "stem_width": 16})), caps_path)
    image = torch.rand(1, 3, 96, 128, generator=torch.Generator().manual_seed(2))
    for name, path, load in (("residual-sift-v1", res_path, load_residual_weights),
                             ("caps-sift", caps_path, load_caps_weights)):
        ext = build_extractor(name, {"weights": str(path), "max_keypoints": 60, "channels_last": False})
        assert not _has_batchnorm(ext), name
        unfolded, _ = load(path)
        assert _has_batchnorm(unfolded)
        pred = ext({"image": image})
        kpts = pred["keypoints"]
        assert kpts.shape[1] > 10
        with torch.no_grad():
            if name == "residual-sift-v1":
                ref = unfolded(image, kpts, ext.g({"image": image})["descriptors"])
            else:
                from featlab.extractors.caps import dense_maps, sample_descriptors

                ref = sample_descriptors(dense_maps(unfolded, image), kpts, (96, 128))
        torch.testing.assert_close(pred["descriptors"], ref, rtol=1e-5, atol=1e-5)
