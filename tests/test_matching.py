"""Nearest-neighbour matching on hand-made cases with known answers (mutual, ratio, threshold, binary, masks)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data as skdata

from featlab.errors import ConfigError, InputError
from featlab.extractors import build_extractor
from featlab.io.image import image_to_tensor
from featlab.matching import Matcher, match_descriptors, matches_to_indices, unpack_bits_pm1


def unit2d(degrees):
    a = np.deg2rad(np.asarray(degrees, dtype=np.float64))
    return torch.from_numpy(np.stack([np.cos(a), np.sin(a)], -1)).float()


# 2-D unit vectors at these angles. Angular differences (rows: desc0, columns: desc1):
#            3   88   42   59
#     0  [   3,  88,  42,  59]  -> nn 0 (second 42)
#    10  [   7,  78,  32,  49]  -> nn 0 (second 32)
#    90  [  87,   2,  48,  31]  -> nn 1 (second 31)
#    50  [  47,  38,   8,   9]  -> nn 2 (second 9: ratio sin(4)/sin(4.5) = 0.889)
# nn of the columns in desc0: 0, 2, 3, 3. L2 distance of unit vectors = 2 sin(angle / 2).
ANGLES0 = [0, 10, 90, 50]
ANGLES1 = [3, 88, 42, 59]


@pytest.fixture
def float_case():
    return unit2d(ANGLES0), unit2d(ANGLES1)


@pytest.mark.parametrize("mutual, ratio, threshold, expected", [
    (False, None, None, [0, 0, 1, 2]),
    (True, None, None, [0, -1, 1, 2]),
    (False, 0.8, None, [0, 0, 1, -1]),
    (True, 0.8, None, [0, -1, 1, -1]),
    (False, 0.9, None, [0, 0, 1, 2]),  # 0.889 < 0.9
    (False, None, 0.1, [0, -1, 1, -1]),  # distances 0.052, 0.122, 0.035, 0.140
    (False, None, 0.13, [0, 0, 1, -1]),
])
def test_float_hand_made(float_case, mutual, ratio, threshold, expected):
    d0, d1 = float_case
    m, s = match_descriptors(d0, d1, mutual=mutual, ratio=ratio, distance_threshold=threshold)
    assert m.dtype == torch.int64 and m.tolist() == expected
    cos = np.cos(np.deg2rad(np.array(ANGLES0)[:, None] - np.array(ANGLES1)[None]))
    want = [(1 + cos[i, j]) / 2 if j >= 0 else 0.0 for i, j in enumerate(expected)]  # hloc's score scale
    np.testing.assert_allclose(s.numpy(), want, atol=1e-6)


def test_scores_use_the_cosine_whatever_the_norm(float_case):
    d0, d1 = float_case
    m, s = match_descriptors(d0 * 3.0, d1 * 0.5)
    m_ref, s_ref = match_descriptors(d0, d1)
    assert m.tolist() == m_ref.tolist()
    torch.testing.assert_close(s, s_ref)


@pytest.mark.parametrize("mask0, mask1, mutual, expected", [
    (None, [False, True, True, True], True, [-1, -1, 1, 2]),
    (None, [False, True, True, True], False, [2, 2, 1, 2]),
    ([True, True, True, False], None, True, [0, -1, 1, -1]),
    ([True, True, True, False], None, False, [0, 0, 1, -1]),
])
def test_masks_exclude_padded_entries(float_case, mask0, mask1, mutual, expected):
    d0, d1 = float_case
    m0 = torch.tensor(mask0) if mask0 is not None else None
    m1 = torch.tensor(mask1) if mask1 is not None else None
    m, _ = match_descriptors(d0, d1, mutual=mutual, mask0=m0, mask1=m1)
    assert m.tolist() == expected


def test_batched_equals_per_pair(float_case):
    d0, d1 = float_case
    mask1 = torch.tensor([[True, True, True, True], [False, True, True, True]])
    m, s = match_descriptors(torch.stack([d0, d0]), torch.stack([d1, d1]), mask1=mask1)
    assert m.shape == (2, 4) and s.shape == (2, 4)
    assert m[0].tolist() == [0, -1, 1, 2] and m[1].tolist() == [-1, -1, 1, 2]


def test_numpy_in_numpy_out(float_case):
    d0, d1 = float_case
    m, s = match_descriptors(d0.numpy(), d1.numpy())
    assert isinstance(m, np.ndarray) and m.dtype == np.int64 and m.tolist() == [0, -1, 1, 2]
    assert isinstance(s, np.ndarray) and s.dtype == np.float32


# Binary: 16-bit descriptors (2 packed bytes). Hamming distances (rows desc0, columns desc1):
#   [00 00]  [1, 9, 7]
#   [ff 00]  [7, 1, 7]
#   [0f 0f]  [7, 7, 1]
#   [0f 0d]  [6, 6, 2]   -> nn 2, but column 2's nn is row 2 (distance 1): not mutual
B0 = np.array([[0x00, 0x00], [0xFF, 0x00], [0x0F, 0x0F], [0x0F, 0x0D]], dtype=np.uint8)
B1 = np.array([[0x01, 0x00], [0xFF, 0x01], [0x0F, 0x0E]], dtype=np.uint8)


@pytest.mark.parametrize("mutual, ratio, threshold, expected", [
    (True, None, None, [0, 1, 2, -1]),
    (False, None, None, [0, 1, 2, 2]),
    (False, None, 1, [0, 1, 2, -1]),  # Hamming distance in bits
    (False, 0.3, None, [0, 1, 2, -1]),  # 1/7 = 0.14 passes, 2/6 = 0.33 fails
])
def test_binary_hand_made(mutual, ratio, threshold, expected):
    m, s = match_descriptors(B0, B1, mutual=mutual, ratio=ratio, distance_threshold=threshold, binary=True)
    assert m.tolist() == expected
    hamming = {0: 1, 1: 1, 2: 1, 3: 2}  # (1 + cos) / 2 of the +-1 vectors = 1 - hamming / bits
    want = [1 - hamming[i] / 16 if j >= 0 else 0.0 for i, j in enumerate(expected)]
    np.testing.assert_allclose(s, want, atol=1e-6)


def test_unpack_bits():
    bits = unpack_bits_pm1(torch.tensor([[0b10000001, 0xFF]], dtype=torch.uint8))
    assert bits.tolist() == [[1, -1, -1, -1, -1, -1, -1, 1] + [1] * 8]


@pytest.mark.parametrize("n, m", [(0, 3), (4, 0), (0, 0)])
@pytest.mark.parametrize("binary", [False, True])
def test_empty_inputs(n, m, binary):
    if binary:
        d0, d1 = torch.zeros(2, n, 2, dtype=torch.uint8), torch.zeros(2, m, 2, dtype=torch.uint8)
    else:
        d0, d1 = torch.randn(2, n, 8), torch.randn(2, m, 8)
    mt, s = match_descriptors(d0, d1, ratio=0.8, binary=binary)
    assert mt.shape == (2, n) and s.shape == (2, n) and mt.dtype == torch.int64
    assert (mt == -1).all() and (s == 0).all()
    mt, s = match_descriptors(d0[0].numpy(), d1[0].numpy(), binary=binary)
    assert mt.shape == (n,) and isinstance(mt, np.ndarray) and (mt == -1).all()


def test_single_candidate_passes_ratio():
    m, _ = match_descriptors(unit2d([0, 80]), unit2d([5]), mutual=False, ratio=0.5)
    assert m.tolist() == [0, 0]


def test_duplicate_candidates_fail_ratio():
    m, _ = match_descriptors(unit2d([0]), unit2d([5, 5]), mutual=False, ratio=0.99)
    assert m.tolist() == [-1]


# col 0 (1 deg) is row 0's clear nearest neighbour (1 vs 60 deg) and row 0 is col 0's nearest, but row 1 (2.2 deg)
# is almost as near to col 0: ratio sin(0.5)/sin(0.6) = 0.833 from col 0's side
SYM0, SYM1 = [0, 2.2], [1, 60]


@pytest.mark.parametrize("ratio_test, mutual, expected", [
    ("symmetric", True, [-1, -1]),  # col 0 fails its own test in image 0
    ("one-way", True, [0, -1]),
    ("symmetric", False, [0, 0]),  # without the mutual check the test is one-way, as in hloc
    ("one-way", False, [0, 0]),
])
def test_symmetric_ratio_test(ratio_test, mutual, expected):
    m, _ = match_descriptors(unit2d(SYM0), unit2d(SYM1), mutual=mutual, ratio=0.8, ratio_test=ratio_test)
    assert m.tolist() == expected
    # swapped images: no match either way, so the one-way test's match 0 -> 0 above depends on the order
    m10, _ = match_descriptors(unit2d(SYM1), unit2d(SYM0), mutual=True, ratio=0.8, ratio_test=ratio_test)
    assert m10.tolist() == [-1, -1]


def _hloc_reference(d0, d1, ratio):
    """hloc's mutual NN + symmetric ratio test, written from its definition with plain loops (numpy, float64):
    i -> j kept when j = nn(i), i = nn(j), and both pass Lowe's test in their own direction (off when either side
    has one descriptor); score (1 + cos) / 2."""
    sim = d0.astype(np.float64) @ d1.astype(np.float64).T
    dist = np.sqrt(np.maximum(2 - 2 * sim, 0))
    n, m = sim.shape
    use_ratio = ratio is not None and min(n, m) > 1
    out, scores = np.full(n, -1), np.zeros(n)
    for i in range(n):
        j = int(np.argmax(sim[i]))
        if int(np.argmax(sim[:, j])) != i:
            continue
        if use_ratio:
            r0, r1 = np.sort(dist[i]), np.sort(dist[:, j])
            if not (r0[0] < ratio * r0[1] and r1[0] < ratio * r1[1]):
                continue
        out[i], scores[i] = j, (1 + sim[i, j]) / 2
    return out, scores


@pytest.mark.parametrize("ratio", [None, 0.8, 0.95])
@pytest.mark.parametrize("n, m", [(40, 50), (1, 30), (30, 1)])
def test_default_matches_the_hloc_rule(ratio, n, m):
    """Random descriptors with planted near-duplicates: featlab's default equals the reference above."""
    rng = np.random.default_rng(n * 100 + m)
    d1 = rng.normal(size=(m, 16))
    d0 = np.concatenate([d1[: min(n, m) // 2] + 0.3 * rng.normal(size=(min(n, m) // 2, 16)),
                         rng.normal(size=(n - min(n, m) // 2, 16))])
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    m0, s0 = match_descriptors(d0.astype(np.float32), d1.astype(np.float32), ratio=ratio)
    want, want_s = _hloc_reference(d0, d1, ratio)
    assert m0.tolist() == want.tolist()
    np.testing.assert_allclose(s0, want_s, atol=1e-5)
    assert ratio is not None or min(n, m) == 1 or (want >= 0).sum() >= min(n, m) // 2  # the planted pairs match


def test_bad_inputs_raise():
    with pytest.raises(InputError, match="descriptor sizes differ"):
        match_descriptors(torch.randn(3, 4), torch.randn(3, 5))
    with pytest.raises(InputError, match="binary=True"):
        match_descriptors(torch.zeros(3, 4, dtype=torch.uint8), torch.zeros(3, 4, dtype=torch.uint8))
    with pytest.raises(InputError, match="uint8"):
        match_descriptors(torch.randn(3, 4), torch.randn(3, 4), binary=True)
    with pytest.raises(InputError, match="mask1"):
        match_descriptors(torch.randn(3, 4), torch.randn(2, 4), mask1=torch.ones(3, dtype=torch.bool))
    with pytest.raises(ConfigError, match="ratio_test"):
        match_descriptors(torch.randn(3, 4), torch.randn(2, 4), ratio=0.8, ratio_test="both")


def test_matches_to_indices():
    idx0, idx1 = matches_to_indices(torch.tensor([2, -1, 0, -1]))
    assert idx0.tolist() == [0, 2] and idx1.tolist() == [2, 0]
    idx0, idx1 = matches_to_indices(np.array([[-1, 1]]))
    assert isinstance(idx0, np.ndarray) and idx0.tolist() == [1] and idx1.tolist() == [1]
    with pytest.raises(InputError):
        matches_to_indices(torch.zeros(2, 3, dtype=torch.int64))


def test_matcher_on_contract_dicts(float_case):
    d0, d1 = float_case
    pred0 = {"descriptors": d0[None], "keypoint_masks": torch.tensor([[True, True, True, False]])}
    pred1 = {"descriptors": d1[None]}
    out = Matcher()(pred0, pred1)
    assert set(out) == {"matches0", "matching_scores0"}
    assert out["matches0"].tolist() == [[0, -1, 1, -1]]
    out = Matcher({"mutual": False, "ratio": 0.8})(pred0, pred1)
    assert out["matches0"].tolist() == [[0, 0, 1, -1]]
    out = Matcher()({"descriptors": torch.from_numpy(B0)[None]}, {"descriptors": torch.from_numpy(B1)[None]})
    assert out["matches0"].tolist() == [[0, 1, 2, -1]]  # uint8 -> Hamming


def test_matcher_conf_errors():
    with pytest.raises(ConfigError, match="ratoi"):
        Matcher({"ratoi": 0.8})
    with pytest.raises(ConfigError, match="matcher.ratio"):
        Matcher({"ratio": 1.5})
    with pytest.raises(ConfigError, match="one-way"):
        Matcher({"ratio_test": "two-way"})


# ORB keypoints of coarse pyramid levels sit on that level's pixel grid (up to 3.6 px wide), so a shifted crop
# moves them by up to about half a level pixel more than the shift
@pytest.mark.parametrize("name, conf, tolerance", [("orb", {"mutual": True}, 2.0),
                                                   ("sift", {"mutual": True, "ratio": 0.8}, 1.0)])
def test_real_features_match_a_translated_crop(name, conf, tolerance):
    """Matches between a photo and a crop of it (known integer shift) are mostly geometrically correct."""
    img = cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    dx, dy = 13, 7
    ext = build_extractor(name, {"max_keypoints": 300})
    p0 = ext({"image": image_to_tensor(img)})
    p1 = ext({"image": image_to_tensor(np.ascontiguousarray(img[dy:, dx:]))})
    m = Matcher(conf)(p0, p1)["matches0"][0]
    idx0, idx1 = matches_to_indices(m)
    err = (p0["keypoints"][0][idx0] - torch.tensor([dx, dy]) - p1["keypoints"][0][idx1]).norm(dim=-1)
    assert len(idx0) > 50
    assert (err < tolerance).float().mean() > 0.9
