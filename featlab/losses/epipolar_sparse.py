"""Sparse epipolar loss: camera-pose supervision of descriptors on soft matches among detected keypoints.

CAPS (:mod:`featlab.losses.caps`) matches a query against every cell of a dense map. A descriptor of detected
keypoints (``pose-sift``: RootSIFT + a patch network, :mod:`featlab.training.pose`) only ever matches other
detected keypoints, so here the candidates of a query ``x0_i`` of image 0 are the keypoints ``x1_j`` of image 1:

1. Soft matches: ``P = softmax_j(<d0_i, d1_j> / temperature)`` (N, M) over image 1's valid keypoints (and
   ``Q`` (M, N) the other way). The soft match of ``x0_i`` is ``x1_hat_i = sum_j P_ij x1_j``, its spread
   ``std_i = sqrt(sum_j P_ij |x1_j - x1_hat_i|^2)`` (pixels).
2. ``epipolar``: distance of ``x1_hat_i`` to the epipolar line ``F x0_i`` (the CAPS term on sparse candidates),
   weighted by the detached inverse spread, normalised to mean 1 (:func:`featlab.losses.caps.inverse_std_weights`,
   spreads floored at ``min_std`` px): confident queries count more, as in CAPS.
3. ``expected``: ``sum_j P_ij min(D_ij, max_distance)`` with ``D_ij`` the distance of ``x1_j`` to the line of
   ``x0_i``. The soft mean of two wrong keypoints on either side of the line can lie on it; the expected distance
   cannot: it is ~0 only when the mass sits on keypoints near the line. Its gradient with respect to ``P_ij`` is
   the (capped) distance itself, so every keypoint off the line acts as a negative.
4. ``cycle``: matching ``x1_hat`` back, ``x0_back_i = sum_j P_ij sum_k Q_jk x0_k`` should return ``x0_i``.

Masks (those of CAPS): padding and queries whose epipolar line misses image 1 (or is undefined at the epipole)
enter no term; optional thresholds (x the longer image side, null: off) drop a query from the epipolar terms
when its soft match is further than ``max_epipolar_error`` from the line (no correspondence among the
keypoints: occluded or not detected), and from the cycle term when its epipolar error exceeds
``max_cycle_error`` or its cycle distance ``max_cycle_distance``. Distances enter the loss divided by the longer
side of the image they are measured in. With ``symmetric`` the same terms are added for queries of image 1.

:func:`epipolar_sparse_loss` is the pure ``loss(pred, data) -> (losses, metrics)``; :class:`EpipolarSparseLoss`
binds a config to it. Everything runs in float32 with autocast disabled.
"""
from __future__ import annotations

import torch

from ..conf import none_or, resolve_conf
from ..errors import ConfigError
from ..geometry.epipolar import fundamental_from_pose
from .caps import epipolar_errors, epipolar_line_valid, inverse_std_weights, masked_mean

default_conf = {
    "temperature": 0.05,  # softmax temperature on cosine similarities of the (unit) descriptors
    "epipolar_weight": 1.0,  # weight of the epipolar distance of the soft match (1/std weighted)
    "expected_weight": 1.0,  # weight of the expected (capped) epipolar distance of the soft match distribution
    "cycle_weight": 0.1,  # weight of the cycle-consistency term
    "std_weighting": True,  # weight each query's epipolar term by 1/std (detached, mean 1)
    "min_std": 2.0,  # px: floor of the spread in that weighting (one over-confident query cannot take all weight)
    "max_distance": 0.05,  # cap of a keypoint's line distance in the expected term, x the longer image side
    "max_epipolar_error": none_or(float),  # x longer side: queries whose soft match is further leave both epipolar
    #                                        terms (null: off)
    "max_cycle_error": none_or(float),  # x longer side: queries whose epipolar error exceeds it leave the cycle
    #                                     term (null: off)
    "max_cycle_distance": none_or(float),  # x longer side: cycle distances above it leave the cycle term (null: off)
    "symmetric": True,  # also the terms of queries of image 1 matched into image 0
}

TERMS = ("epipolar", "expected", "cycle")


def _size(s) -> tuple[int, int]:
    return tuple(int(v) for v in (s.tolist() if torch.is_tensor(s) else s))


def line_distances(points0: torch.Tensor, points1: torch.Tensor, F_0to1: torch.Tensor) -> torch.Tensor:
    """Distance (px) of every point of image 1 to the epipolar line of every point of image 0.

    Args:
        points0: (N, 2), points1: (M, 2) featlab pixels; F_0to1: (3, 3) with ``x1^T F x0 = 0``.
    Returns:
        (N, M): ``D[i, j]`` = distance of ``points1[j]`` to the line ``F points0[i]``.
    """
    lines = torch.cat([points0, torch.ones_like(points0[:, :1])], -1) @ F_0to1.T  # N, 3
    lines = lines / lines[:, :2].norm(dim=-1, keepdim=True).clamp(min=torch.finfo(lines.dtype).tiny)
    return (lines[:, :2] @ points1.T + lines[:, 2:]).abs()


def soft_match_terms(points0: torch.Tensor, points1: torch.Tensor, desc0: torch.Tensor, desc1: torch.Tensor,
                     mask0: torch.Tensor, mask1: torch.Tensor, F_0to1: torch.Tensor, image_size0, image_size1,
                     conf) -> tuple[dict, dict]:
    """The loss terms of the queries of image 0 of one pair (module docstring, steps 1-4).

    Args:
        points0: (N, 2), points1: (M, 2) keypoints (featlab pixels); desc0: (N, D), desc1: (M, D) unit rows;
        mask0: (N,), mask1: (M,) bool (False: padding); F_0to1: (3, 3); image_size0/1: (H, W); conf: resolved.
    Returns:
        (losses, info): losses ``epipolar``, ``expected``, ``cycle`` (scalars, unweighted); info (N,) tensors
        ``errors`` (px, soft match to line), ``expected_errors`` (px), ``cycle_distances`` (px), ``stds`` (px) and
        masks ``valid``, ``epipolar_mask``, ``cycle_mask``.
    """
    p0, p1, F01 = points0.float(), points1.float(), F_0to1.float()
    long0, long1 = float(max(image_size0)), float(max(image_size1))
    if not bool(mask1.any()):  # no candidate: nothing to match, zero terms with a gradient path
        zero = desc0.float().sum() * 0.0
        n = len(p0)
        z = p0.new_zeros(n)
        off = torch.zeros(n, dtype=torch.bool, device=p0.device)
        return {t: zero for t in TERMS}, {"errors": z, "expected_errors": z, "cycle_distances": z, "stds": z,
                                          "valid": off, "epipolar_mask": off, "cycle_mask": off}
    sim = desc0.float() @ desc1.float().T / float(conf.temperature)  # N, M
    neg = torch.finfo(sim.dtype).min
    P = torch.softmax(sim.masked_fill(~mask1[None, :], neg), dim=1)
    Q = torch.softmax(sim.T.masked_fill(~mask0[None, :], neg), dim=1)  # M, N
    x1 = P @ p1  # N, 2
    stds = ((P @ (p1 * p1).sum(-1, keepdim=True))[:, 0] - (x1 * x1).sum(-1)).clamp(min=1e-12).sqrt()
    errors = epipolar_errors(p0[None], x1[None], F01[None])[0]
    D = line_distances(p0, p1, F01).clamp(max=float(conf.max_distance) * long1)
    expected = (P * D).sum(1)
    back = P @ (Q @ p0)
    cycles = (back - p0).norm(dim=-1)
    with torch.no_grad():
        valid = mask0 & epipolar_line_valid(p0[None], F01[None], image_size1)[0]
        epi_mask = valid
        if conf.max_epipolar_error is not None:
            epi_mask = epi_mask & (errors <= float(conf.max_epipolar_error) * long1)
        cyc_mask = epi_mask
        if conf.max_cycle_error is not None:
            cyc_mask = cyc_mask & (errors <= float(conf.max_cycle_error) * long1)
        if conf.max_cycle_distance is not None:
            cyc_mask = cyc_mask & (cycles <= float(conf.max_cycle_distance) * long0)
    weights = inverse_std_weights(stds.clamp(min=float(conf.min_std)), epi_mask) if conf.std_weighting else None
    losses = {"epipolar": masked_mean(errors / long1, epi_mask, weights),
              "expected": masked_mean(expected / long1, epi_mask),
              "cycle": masked_mean(cycles / long0, cyc_mask)}
    info = {"errors": errors.detach(), "expected_errors": expected.detach(), "cycle_distances": cycles.detach(),
            "stds": stds.detach(), "valid": valid, "epipolar_mask": epi_mask, "cycle_mask": cyc_mask}
    return losses, info


def epipolar_sparse_loss(pred: dict, data: dict, conf=None) -> tuple[dict, dict]:
    """Sparse epipolar loss of a batch of posed pairs (module docstring).

    Args:
        pred: ``descriptors0`` (B, N, D), ``descriptors1`` (B, M, D) unit rows (padding rows: anything).
        data: ``keypoints0`` (B, N, 2), ``keypoints1`` (B, M, 2) featlab pixels; ``masks0`` (B, N), ``masks1``
            (B, M) bool (optional: all True); ``K0``, ``K1`` (B, 3, 3); ``T_0to1`` (B, 4, 4) (or ``F_0to1``
            (B, 3, 3)); ``image_size0``, ``image_size1`` (B, 2) or (2,) as (H, W).
        conf: overrides of :data:`default_conf`.
    Returns:
        (losses, metrics): losses ``total`` (weighted sum, mean over pairs and directions) and the unweighted
        ``epipolar``, ``expected``, ``cycle``; metrics (detached scalars) ``epipolar_error`` (median px of the soft
        matches of valid queries), ``expected_error`` (mean px), ``cycle_distance`` (median px), ``valid_fraction``.
    """
    conf = resolve_conf(default_conf, conf, "loss")
    d0, d1 = pred["descriptors0"], pred["descriptors1"]
    k0, k1 = data["keypoints0"], data["keypoints1"]
    b = k0.shape[0]
    m0 = data.get("masks0", torch.ones(k0.shape[:2], dtype=torch.bool, device=k0.device))
    m1 = data.get("masks1", torch.ones(k1.shape[:2], dtype=torch.bool, device=k1.device))
    with torch.autocast(device_type=k0.device.type, enabled=False):
        F01 = data["F_0to1"] if "F_0to1" in data else fundamental_from_pose(data["K0"].double(), data["K1"].double(),
                                                                            data["T_0to1"].double())
        F01 = F01.float()
        sizes = [data["image_size0"], data["image_size1"]]
        sizes = [s if torch.is_tensor(s) and s.ndim == 2 else [s] * b for s in sizes]
        sums = {t: d0.new_zeros((), dtype=torch.float32) for t in TERMS}
        infos = []
        directions = [(0, 1)] + ([(1, 0)] if conf.symmetric else [])
        for i in range(b):
            s0, s1 = _size(sizes[0][i]), _size(sizes[1][i])
            for a, c in directions:
                if a == 0:
                    args = (k0[i], k1[i], d0[i], d1[i], m0[i], m1[i], F01[i], s0, s1)
                else:
                    args = (k1[i], k0[i], d1[i], d0[i], m1[i], m0[i], F01[i].T, s1, s0)
                losses, info = soft_match_terms(*args, conf)
                for t in TERMS:
                    sums[t] = sums[t] + losses[t]
                infos.append(info)
    n = b * len(directions)
    out = {t: sums[t] / n for t in TERMS}
    out["total"] = (float(conf.epipolar_weight) * out["epipolar"] + float(conf.expected_weight) * out["expected"]
                    + float(conf.cycle_weight) * out["cycle"])
    with torch.no_grad():
        valid = torch.cat([x["valid"] for x in infos])
        errs = torch.cat([x["errors"][x["valid"]] for x in infos])
        exp = torch.cat([x["expected_errors"][x["valid"]] for x in infos])
        cyc = torch.cat([x["cycle_distances"][x["valid"]] for x in infos])
        nan = torch.tensor(float("nan"))
        metrics = {"epipolar_error": errs.median() if len(errs) else nan,
                   "expected_error": exp.mean() if len(exp) else nan,
                   "cycle_distance": cyc.median() if len(cyc) else nan,
                   "valid_fraction": valid.float().mean() if len(valid) else nan}
    return out, metrics


class EpipolarSparseLoss:
    """:func:`epipolar_sparse_loss` with a fixed config: ``loss(pred, data) -> (losses, metrics)``."""

    def __init__(self, conf=None):
        self.conf = resolve_conf(default_conf, conf, "loss")
        if float(self.conf.temperature) <= 0 or float(self.conf.max_distance) <= 0 or float(self.conf.min_std) < 0:
            raise ConfigError(f"loss.temperature and loss.max_distance must be > 0 and loss.min_std >= 0, got "
                              f"{self.conf.temperature}, {self.conf.max_distance}, {self.conf.min_std}")
        for k in TERMS:
            if float(self.conf[f"{k}_weight"]) < 0:
                raise ConfigError(f"loss.{k}_weight must be >= 0, got {self.conf[f'{k}_weight']}")

    def __call__(self, pred: dict, data: dict) -> tuple[dict, dict]:
        return epipolar_sparse_loss(pred, data, self.conf)


__all__ = ["default_conf", "line_distances", "soft_match_terms", "epipolar_sparse_loss", "EpipolarSparseLoss"]
