"""Tests of featlab.geometry on synthetic two-view scenes built here (random K, R, t and 3D points)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as Fnn

from featlab.errors import ConfigError, InputError
from featlab.geometry import (
    angle_between_vectors,
    backproject,
    covisibility,
    epipolar_distance,
    essential_from_pose,
    estimate_fundamental,
    estimate_homography,
    estimate_relative_pose,
    fundamental_from_pose,
    hartley_normalization,
    homography_corner_error,
    normalize_points,
    pose_auc,
    project,
    relative_pose_error,
    rotation_angle,
    sample_depth_nearest,
    sampson_distance,
    skew,
    symmetric_transfer_error,
    transform_points,
    warp_image_homography,
    warp_points_depth,
    warp_points_homography,
)


# ----------------------------------------------------------------------------------------------- scene helpers
def rotation(axis, degrees) -> np.ndarray:
    """Rodrigues rotation about ``axis`` by ``degrees``."""
    a = np.asarray(axis, np.float64)
    a = a / np.linalg.norm(a)
    th = np.radians(degrees)
    A = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + np.sin(th) * A + (1 - np.cos(th)) * A @ A


def pose_matrix(R, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def random_intrinsics(rng, width=640, height=480) -> np.ndarray:
    f = rng.uniform(400, 700)
    return np.array([[f * rng.uniform(0.95, 1.05), 0, width / 2 + rng.uniform(-20, 20)],
                     [0, f, height / 2 + rng.uniform(-20, 20)], [0, 0, 1]])


def two_view_scene(seed=0, n=300):
    """Random cameras looking at random 3D points in front of both; returns K0, K1, T_0to1, X0, x0, x1 (pixels)."""
    rng = np.random.default_rng(seed)
    K0, K1 = random_intrinsics(rng), random_intrinsics(rng)
    R = rotation(rng.normal(size=3), rng.uniform(5, 20))
    t = rng.normal(size=3)
    t = 0.5 * t / np.linalg.norm(t)
    T = pose_matrix(R, t)
    X0 = np.c_[rng.uniform(-2, 2, (4 * n, 2)), rng.uniform(4, 9, 4 * n)]
    X1 = X0 @ R.T + t
    x0 = X0 @ K0.T
    x0 = x0[:, :2] / x0[:, 2:]
    x1 = X1 @ K1.T
    x1 = x1[:, :2] / x1[:, 2:]
    keep = (X1[:, 2] > 0.5) & np.all((x0 > 0) & (x0 < [640, 480]), 1) & np.all((x1 > 0) & (x1 < [640, 480]), 1)
    keep = np.flatnonzero(keep)[:n]
    assert len(keep) == n
    return K0, K1, T, X0[keep], x0[keep], x1[keep]


def noisy_matches(x0, x1, rng, noise=0.5, outlier_ratio=0.3, size=(640, 480)):
    """Add Gaussian noise and replace a fraction of x1 by uniform random points. Returns p0, p1, outlier mask."""
    p0 = x0 + rng.normal(0, noise, x0.shape)
    p1 = x1 + rng.normal(0, noise, x1.shape)
    outliers = rng.random(len(x0)) < outlier_ratio
    p1[outliers] = rng.uniform([0, 0], size, (outliers.sum(), 2))
    return p0, p1, outliers


def t64(*arrays):
    return [torch.from_numpy(np.asarray(a, np.float64)) for a in arrays]


# ---------------------------------------------------------------------------------------------------- epipolar
class TestEpipolar:
    def test_skew_is_cross_product(self):
        rng = np.random.default_rng(1)
        v, w = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
        S = skew(torch.from_numpy(v))
        assert S.shape == (5, 3, 3)
        np.testing.assert_allclose((S @ torch.from_numpy(w)[..., None])[..., 0].numpy(), np.cross(v, w), atol=1e-12)
        np.testing.assert_allclose(skew(v[0]) @ w[0], np.cross(v[0], w[0]), atol=1e-12)  # numpy in, numpy out

    def test_constraint_is_zero_for_true_matches(self):
        K0, K1, T, _, x0, x1 = two_view_scene(0)
        F = fundamental_from_pose(*t64(K0, K1, T))
        x0h, x1h = np.c_[x0, np.ones(len(x0))], np.c_[x1, np.ones(len(x1))]
        algebraic = np.einsum("ni,ij,nj->n", x1h, F.numpy(), x0h)
        assert np.abs(algebraic).max() < 1e-9 * np.linalg.norm(F.numpy()) * 640**2
        p0, p1 = t64(x0[None], x1[None])
        for d in (epipolar_distance(p0, p1, F[None]), epipolar_distance(p0, p1, F[None], symmetric=False),
                  sampson_distance(p0, p1, F[None])):
            assert d.shape == (1, len(x0))
            assert d.max() < 1e-6

    def test_known_distance_for_perturbed_matches(self):
        K0, K1, T, _, x0, x1 = two_view_scene(1)
        F = fundamental_from_pose(K0, K1, T)  # numpy path
        line = np.c_[x0, np.ones(len(x0))] @ F.T  # epipolar lines of x0 in image 1
        normal = line[:, :2] / np.linalg.norm(line[:, :2], axis=1, keepdims=True)
        x1_moved = x1 + 2.0 * normal  # 2 px off the line
        d = epipolar_distance(x0, x1_moved, F, symmetric=False)
        np.testing.assert_allclose(d, 2.0, atol=1e-6)
        assert np.all(epipolar_distance(x0, x1_moved, F) > 0.1)
        s = sampson_distance(x0, x1_moved, F)
        assert np.all(s > 0.1) and np.all(s <= 2.0 + 1e-9)  # Sampson <= distance to the line in one image
        np.testing.assert_allclose(sampson_distance(x0, x1_moved, F, squared=True), s**2, rtol=1e-9)

    def test_batched_and_essential_relation(self):
        scenes = [two_view_scene(s, n=50) for s in (2, 3)]
        K0, K1, T, x0, x1 = (np.stack([sc[i] for sc in scenes]) for i in (0, 1, 2, 4, 5))
        F = fundamental_from_pose(*t64(K0, K1, T))
        assert F.shape == (2, 3, 3)
        assert epipolar_distance(*t64(x0, x1), F).max() < 1e-6
        # K1^T F K0 = E
        E = essential_from_pose(torch.from_numpy(T))
        np.testing.assert_allclose((torch.from_numpy(K1).transpose(-1, -2) @ F @ torch.from_numpy(K0)).numpy(),
                                   E.numpy(), atol=1e-9)
        # normalised coordinates satisfy the essential constraint
        n0, n1 = normalize_points(x0, K0), normalize_points(x1, K1)
        r = np.einsum("bni,bij,bnj->bn", np.concatenate([n1, np.ones_like(n1[..., :1])], -1), E.numpy(),
                      np.concatenate([n0, np.ones_like(n0[..., :1])], -1))
        assert np.abs(r).max() < 1e-12

    def test_float32_under_autocast_and_gradients(self):
        K0, K1, T, _, x0, x1 = two_view_scene(4, n=20)
        F = fundamental_from_pose(K0, K1, T)
        p0, p1, F32 = (torch.tensor(a, dtype=torch.float32)[None] for a in (x0, x1, F))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            d = sampson_distance(p0, p1, F32)
        assert d.dtype == torch.float32 and d.max() < 1e-2
        # gradients on well-scaled float64 inputs (pixel-scale F is too ill-conditioned for finite differences)
        g = torch.Generator().manual_seed(0)
        p0g, p1g, Fg = (torch.randn(*s, generator=g, dtype=torch.float64).requires_grad_()
                        for s in ((1, 5, 2), (1, 5, 2), (1, 3, 3)))
        assert torch.autograd.gradcheck(lambda a, b, f: sampson_distance(a, b, f, squared=True), (p0g, p1g, Fg))
        Hg = (torch.eye(3, dtype=torch.float64) + 0.1 * torch.randn(3, 3, generator=g, dtype=torch.float64))
        assert torch.autograd.gradcheck(warp_points_homography, (p0g, Hg.requires_grad_()))

    def test_hartley_normalization(self):
        rng = np.random.default_rng(5)
        p = rng.uniform(0, 500, (2, 40, 2))
        pn, T = hartley_normalization(torch.from_numpy(p))
        np.testing.assert_allclose(pn.mean(1).numpy(), 0, atol=1e-12)
        np.testing.assert_allclose(pn.norm(dim=-1).mean(1).numpy(), np.sqrt(2), rtol=1e-12)
        np.testing.assert_allclose(warp_points_homography(p, T.numpy()), pn.numpy(), atol=1e-12)


# -------------------------------------------------------------------------------------------------- homography
H_EXAMPLE = np.array([[1.1, 0.05, 10.0], [-0.03, 0.95, -5.0], [1e-4, -5e-5, 1.0]])


class TestHomography:
    def test_inverse_and_round_trip(self):
        rng = np.random.default_rng(0)
        H = torch.from_numpy(np.stack([H_EXAMPLE, np.linalg.inv(H_EXAMPLE) @ H_EXAMPLE.T / 2]))
        H_inv = torch.linalg.inv(H)
        np.testing.assert_allclose((H @ H_inv).numpy(), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
        p = torch.from_numpy(rng.uniform(0, 640, (2, 100, 2)))
        q = warp_points_homography(p, H)
        assert q.shape == (2, 100, 2) and q.dtype == torch.float64
        np.testing.assert_allclose(warp_points_homography(q, H_inv).numpy(), p.numpy(), atol=1e-9)
        np.testing.assert_allclose(warp_points_homography(p.numpy(), H.numpy()), q.numpy(), atol=1e-9)  # numpy
        e = symmetric_transfer_error(p, q, H)
        assert e.shape == (2, 100) and e.max() < 1e-6

    def test_translation_and_autocast(self):
        p = torch.tensor([[[0.5, 0.5], [10.25, 3.0]]])
        H = torch.tensor([[1.0, 0, 3], [0, 1, -2], [0, 0, 1]])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            q = warp_points_homography(p, H)
        assert q.dtype == torch.float32
        np.testing.assert_allclose(q.numpy(), [[[3.5, -1.5], [13.25, 1.0]]], atol=1e-6)

    def test_warp_image_translation_is_exact(self):
        rng = np.random.default_rng(0)
        image = torch.from_numpy(rng.random((2, 3, 20, 30)).astype(np.float32))
        dx, dy = 3, 2
        H = np.array([[1.0, 0, dx], [0, 1, dy], [0, 0, 1]])
        out = warp_image_homography(image, H, (20, 30))
        assert out.shape == (2, 3, 20, 30)
        # content at pixel (row y, col x) of image 0 appears at (y + dy, x + dx) of image 1 (up to float32
        # rounding of the normalised sampling grid; a 0.01 px offset would already give errors ~1e-2)
        np.testing.assert_allclose(out[..., dy:, dx:].numpy(), image[..., :20 - dy, :30 - dx].numpy(), atol=1e-5)
        assert out[..., :dy, :].abs().max() < 1e-5 and out[..., :, :dx].abs().max() < 1e-5  # uncovered -> zeros
        # per-batch homographies
        H2 = torch.from_numpy(np.stack([H, np.eye(3)]))
        out2 = warp_image_homography(image, H2, (20, 30))
        np.testing.assert_allclose(out2[1].numpy(), image[1].numpy(), atol=1e-5)

    def test_warp_image_half_scale_is_average_pooling(self):
        # with pixel centres at +0.5, scaling by 1/2 samples exactly between 2x2 source pixels
        image = torch.rand(1, 1, 16, 24)
        out = warp_image_homography(image, np.diag([0.5, 0.5, 1.0]), (8, 12))
        np.testing.assert_allclose(out.numpy(), Fnn.avg_pool2d(image, 2).numpy(), atol=1e-6)

    def test_corner_error(self):
        shift = np.array([[1.0, 0, 3], [0, 1, 4], [0, 0, 1]])
        assert homography_corner_error(shift, np.eye(3), (480, 640)) == pytest.approx(5.0)
        assert homography_corner_error(H_EXAMPLE, H_EXAMPLE, (480, 640)) == pytest.approx(0.0, abs=1e-9)
        assert homography_corner_error(None, np.eye(3), (480, 640)) == float("inf")
        assert homography_corner_error(np.full((3, 3), np.nan), np.eye(3), (480, 640)) == float("inf")


# ------------------------------------------------------------------------------------------------------- depth
def plane_depth(K, n, d, size):
    """Depth map (H, W) at pixel centres of the plane n.X = d seen by a camera with intrinsics K."""
    h, w = size
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    rays = np.stack([xs, ys, np.ones_like(xs)], -1) @ np.linalg.inv(K).T
    return d / (rays @ n)


class TestDepth:
    def test_backproject_project_transform_round_trip(self):
        K0, K1, T, X0, x0, x1 = two_view_scene(0, n=50)
        K0t, K1t, Tt, X0t, x0t, x1t = t64(K0[None], K1[None], T[None], X0[None], x0[None], x1[None])
        p, z = project(X0t, K0t)
        np.testing.assert_allclose(p.numpy(), x0t.numpy(), atol=1e-9)
        np.testing.assert_allclose(backproject(p, z, K0t).numpy(), X0t.numpy(), atol=1e-9)
        X1 = transform_points(Tt, X0t)
        np.testing.assert_allclose(project(X1, K1t)[0].numpy(), x1t.numpy(), atol=1e-9)
        np.testing.assert_allclose(transform_points(torch.linalg.inv(Tt), X1).numpy(), X0t.numpy(), atol=1e-9)

    def test_nearest_lookup_uses_the_containing_pixel(self):
        h, w = 6, 8
        depth = torch.from_numpy(1 + 0.1 * np.arange(h)[:, None] + 0.01 * np.arange(w)[None])[None]
        pts = torch.tensor([[[3.9, 2.1], [4.0, 2.0], [0.0, 0.0], [-0.1, 1.0], [8.0, 1.0], [7.99, 5.99]]],
                           dtype=torch.float64)
        np.testing.assert_allclose(sample_depth_nearest(depth, pts).numpy(),
                                   [[1.23, 1.24, 1.0, 0.0, 0.0, 1.57]], atol=1e-12)
        # warp_points_depth uses exactly that depth
        K = torch.tensor([[50.0, 0, 4], [0, 50, 3], [0, 0, 1]], dtype=torch.float64)
        T = torch.from_numpy(pose_matrix(rotation([0, 1, 0], 3), [0.2, 0.0, 0.1]))
        p1, valid = warp_points_depth(pts, depth, K, K, T)
        expected, _ = project(transform_points(T, backproject(pts[:, :1], depth[:, 2, 3][:, None], K)), K)
        np.testing.assert_allclose(p1[:, :1].numpy(), expected.numpy(), atol=1e-12)
        assert valid.tolist() == [[True, True, True, False, False, True]]

    def test_warp_matches_plane_homography_and_visibility(self):
        rng = np.random.default_rng(3)
        size = (48, 64)
        K = np.array([[60.0, 0, 32], [0, 60, 24], [0, 0, 1]])
        R, t = rotation([0.3, 1, 0], 8), np.array([0.3, 0.05, 0.1])
        n, d = np.array([0.1, -0.2, 1.0]) / np.linalg.norm([0.1, -0.2, 1.0]), 3.0
        depth0 = plane_depth(K, n, d, size)
        depth1 = plane_depth(K, R @ n, d + (R @ n) @ t, size)
        H = K @ (R + np.outer(t, n) / d) @ np.linalg.inv(K)  # plane-induced homography
        pts = rng.integers(0, [64, 48], (1, 200, 2)) + 0.5  # pixel centres: depth exact there
        p1, valid = warp_points_depth(pts, depth0[None], K, K, pose_matrix(R, t), depth1=depth1[None])
        assert isinstance(p1, np.ndarray) and valid.dtype == bool
        np.testing.assert_allclose(p1, warp_points_homography(pts, H), atol=1e-9)
        inside = np.all((p1 >= 0) & (p1 <= [64, 48]), -1)
        assert np.array_equal(valid, inside) and 0 < valid.sum() < 200
        # an inconsistent depth map in view 1 (an occluder in front) invalidates everything
        _, valid_occ = warp_points_depth(pts, depth0[None], K, K, pose_matrix(R, t), depth1=0.5 * depth1[None])
        assert not valid_occ.any()
        # invalid (zero) depth and points behind camera 1 are invalid
        _, v0 = warp_points_depth(pts, np.zeros((1, 48, 64)), K, K, pose_matrix(R, t))
        _, vb = warp_points_depth(pts, depth0[None], K, K, pose_matrix(np.eye(3), [0, 0, -10.0]))
        assert not v0.any() and not vb.any()

    def test_covisibility(self):
        size, f, d = (32, 64), 50.0, 2.0
        K = np.array([[f, 0, 32], [0, f, 16], [0, 0, 1]])
        depth = np.full(size, d, np.float32)
        assert covisibility(depth, depth, K, K, np.eye(4), stride=4) == pytest.approx(1.0)
        # translate so that content moves 32 px to the right: columns with x0 <= 32 stay inside -> half
        T = pose_matrix(np.eye(3), [32 * d / f, 0, 0])
        assert covisibility(depth, depth, K, K, T, stride=4) == pytest.approx(0.5)
        assert covisibility(torch.from_numpy(depth)[None], torch.from_numpy(depth)[None], torch.from_numpy(K),
                            torch.from_numpy(K), torch.from_numpy(T), stride=4) == pytest.approx(0.5)
        assert covisibility(depth, 2 * depth, K, K, np.eye(4)) == 0.0  # inconsistent depth
        assert covisibility(np.zeros(size), depth, K, K, np.eye(4)) == 0.0  # no valid depth in view 0
        batched = covisibility(np.stack([depth, depth]), np.stack([depth, depth]), K, K, np.stack([np.eye(4), T]),
                               stride=4)
        np.testing.assert_allclose(batched, [1.0, 0.5])


# -------------------------------------------------------------------------------------------------------- pose
class TestPose:
    def test_rotation_and_vector_angles(self):
        for deg in (0.0, 1e-4, 10.0, 90.0, 179.9, 180.0):
            assert rotation_angle(rotation([1, 2, 3], deg)) == pytest.approx(deg, abs=1e-7)
        np.testing.assert_allclose(rotation_angle(np.stack([rotation([0, 0, 1], 30), np.eye(3)])), [30, 0],
                                   atol=1e-9)
        assert angle_between_vectors([1, 0, 0], [0, 2, 0]) == pytest.approx(90)
        assert angle_between_vectors([1, 0, 0], [-1, 1e-9, 0]) == pytest.approx(180)

    def test_relative_pose_error(self):
        R_gt, t_gt = rotation([0.2, 1, 0], 15), np.array([0.4, -0.1, 0.3])
        T = pose_matrix(R_gt, t_gt)
        assert relative_pose_error(T, R_gt, 5 * t_gt) == pytest.approx((0, 0), abs=1e-6)
        err_R, _ = relative_pose_error(T, R_gt @ rotation([1, -1, 2], 10), t_gt)
        assert err_R == pytest.approx(10, abs=1e-9)
        axis = np.cross(t_gt, [0, 0, 1])
        for deg, expected in ((20, 20), (170, 10), (180, 0), (90, 90)):
            assert relative_pose_error(T, R_gt, rotation(axis, deg) @ t_gt)[1] == pytest.approx(expected, abs=1e-6)
        assert relative_pose_error(T, None, None) == (float("inf"), float("inf"))
        assert relative_pose_error(T, R_gt, np.zeros(3))[1] == float("inf")
        assert relative_pose_error(T, np.full((3, 3), np.nan), t_gt) == (float("inf"), float("inf"))
        # pure rotation ground truth: translation error 0 by convention
        assert relative_pose_error(pose_matrix(R_gt, np.zeros(3)), R_gt, [1, 0, 0]) == pytest.approx((0, 0))

    def test_pose_auc_hand_computed(self):
        # sorted errors 1, 3, 7, inf (n = 4); recall curve through (0,0) (1,.25) (3,.5) (7,.75)
        # AUC@5:  (0.5*1*.25 + 2*(.25+.5)/2 + 2*.5) / 5 = 1.875 / 5
        # AUC@10: (0.125 + 0.75 + 4*(.5+.75)/2 + 3*.75) / 10 = 5.625 / 10
        aucs = pose_auc([7.0, np.inf, 1.0, 3.0], thresholds=(5, 10))
        np.testing.assert_allclose(aucs, [0.375, 0.5625])
        assert pose_auc([0.0, 0.0]) == pytest.approx([1.0, 1.0, 1.0])
        assert pose_auc([np.inf, np.nan, 30.0]) == [0.0, 0.0, 0.0]
        with pytest.raises(InputError):
            pose_auc([])
        with pytest.raises(InputError):
            pose_auc([1.0], thresholds=(0,))


# ------------------------------------------------------------------------------------------------------ robust
class TestRobust:
    @pytest.mark.parametrize("method", ["magsac", "ransac", "poselib"])
    def test_homography_with_outliers(self, method):
        rng = np.random.default_rng(0)
        x0 = rng.uniform([0, 0], [640, 480], (300, 2))
        p0, p1, outliers = noisy_matches(x0, warp_points_homography(x0, H_EXAMPLE), rng)
        H, mask = estimate_homography(p0, p1, method=method, threshold=3.0)
        assert H is not None and H.shape == (3, 3) and H[2, 2] == pytest.approx(1.0)
        assert homography_corner_error(H, H_EXAMPLE, (480, 640)) < 1.5
        assert mask.dtype == bool and mask.shape == (300,)
        assert (mask & ~outliers).sum() > 0.9 * (~outliers).sum() and (mask & outliers).sum() < 5

    @pytest.mark.parametrize("method", ["magsac", "ransac", "poselib"])
    def test_fundamental_with_outliers(self, method):
        K0, K1, T, _, x0, x1 = two_view_scene(6)
        p0, p1, outliers = noisy_matches(x0, x1, np.random.default_rng(1))
        F, mask = estimate_fundamental(p0, p1, method=method, threshold=1.0)
        assert F is not None and np.linalg.norm(F) == pytest.approx(1.0)
        d = sampson_distance(x0, x1, F)  # noise-free true matches
        assert np.median(d) < 0.5 and np.percentile(d, 90) < 1.5
        assert (mask & ~outliers).sum() > 0.6 * (~outliers).sum() and (mask & outliers).sum() < 5

    # SuperGlue's classic RANSAC keeps the best minimal-sample model without a final refit: looser bounds
    @pytest.mark.parametrize("method,max_err_R,max_err_t", [("superglue", 2.0, 10.0), ("magsac", 1.0, 3.0),
                                                            ("poselib", 1.0, 3.0)])
    @pytest.mark.parametrize("skew", [0.0, 5.0])
    def test_relative_pose_with_outliers(self, method, max_err_R, max_err_t, skew):
        K0, K1, T, X0, x0, x1 = two_view_scene(7)
        if skew:  # PoseLib's PINHOLE has no skew: exercises the normalised-coordinates path
            K0 = K0.copy()
            K0[0, 1] = skew
            x0 = X0 @ K0.T
            x0 = x0[:, :2] / x0[:, 2:]
        p0, p1, outliers = noisy_matches(x0, x1, np.random.default_rng(2))
        R, t, mask = estimate_relative_pose(p0, p1, K0, K1, method=method, threshold=1.0)
        assert R is not None and np.linalg.norm(t) == pytest.approx(1.0)
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-9)
        err_R, err_t = relative_pose_error(T, R, t)
        assert err_R < max_err_R and err_t < max_err_t
        assert (mask & ~outliers).sum() > 0.6 * (~outliers).sum() and (mask & outliers).sum() < 5

    def test_degenerate_inputs_return_none(self):
        K0, K1, _, _, x0, x1 = two_view_scene(8, n=50)
        line = np.c_[np.linspace(10, 600, 50), np.linspace(20, 400, 50)]
        nan = x0.copy()
        nan[3, 1] = np.nan
        inf = x1.copy()
        inf[0, 0] = np.inf
        cases = {
            "three points": (x0[:3], x1[:3]),
            "nan": (nan, x1),
            "inf": (x0, inf),
            "collinear": (line, x1),
            "identical": (np.tile(x0[:1], (50, 1)), x1),
            "empty": (np.zeros((0, 2)), np.zeros((0, 2))),
        }
        for name, (a, b) in cases.items():
            for method in ("magsac", "ransac", "poselib"):
                H, mask = estimate_homography(a, b, method=method)
                F, mask_f = estimate_fundamental(a, b, method=method)
                assert H is None and F is None, (name, method)
                assert mask.shape == (len(a),) and not mask.any() and not mask_f.any()
            for method in ("superglue", "magsac", "poselib"):
                R, t, mask = estimate_relative_pose(a, b, K0, K1, method=method)
                assert R is None and t is None and not mask.any(), (name, method)
        # a minimal sample gives one model or None (OpenCV may return stacked solutions), never an exception
        for k in (4, 5, 7):
            for method in ("superglue", "magsac", "poselib"):
                R, t, _ = estimate_relative_pose(x0[:k], x1[:k], K0, K1, method=method)
                assert R is None or (R.shape == (3, 3) and t.shape == (3,))
            F, _ = estimate_fundamental(x0[:k], x1[:k], method="ransac")
            assert F is None or F.shape == (3, 3)
        assert homography_corner_error(estimate_homography(line, line)[0], np.eye(3), (480, 640)) == float("inf")

    def test_malformed_inputs_raise(self):
        K = np.eye(3)
        with pytest.raises(InputError):
            estimate_homography(np.zeros((5, 2)), np.zeros((6, 2)))
        with pytest.raises(InputError):
            estimate_fundamental(np.zeros((5, 3)), np.zeros((5, 3)))
        with pytest.raises(InputError):
            estimate_relative_pose(np.zeros((5, 2)), np.zeros((5, 2)), np.zeros((3, 3)), K)
        with pytest.raises(ConfigError):
            estimate_homography(np.zeros((5, 2)), np.zeros((5, 2)), method="lmeds")
