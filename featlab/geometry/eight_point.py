"""Batched normalised 8-point estimation of fundamental matrices in torch, and a scale-free F error.

Used by SCFeat's fundamental-matrix reward (:mod:`featlab.training.scfeat`): many random 8-match subsets of the
good matches of a pair are solved at once, and the smallest error to the ground-truth matrix becomes the reward
factor. Everything runs in float64 with autocast disabled (the design matrix of pixel coordinates is badly
conditioned even after Hartley normalisation in float32).

Two defects of the SCFeat reference are avoided here (tests/test_scfeat.py checks both):

- the reference re-seeds its generator on every call, so its "100 random draws" are the same 100 subsets at every
  step, and its index range never reaches the last match. :func:`random_subsets` draws from a generator the caller
  owns (fresh numbers each call) over all ``n`` indices.
- the reference compares un-normalised pixel-coordinate F matrices, whose entries differ by orders of magnitude
  (the last row and column dominate). :func:`fundamental_error` compares matrices in normalised camera coordinates
  (``E = K1^T F K0``, each scaled to unit Frobenius norm, the sign ambiguity removed).
"""
from __future__ import annotations

import torch

from .epipolar import hartley_normalization


def eight_point(points0: torch.Tensor, points1: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Normalised (Hartley) 8-point fundamental matrix of correspondences, batched.

    Solves ``x1^T F x0 = 0`` in least squares (smallest right singular vector of the design matrix of the
    Hartley-normalised points), enforces rank 2 (zeroes the smallest singular value), undoes the normalisation and
    scales the result to unit Frobenius norm.

    Args:
        points0: (..., N, 2) points in image 0 (any pixel convention, the same in both images), N >= 8.
        points1: (..., N, 2) corresponding points in image 1.
        weights: optional (..., N) non-negative weights of the equations (0 drops a correspondence).
    Returns:
        (..., 3, 3) fundamental matrices with unit Frobenius norm, dtype float64 (float64 input stays float64).
    Raises:
        ValueError: fewer than 8 correspondences or mismatched shapes.
    """
    if points0.shape != points1.shape or points0.shape[-1] != 2:
        raise ValueError(f"points0 and points1 must both be (..., N, 2), got {tuple(points0.shape)} and "
                         f"{tuple(points1.shape)}")
    if points0.shape[-2] < 8:
        raise ValueError(f"the 8-point method needs at least 8 correspondences, got {points0.shape[-2]}")
    with torch.autocast(device_type=points0.device.type, enabled=False):
        p0, T0 = hartley_normalization(points0.double())
        p1, T1 = hartley_normalization(points1.double())
        x0, y0 = p0[..., 0], p0[..., 1]
        x1, y1 = p1[..., 0], p1[..., 1]
        one = torch.ones_like(x0)
        # row of x1^T F x0 = 0 for F in row-major order
        A = torch.stack([x1 * x0, x1 * y0, x1, y1 * x0, y1 * y0, y1, x0, y0, one], -1)  # (..., N, 9)
        if weights is not None:
            A = A * weights.double()[..., None]
        # the null vector of A^T A (9 x 9) is the smallest right singular vector of A: much cheaper for large N
        _, vecs = torch.linalg.eigh(A.transpose(-1, -2) @ A)
        F = vecs[..., 0].reshape(*A.shape[:-2], 3, 3)
        U, S, Vh = torch.linalg.svd(F)
        S = torch.cat([S[..., :2], torch.zeros_like(S[..., 2:])], -1)
        F = U @ torch.diag_embed(S) @ Vh
        F = T1.transpose(-1, -2) @ F @ T0
        return F / F.flatten(-2).norm(dim=-1)[..., None, None].clamp(min=1e-300)


def random_subsets(n: int, num_subsets: int, size: int = 8, generator: torch.Generator | None = None,
                   device=None) -> torch.Tensor:
    """``num_subsets`` random subsets of ``size`` distinct indices out of ``range(n)`` (every index possible).

    Args:
        generator: the caller's generator; it advances, so each call draws new subsets.
    Returns:
        (num_subsets, size) int64.
    Raises:
        ValueError: n < size.
    """
    if n < size:
        raise ValueError(f"cannot draw {size} distinct indices out of {n}")
    keys = torch.rand(num_subsets, n, generator=generator, device=device)
    return keys.argsort(-1)[:, :size]


def fundamental_error(F_est: torch.Tensor, F_gt: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor) -> torch.Tensor:
    """Scale- and sign-free distance between fundamental matrices, compared in normalised camera coordinates.

    ``E = K1^T F K0`` for both matrices, each divided by its Frobenius norm; the error is
    ``min(|E_est - E_gt|, |E_est + E_gt|)`` (Frobenius), in [0, sqrt(2)]. Comparing the pixel-coordinate matrices
    instead would weigh their entries by powers of the focal length.

    Args:
        F_est: (..., 3, 3); F_gt, K0, K1: (3, 3) or broadcastable to F_est.
    Returns:
        (...) float64 errors.
    """
    with torch.autocast(device_type=F_est.device.type, enabled=False):
        def unit_essential(F):
            E = K1.double().transpose(-1, -2) @ F.double() @ K0.double()
            return E / E.flatten(-2).norm(dim=-1)[..., None, None].clamp(min=1e-300)

        Ee, Eg = unit_essential(F_est), unit_essential(F_gt)
        return torch.minimum((Ee - Eg).flatten(-2).norm(dim=-1), (Ee + Eg).flatten(-2).norm(dim=-1))


__all__ = ["eight_point", "random_subsets", "fundamental_error"]
