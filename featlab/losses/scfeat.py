"""SCFeat / PoSFeat losses: the line-to-window descriptor loss and the policy-gradient detector loss.

Descriptor loss (PoSFeat "line-to-window", :func:`line_to_window_match` + :func:`line_to_window_loss`): for each
query point ``x`` of image 0 (one random pixel per 16x16 cell), ``line_samples`` points are spread evenly along the
part of its ground-truth epipolar line ``F x`` inside image 1; the one whose descriptor is most similar (argmax of
``softmax(cos / temperature)``, no gradient) is jittered by up to ``jitter`` x the image size and opens a window of
half-size ``window_size`` x the image width / height; a softmax of the cosine similarities on a
``window_points`` x ``window_points`` grid of that window gives the expected location ``x1`` and its spread
``std``. The loss is the mean over queries of ``w * d(x1, F x) / shorter side``, where ``w`` = 1/std (detached,
normalised to mean 1 over the kept queries), keeping only queries whose distance is below ``max_distance`` x the
shorter side (a far prediction is a wrong match the loss should not pull on). Both directions (0 -> 1, 1 -> 0).
The reference's window is +-0.1 in grid_sample coordinates ([-1, 1]), i.e. ``window_size`` = 0.05 here.

Detector loss (DISK-style REINFORCE, :func:`policy_gradient_loss`): the caller samples one keypoint per 8x8 cell
(categorical over the cell) and accepts it (Bernoulli), with log-probabilities ``logp``; matches follow the dual
softmax of descriptor cosines (``match_probabilities``, temperature 1/60); the rewards of candidate matches are
:func:`epipolar_rewards` (+1 within 2 px of the epipolar line in both images, -0.25 otherwise), or, with SCFeat's
fundamental-matrix factor ``L_F = tanh(min error of 8-point estimates)``, ``1 - L_F`` for good and ``-L_F`` for bad
matches (:func:`scfeat_rewards`); each accepted keypoint costs ``keypoint_penalty``. The loss is
``-(sum_ij P_ij r_ij (logp0_i + logp1_j)) + penalty * (sum logp0 + sum logp1)`` per pair (P detached), so its
gradient is the REINFORCE estimate of the gradient of the expected reward.

All functions are pure functions of tensors, float32 with autocast disabled.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conf import resolve_conf
from ..geometry.epipolar import epipolar_distance
from ..geometry.homography import to_homogeneous
from ..pixels import sample_map

default_conf = {
    "temperature": 1.0 / 60.0,  # softmax temperature on cosine similarities (the reference: 60 cos)
    "line_samples": 100,  # points sampled along the epipolar line
    "window_size": 0.05,  # half-size of the window, fraction of the image width / height (reference: +-0.1 in
    # [-1, 1] coordinates)
    "window_points": 11,  # the window is sampled on window_points x window_points locations
    "jitter": 0.01,  # the line's best point is moved by up to this fraction of the image size before the window
    # opens (uniform; the reference jitters, so that the window's centre is not always the prediction)
    "max_distance": 0.1,  # queries whose expected location is farther from the line than this x the shorter side
    # leave the loss
    "std_weighting": True,  # weight each query by 1/std (detached, mean 1)
    "symmetric": True,  # also the direction 1 -> 0
}


# ------------------------------------------------------------------------------------------------- geometry
def line_segments_in_image(lines: torch.Tensor, image_size, eps: float = 1e-9):
    """End points of the parts of lines ``a x + b y + c = 0`` inside the image ``[0, W] x [0, H]``.

    Args:
        lines: (..., 3); image_size: (H, W).
    Returns:
        (start (..., 2), end (..., 2), valid (...) bool): valid where the line crosses the image (a segment of
        positive length).
    """
    h, w = image_size
    a, b, c = lines.unbind(-1)
    big = torch.finfo(lines.dtype).max / 4
    safe_b = torch.where(b.abs() > eps, b, torch.full_like(b, eps))
    safe_a = torch.where(a.abs() > eps, a, torch.full_like(a, eps))
    zero, full_w, full_h = torch.zeros_like(a), torch.full_like(a, float(w)), torch.full_like(a, float(h))
    # intersections with the borders x = 0, x = W (solved for y) and y = 0, y = H (solved for x)
    cand = torch.stack([torch.stack([zero, -c / safe_b], -1), torch.stack([full_w, -(a * w + c) / safe_b], -1),
                        torch.stack([-c / safe_a, zero], -1), torch.stack([-(b * h + c) / safe_a, full_h], -1)],
                       -2)  # (..., 4, 2)
    ok = torch.stack([b.abs() > eps, b.abs() > eps, a.abs() > eps, a.abs() > eps], -1)
    tol = 1e-4 * max(h, w)
    x, y = cand[..., 0], cand[..., 1]
    inside = ok & (x >= -tol) & (x <= w + tol) & (y >= -tol) & (y <= h + tol)
    cand = torch.where(inside[..., None], cand.clamp(min=-big, max=big), torch.zeros_like(cand))
    # the segment: the two inside candidates farthest apart
    d = (cand[..., :, None, :] - cand[..., None, :, :]).norm(dim=-1)
    pair_ok = inside[..., :, None] & inside[..., None, :]
    d = torch.where(pair_ok, d, torch.full_like(d, -1.0))
    flat = d.flatten(-2).argmax(-1)
    i, j = flat // 4, flat % 4
    start = torch.gather(cand, -2, i[..., None, None].expand(*i.shape, 1, 2))[..., 0, :]
    end = torch.gather(cand, -2, j[..., None, None].expand(*j.shape, 1, 2))[..., 0, :]
    valid = d.flatten(-2).amax(-1) > tol
    return start, end, valid


def epipolar_lines(points0: torch.Tensor, F_0to1: torch.Tensor) -> torch.Tensor:
    """Lines ``F x0`` in image 1: (B, N, 2), (B, 3, 3) -> (B, N, 3)."""
    return to_homogeneous(points0.float()) @ F_0to1.float().transpose(-1, -2)


# ----------------------------------------------------------------------------------------- line-to-window
def line_to_window_match(points0: torch.Tensor, desc0: torch.Tensor, map1: torch.Tensor, F_0to1: torch.Tensor,
                         extent1, image_size1, conf=None, generator: torch.Generator | None = None) -> dict:
    """Search along the epipolar line, then soft-argmax in a window (see the module docstring).

    Args:
        points0: (B, N, 2) query points of image 0, featlab pixels.
        desc0: (B, N, D) their descriptors, L2-normalised.
        map1: (B, D, h, w) descriptor map of image 1 covering ``extent1`` = (Hp, Wp) (sampled with
            :func:`featlab.pixels.sample_map`, vectors L2-normalised after sampling).
        F_0to1: (B, 3, 3); image_size1: (H, W) of image 1 (the line is clipped to it).
        generator: for the jitter.
    Returns:
        points (B, N, 2) expected locations in image 1 (differentiable w.r.t. desc0 and map1); stds (B, N) their
        spread (pixels); centres (B, N, 2) the (jittered) window centres; valid (B, N) bool: the line crosses
        image 1.
    """
    c = resolve_conf(default_conf, conf, "loss")
    h, w = image_size1
    bsz, n = points0.shape[:2]
    t = float(c.temperature)
    with torch.autocast(device_type=points0.device.type, enabled=False):
        desc0, map1 = desc0.float(), map1.float()
        start, end, valid = line_segments_in_image(epipolar_lines(points0, F_0to1), image_size1)
        s = int(c.line_samples)
        alpha = torch.linspace(0.0, 1.0, s, device=points0.device)
        line_pts = start[..., None, :] + alpha[:, None] * (end - start)[..., None, :]  # B, N, S, 2
        with torch.no_grad():
            d_line = sample_map(map1, line_pts.reshape(bsz, n * s, 2), extent1, normalize=True).reshape(bsz, n, s, -1)
            sim = (d_line * desc0.detach()[..., None, :]).sum(-1) / t
            best = torch.softmax(sim, -1).argmax(-1)  # B, N
            centre = torch.gather(line_pts, 2, best[..., None, None].expand(bsz, n, 1, 2))[..., 0, :]
            size = centre.new_tensor([w, h])
            noise = torch.rand(centre.shape, generator=generator, device=centre.device) * 2 - 1
            centre = centre + noise * float(c.jitter) * size
            centre = torch.minimum(torch.maximum(centre, torch.zeros_like(centre)), size)
            k = int(c.window_points)
            offs = torch.linspace(-1.0, 1.0, k, device=points0.device) * float(c.window_size)
            oy, ox = torch.meshgrid(offs * h, offs * w, indexing="ij")
            grid = centre[..., None, :] + torch.stack([ox, oy], -1).reshape(1, 1, k * k, 2)  # B, N, K, 2
        d_win = sample_map(map1, grid.reshape(bsz, n * k * k, 2), extent1, normalize=True).reshape(bsz, n, k * k, -1)
        prob = torch.softmax((d_win * desc0[..., None, :]).sum(-1) / t, -1)  # B, N, K
        mean = (prob[..., None] * grid).sum(-2)
        var = (prob * ((grid - mean[..., None, :]) ** 2).sum(-1)).sum(-1)
        std = (var + 1e-8).sqrt()
    return {"points": mean, "stds": std, "centres": centre, "valid": valid}


def line_to_window_loss(points0: torch.Tensor, points1: torch.Tensor, stds: torch.Tensor, F_0to1: torch.Tensor,
                        image_size1, valid: torch.Tensor, max_distance: float = 0.1, std_weighting: bool = True):
    """The loss of expected locations: 1/std-weighted distance to the epipolar line, masked to near ones.

    Args:
        points0: (B, N, 2) queries in image 0; points1: (B, N, 2) expected locations in image 1; stds: (B, N).
        F_0to1: (B, 3, 3); image_size1: (H, W); valid: (B, N) bool (queries that may enter the loss).
        max_distance: fraction of the shorter side above which a query leaves the loss.
    Returns:
        (scalar loss, (B, N) distances in pixels, (B, N) bool mask of the queries in the loss).
    """
    short = float(min(image_size1))
    with torch.autocast(device_type=points0.device.type, enabled=False):
        dist = epipolar_distance(points0.float(), points1.float(), F_0to1.float(), symmetric=False)
        mask = valid & (dist.detach() < max_distance * short)
        if std_weighting:
            wts = torch.where(mask, 1.0 / (stds.detach().float() + 1e-6), torch.zeros_like(dist))
            wts = wts * (mask.sum().clamp(min=1) / wts.sum().clamp(min=1e-12))
        else:
            wts = mask.float()
        loss = (torch.where(mask, dist, torch.zeros_like(dist)) * wts).sum() / short / mask.sum().clamp(min=1)
    return loss, dist, mask


class LineToWindowLoss:
    """The descriptor loss of SCFeat/PoSFeat as ``loss(pred, data) -> (losses, metrics)``.

    ``pred``: ``local_map0``, ``local_map1`` (B, D, Hp/4, Wp/4); ``data``: ``points0``, ``points1`` (B, N, 2)
    queries, ``K0``, ``K1`` (B, 3, 3), ``T_0to1`` (B, 4, 4), ``image0`` (B, 3, H, W) (for the size); optional
    ``generator`` (torch.Generator for the jitter).
    """

    def __init__(self, conf=None):
        self.conf = resolve_conf(default_conf, conf, "loss")

    def __call__(self, pred: dict, data: dict):
        from ..geometry.epipolar import fundamental_from_pose
        from ..nn.resunet import map_extent

        c = self.conf
        size = tuple(data["image0"].shape[-2:])
        extent = map_extent(*size)
        gen = data.get("generator")
        F01 = fundamental_from_pose(data["K0"].float(), data["K1"].float(), data["T_0to1"].float())
        directions = [("0", "1", F01)]
        if c.symmetric:
            directions.append(("1", "0", F01.transpose(-1, -2)))  # x0^T F^T x1 = 0: F^T maps 1 -> 0
        losses, metrics, total = {}, {}, 0.0
        for a, b, Fab in directions:
            q = data[f"points{a}"].float()
            desc = sample_map(pred[f"local_map{a}"].float(), q, extent, normalize=True)
            m = line_to_window_match(q, desc, pred[f"local_map{b}"], Fab, extent, size, c, generator=gen)
            loss, dist, mask = line_to_window_loss(q, m["points"], m["stds"], Fab, size, m["valid"],
                                                   float(c.max_distance), bool(c.std_weighting))
            losses[f"epipolar{a}{b}"] = loss
            total = total + loss
            kept = dist[m["valid"]]
            metrics[f"distance{a}{b}_median"] = kept.median().detach() if len(kept) else dist.new_tensor(float("nan"))
            metrics[f"kept{a}{b}"] = mask.float().sum().detach() / m["valid"].float().sum().clamp(min=1)
        losses["total"] = total / len(directions)
        return losses, metrics


# ------------------------------------------------------------------------------------------ policy gradient
def match_probabilities(desc0: torch.Tensor, desc1: torch.Tensor, temperature: float = 1.0 / 60.0) -> torch.Tensor:
    """Dual-softmax match probabilities ``softmax_row(S) * softmax_col(S)``, S = cos / temperature.

    Args:
        desc0: (N0, D), desc1: (N1, D) L2-normalised.
    Returns:
        (N0, N1) in [0, 1].
    """
    s = (desc0.float() @ desc1.float().T) / temperature
    return torch.softmax(s, 1) * torch.softmax(s, 0)


def epipolar_rewards(points0: torch.Tensor, points1: torch.Tensor, F_0to1: torch.Tensor, threshold: float = 2.0,
                     good: float = 1.0, bad: float = -0.25):
    """Reward of every candidate match (i, j): ``good`` when x1_j is within ``threshold`` px of the line F x0_i and
    x0_i within ``threshold`` px of F^T x1_j, else ``bad``.

    Args:
        points0: (N0, 2), points1: (N1, 2) featlab pixels; F_0to1: (3, 3).
    Returns:
        (rewards (N0, N1), is_good (N0, N1) bool).
    """
    with torch.autocast(device_type=points0.device.type, enabled=False):
        n0, n1 = len(points0), len(points1)
        p0 = points0.float()[:, None].expand(n0, n1, 2)
        p1 = points1.float()[None].expand(n0, n1, 2)
        Fm = F_0to1.float()
        # distances in both images (the symmetric mean would let one large distance hide behind a small one)
        d1 = epipolar_distance(p0, p1, Fm, symmetric=False)
        d0 = epipolar_distance(p1, p0, Fm.transpose(-1, -2), symmetric=False)
        is_good = (d0 < threshold) & (d1 < threshold)
    rewards = torch.where(is_good, torch.full_like(d0, good), torch.full_like(d0, bad))
    return rewards, is_good


def scfeat_rewards(is_good: torch.Tensor, f_loss: float | torch.Tensor) -> torch.Tensor:
    """SCFeat's rewards with the fundamental-matrix factor ``L_F``: ``1 - L_F`` for good matches, ``-L_F`` for bad.

    Args:
        is_good: (N0, N1) bool; f_loss: L_F in [0, 1].
    Returns:
        (N0, N1) float32.
    """
    lf = torch.as_tensor(f_loss, dtype=torch.float32, device=is_good.device)
    return torch.where(is_good, 1.0 - lf, -lf).float()


def policy_gradient_loss(logp0: torch.Tensor, logp1: torch.Tensor, match_probs: torch.Tensor,
                         rewards: torch.Tensor, keypoint_penalty: float = 0.001):
    """REINFORCE loss of one pair (see the module docstring).

    Args:
        logp0: (N0,) log-probability of each accepted keypoint of image 0 (cell choice + acceptance).
        logp1: (N1,) the same for image 1.
        match_probs: (N0, N1) match probabilities (treated as constants).
        rewards: (N0, N1).
        keypoint_penalty: cost of each accepted keypoint.
    Returns:
        (loss scalar, expected reward scalar (detached): sum P r - penalty (N0 + N1)).
    """
    P = match_probs.detach()
    weight = P * rewards
    reinforce = (weight * (logp0[:, None] + logp1[None, :])).sum()
    penalty = keypoint_penalty * (logp0.sum() + logp1.sum())
    expected = weight.sum() - keypoint_penalty * (len(logp0) + len(logp1))
    return -reinforce + penalty, expected.detach()


__all__ = ["default_conf", "line_segments_in_image", "epipolar_lines", "line_to_window_match",
           "line_to_window_loss", "LineToWindowLoss", "match_probabilities", "epipolar_rewards", "scfeat_rewards",
           "policy_gradient_loss"]
