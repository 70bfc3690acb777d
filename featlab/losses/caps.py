"""CAPS: differentiable coarse-to-fine matching and the camera-pose (epipolar) loss.

Wang, Zhou, Hariharan, Snavely, "Learning Feature Descriptors using Camera Pose Supervision", ECCV 2020.

Given dense coarse (H/16) and fine (H/4) descriptor maps of two images and query points ``x`` in image 0:

1. Coarse: the coarse descriptor of ``x`` is correlated (cosine) with every cell of image 1's coarse map; a softmax
   with temperature gives a distribution over the cells, its mean is the predicted location ``x1_c`` and its spread
   (std) a confidence. The most likely cell is ``c1``.
2. Fine: the fine descriptor of ``x`` is correlated with the fine cells of image 1 inside a window around ``c1``
   (half-size ``window_size`` x the image's width / height); softmax inside the window -> ``x1_f`` and its std.
   The cycle terms match ``x1_c`` back at the coarse level and ``x1_f`` back coarse-to-fine.
3. Loss (:func:`caps_loss_terms`, a pure function of the predicted locations): the distance of ``x1_c`` and
   ``x1_f`` to the epipolar line ``F x`` (pixels divided by the image's longer side), weighted by the inverse std
   (detached, floored at ``min_std`` cells, normalised to mean 1 over the queries of the term); plus cycle
   consistency: matching ``x1_c`` (``x1_f``) back into image 0 should return ``x``.
   Masks: queries whose epipolar line misses image 1 (or is undefined: ``x`` at the epipole) and padding queries
   enter no term; queries whose coarse error exceeds ``max_coarse_error`` leave the fine loss and both cycle terms
   (their fine window cannot hold the true match, and a coarse match far off the line is a wrong match whose cycle
   the loss should not reward). The CAPS reference's thresholds are optional keys, off by default:
   ``max_epipolar_error`` (a level's epipolar term, its ``th_epipolar``), ``max_cycle_error`` (a level's cycle
   term, by that level's epipolar error, its ``th_cycle``) and ``max_cycle_distance`` (cycle distances above it
   contribute nothing, its ``cycle_consistency_loss(th=10)``).

Implementation notes:
- The fine window is a mask on the correlation with the *whole* fine map: one matrix product per chunk of queries
  (B, n, HW) instead of a gathered (B, n, K, C) window tensor, which is ~10x larger for C = 128.
- Correlations run in chunks of ``chunk_size`` queries so that the transient memory is bounded; pass
  ``checkpoint=True`` to also recompute each chunk in the backward pass instead of storing its softmax.
- Everything here runs in float32 with autocast disabled (maps are cast), whatever the network's dtype.
- Cell centres follow :mod:`featlab.pixels` (cell (i, j) of a stride-s map is at ((j + .5) s, (i + .5) s)); query
  descriptors are sampled with :func:`featlab.pixels.sample_map`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint as _checkpoint

from ..conf import none_or, resolve_conf
from ..geometry.epipolar import epipolar_distance, fundamental_from_pose
from ..nn.resunet import map_extent
from ..pixels import pixel_grid, sample_map

default_conf = {
    "temperature": 0.02,  # softmax temperature on cosine similarities (logits = cos / temperature)
    "window_size": 0.125,  # half-size of the fine search window, fraction of the image width / height
    "coarse_weight": 1.0,  # weight of the coarse epipolar loss
    "fine_weight": 1.0,  # weight of the fine epipolar loss
    "cycle_weight": 0.1,  # weight of each cycle-consistency term (coarse and fine)
    "std_weighting": True,  # weight each query's epipolar loss by 1/std (detached, mean 1)
    "min_std": 0.5,  # floor of the std in the weighting, in cells of the level (so one over-confident query
    # cannot take all the weight; 0.5 cell = 8 px coarse, 2 px fine)
    "max_coarse_error": 0.25,  # queries whose coarse epipolar error exceeds this (x longer side of image 1) leave
    # the fine loss and both cycle terms (the reference drops them from the fine loss at window_size x shorter side)
    # Thresholds of the CAPS reference (CAPS/criterion.py), all x the longer image side; null: off (the default,
    # which keeps featlab's shipped recipe; the reference's values, converted at 4:3, are given for each).
    "max_epipolar_error": none_or(float),  # a query leaves a level's epipolar loss when that level's error exceeds
    # this (reference: th_epipolar = 0.3 x the shorter side = 0.225 x the longer)
    "max_cycle_error": none_or(float),  # a query leaves a level's cycle term when that level's epipolar error
    # exceeds this (reference: th_cycle = 0.025 x the shorter side = 0.019 x the longer)
    "max_cycle_distance": none_or(float),  # cycle distances (x longer side of image 0) above this contribute
    # nothing (reference: 10 px at 480x640 = 0.016)
    "symmetric": True,  # also match queries of image 1 into image 0 (needs points1)
    "chunk_size": 1024,  # queries per correlation chunk (bounds transient memory)
    "checkpoint": False,  # recompute correlation chunks in backward (lower memory, ~30% slower matching)
}


# ------------------------------------------------------------------------------------------------ matching
def _soft_match_chunk(queries, target, xs, ys, temperature, centres, half):
    """One chunk: queries (B, n, C), target (B, C, h*w), cell centre coordinates xs (w,), ys (h,), window
    centres (B, n, 2) or None, half-size (2,). Returns expected (B, n, 2), best (B, n, 2), std (B, n)."""
    b, n, _ = queries.shape
    h, w = len(ys), len(xs)
    logits = torch.bmm(queries * (1.0 / temperature), target).view(b, n, h, w)
    if centres is not None:
        # the window is a rectangle: a separable mask, inside along x and inside along y
        in_x = (xs[None, None] - centres[..., :1]).abs() <= half[0]  # B, n, w
        in_y = (ys[None, None] - centres[..., 1:]).abs() <= half[1]  # B, n, h
        logits = logits.masked_fill(~(in_y[..., :, None] & in_x[..., None, :]), float("-inf"))
    flat = logits.reshape(b, n, h * w)
    prob = flat.softmax(-1).view(b, n, h, w)
    # the expectation and the spread only need the marginals along x and y
    px, py = prob.sum(2), prob.sum(3)  # B, n, w / B, n, h
    ex, ey = px @ xs, py @ ys
    with torch.no_grad():
        idx = flat.argmax(-1)
        best = torch.stack([xs[idx % w], ys[idx // w]], -1)
        var = (px * (xs - ex.detach()[..., None]) ** 2).sum(-1) + (py * (ys - ey.detach()[..., None]) ** 2).sum(-1)
        std = var.clamp(min=0).sqrt()
    return torch.stack([ex, ey], -1), best, std


def soft_match(queries: torch.Tensor, target_map: torch.Tensor, extent, temperature: float,
               window_centres: torch.Tensor | None = None, window_half: tuple[float, float] | None = None,
               chunk_size: int = 1024, checkpoint: bool = False):
    """Softmax matching of query descriptors against a dense map: expected location, std and best cell.

    Args:
        queries: (B, N, C) L2-normalised query descriptors.
        target_map: (B, C, h, w) L2-normalised (along C) dense map covering an image extent ``extent``.
        extent: (H, W) in pixels covered by ``target_map`` (its strides are H / h and W / w).
        temperature: logits = cosine similarity / temperature.
        window_centres: (B, N, 2) featlab pixels; restrict each query to the cells within ``window_half`` of its
            centre (a search window); None searches the whole map.
        window_half: (half_x, half_y) window half-size in pixels (required with ``window_centres``).
        chunk_size: queries per correlation chunk.
        checkpoint: recompute chunks in backward (only when gradients are enabled).
    Returns:
        expected: (B, N, 2) mean location under the softmax (differentiable).
        std: (B, N) detached spread sqrt(var_x + var_y) in pixels.
        best: (B, N, 2) centre of the most likely cell (no gradient).
    """
    b, n, c = queries.shape
    h, w = target_map.shape[-2:]
    if n == 0:
        z = queries.new_zeros(b, 0, 2)
        return z, queries.new_zeros(b, 0), z
    stride_y, stride_x = extent[0] / h, extent[1] / w
    # cell centres (j + .5) * stride_x, (i + .5) * stride_y, as featlab.pixels.pixel_grid
    grid = pixel_grid(h, w, 1.0, device=queries.device).to(queries.dtype)
    xs = grid[:w, 0] * stride_x
    ys = grid[::w, 1] * stride_y
    target = target_map.reshape(b, c, h * w)
    half = None
    if window_centres is not None:
        # at least one cell always falls inside: never less than half a cell
        half = (max(float(window_half[0]), stride_x / 2), max(float(window_half[1]), stride_y / 2))
    expected, stds, bests = [], [], []
    step = max(1, int(chunk_size))
    for s in range(0, n, step):
        q = queries[:, s:s + step]
        cen = window_centres[:, s:s + step] if window_centres is not None else None
        if checkpoint and torch.is_grad_enabled():
            e, bst, std = _checkpoint(_soft_match_chunk, q, target, xs, ys, temperature, cen, half,
                                      use_reentrant=False)
        else:
            e, bst, std = _soft_match_chunk(q, target, xs, ys, temperature, cen, half)
        expected.append(e)
        bests.append(bst)
        stds.append(std)
    return torch.cat(expected, 1), torch.cat(stds, 1), torch.cat(bests, 1)


def normalize_maps(maps: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """float32 copies of the ``coarse``/``fine`` maps, L2-normalised along channels."""
    return {k: F.normalize(maps[k].float(), dim=1) for k in ("coarse", "fine")}


def match_coarse_to_fine(points0: torch.Tensor, maps0: dict, maps1: dict, extent0, extent1,
                         temperature: float = 0.02, window_size: float = 0.125, chunk_size: int = 1024,
                         checkpoint: bool = False, levels: str = "both") -> dict:
    """Match query points of image 0 into image 1, coarse then fine.

    Args:
        points0: (B, N, 2) featlab pixels in image 0.
        maps0, maps1: ``{"coarse": (B, C, H/16, W/16), "fine": (B, C', H/4, W/4)}`` L2-normalised float32 maps
            (see :func:`normalize_maps`).
        extent0, extent1: (H, W) image extents covered by the maps of image 0 / image 1.
        temperature: softmax temperature on cosine similarities.
        window_size: fine window half-size as a fraction of image 1's width / height.
        levels: "both", or "coarse" to skip the fine level.
    Returns:
        dict with ``coarse_points`` (B, N, 2) expected coarse location in image 1, ``coarse_stds`` (B, N),
        ``coarse_best`` (B, N, 2) centre of the best coarse cell, and unless ``levels == "coarse"``
        ``fine_points`` (B, N, 2) (expected location in the window around ``coarse_best``), ``fine_stds`` (B, N).
    """
    with torch.autocast(device_type=points0.device.type, enabled=False):
        points0 = points0.float()
        dc = sample_map(maps0["coarse"], points0, extent0, normalize=True)
        xc, sc, best = soft_match(dc, maps1["coarse"], extent1, temperature, chunk_size=chunk_size,
                                  checkpoint=checkpoint)
        out = {"coarse_points": xc, "coarse_stds": sc, "coarse_best": best}
        if levels == "coarse":
            return out
        df = sample_map(maps0["fine"], points0, extent0, normalize=True)
        half = (window_size * extent1[1], window_size * extent1[0])
        xf, sf, _ = soft_match(df, maps1["fine"], extent1, temperature, window_centres=best, window_half=half,
                               chunk_size=chunk_size, checkpoint=checkpoint)
    return {**out, "fine_points": xf, "fine_stds": sf}


# ------------------------------------------------------------------------------------------------ geometry
def epipolar_line_valid(points0: torch.Tensor, F_0to1: torch.Tensor, image_size1, eps: float = 1e-9):
    """True where the epipolar line ``F x0`` is defined and crosses image 1.

    Args:
        points0: (B, N, 2) featlab pixels; F_0to1: (B, 3, 3); image_size1: (H, W) of image 1.
    Returns:
        (B, N) bool.
    """
    h, w = image_size1
    with torch.autocast(device_type=points0.device.type, enabled=False):
        x0 = torch.cat([points0.float(), torch.ones_like(points0[..., :1], dtype=torch.float32)], -1)
        lines = x0 @ F_0to1.float().transpose(-1, -2)  # B, N, 3: a x + b y + c = 0 in image 1
        corners = points0.new_tensor([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], dtype=torch.float32)
        values = lines @ corners.T  # B, N, 4
        crosses = (values.min(-1).values <= 0) & (values.max(-1).values >= 0)
        ab = lines[..., :2].norm(dim=-1)
        defined = ab > eps * lines.abs().amax(-1).clamp(min=1e-30)
    return crosses & defined & torch.isfinite(lines).all(-1)


def epipolar_errors(points0: torch.Tensor, points1: torch.Tensor, F_0to1: torch.Tensor) -> torch.Tensor:
    """Distance (pixels) of ``points1`` to the epipolar lines ``F x0`` in image 1. Shapes (B, N, 2) -> (B, N)."""
    return epipolar_distance(points0.float(), points1.float(), F_0to1.float(), symmetric=False)


def inverse_std_weights(stds: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Detached 1/std weights, normalised to mean 1 over the masked entries (0 elsewhere). (B, N) -> (B, N)."""
    wts = 1.0 / (stds.detach().float() + eps)
    wts = torch.where(mask, wts, torch.zeros_like(wts))
    count = mask.sum().clamp(min=1)
    return wts * (count / wts.sum().clamp(min=1e-12))


def masked_mean(values: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (optionally weighted); 0 (with a gradient path) when the mask is empty."""
    if weights is not None:
        values = values * weights
    values = torch.where(mask, values, torch.zeros_like(values))
    return values.sum() / mask.sum().clamp(min=1)


def epipolar_loss(points0, points1_pred, F_0to1, image_size, mask, stds=None):
    """Mean epipolar distance of predictions, normalised by the longer image side, optionally 1/std-weighted.

    Args:
        points0: (B, N, 2) queries in image 0; points1_pred: (B, N, 2) predictions in image 1.
        F_0to1: (B, 3, 3); image_size: (H, W) of image 1; mask: (B, N) bool; stds: (B, N) or None.
    Returns:
        (scalar loss, (B, N) distances in pixels).
    """
    dist = epipolar_errors(points0, points1_pred, F_0to1)
    weights = inverse_std_weights(stds, mask) if stds is not None else None
    return masked_mean(dist / max(image_size), mask, weights), dist


def cycle_loss(points0, points0_back, image_size, mask):
    """Mean distance between queries and their back-matched locations, normalised by the longer image side."""
    dist = (points0_back.float() - points0.float()).norm(dim=-1)
    return masked_mean(dist / max(image_size), mask), dist


def _below(errors: torch.Tensor, threshold, image_size) -> torch.Tensor:
    """errors <= threshold x the longer image side (all True when the threshold is None). (B, N) -> (B, N) bool."""
    if threshold is None:
        return torch.ones_like(errors, dtype=torch.bool)
    return errors.detach() <= float(threshold) * max(image_size)


def caps_loss_terms(points0: torch.Tensor, pred: dict, F_0to1: torch.Tensor, image_size0, image_size1,
                    valid: torch.Tensor, conf, std_floors=(0.0, 0.0)):
    """The CAPS loss terms from predicted locations (a pure function of tensors; masks as the module docstring).

    Args:
        points0: (B, N, 2) queries in image 0 (featlab pixels).
        pred: ``coarse_points``, ``fine_points`` (B, N, 2) predictions in image 1; ``coarse_stds``, ``fine_stds``
            (B, N) their spreads (pixels); ``cycle_coarse_points``, ``cycle_fine_points`` (B, N, 2) the coarse
            (fine) prediction matched back into image 0.
        F_0to1: (B, 3, 3) fundamental matrix (x1^T F x0 = 0).
        image_size0, image_size1: (H, W) of the images.
        valid: (B, N) bool, queries that may enter any term (epipolar line inside image 1, not padding).
        conf: ``std_weighting``, ``max_coarse_error``, ``max_epipolar_error``, ``max_cycle_error``,
            ``max_cycle_distance`` (:data:`default_conf`).
        std_floors: (coarse, fine) lower bounds of the stds in the 1/std weighting, pixels.
    Returns:
        (losses, masks): losses ``coarse``, ``fine``, ``cycle_coarse``, ``cycle_fine`` (scalars, unweighted);
        masks (B, N) bool ``coarse``, ``fine``, ``cycle_coarse``, ``cycle_fine`` (the queries of each term) and
        the per-query distances ``coarse_errors``, ``fine_errors`` (pixels, image 1), ``cycle_coarse_distances``,
        ``cycle_fine_distances`` (pixels, image 0).
    """
    with torch.no_grad():  # the masks
        errors = {level: epipolar_errors(points0, pred[f"{level}_points"], F_0to1) for level in ("coarse", "fine")}
        cycles = {level: (pred[f"cycle_{level}_points"].float() - points0.float()).norm(dim=-1)
                  for level in ("coarse", "fine")}
        near = valid & _below(errors["coarse"], conf.max_coarse_error, image_size1)  # the coarse-error mask
        masks = {"coarse": valid, "fine": near}
        for level in ("coarse", "fine"):
            masks[level] = masks[level] & _below(errors[level], conf.max_epipolar_error, image_size1)
            masks[f"cycle_{level}"] = (near & _below(errors[level], conf.max_cycle_error, image_size1)
                                       & _below(cycles[level], conf.max_cycle_distance, image_size0))
    losses = {}
    for level, floor in (("coarse", std_floors[0]), ("fine", std_floors[1])):
        stds = pred[f"{level}_stds"].clamp(min=floor) if conf.std_weighting else None
        losses[level], _ = epipolar_loss(points0, pred[f"{level}_points"], F_0to1, image_size1, masks[level], stds)
        losses[f"cycle_{level}"], _ = cycle_loss(points0, pred[f"cycle_{level}_points"], image_size0,
                                                 masks[f"cycle_{level}"])
    masks.update({f"{level}_errors": errors[level] for level in errors})
    masks.update({f"cycle_{level}_distances": cycles[level] for level in cycles})
    return losses, masks


def caps_losses(points0: torch.Tensor, maps0: dict, maps1: dict, F_0to1: torch.Tensor, extent0, extent1,
                image_size0, image_size1, conf, mask0: torch.Tensor | None = None):
    """All CAPS loss terms for queries of image 0 matched into image 1 (matching + :func:`caps_loss_terms`).

    Args:
        points0: (B, N, 2) featlab pixels in image 0.
        maps0, maps1: normalised float32 maps (:func:`normalize_maps`).
        F_0to1: (B, 3, 3) fundamental matrix (x1^T F x0 = 0).
        extent0, extent1: (H, W) covered by the maps; image_size0, image_size1: (H, W) of the real images.
        conf: resolved :data:`default_conf`.
        mask0: (B, N) bool, False for padding queries.
    Returns:
        (losses, metrics): losses ``coarse``, ``fine``, ``cycle_coarse``, ``cycle_fine`` (scalars, unweighted);
        metrics ``coarse_error`` / ``fine_error`` (mean epipolar distance in pixels over the queries of the coarse /
        fine term), ``valid`` / ``fine_valid`` (fraction of queries in the coarse / fine term), plus the per-query
        tensors under ``matches``.
    """
    kw = dict(temperature=conf.temperature, window_size=conf.window_size, chunk_size=conf.chunk_size,
              checkpoint=conf.checkpoint)
    fwd = match_coarse_to_fine(points0, maps0, maps1, extent0, extent1, **kw)
    valid = epipolar_line_valid(points0, F_0to1, image_size1)
    valid &= torch.isfinite(points0).all(-1)
    if mask0 is not None:
        valid &= mask0
    # cycle: match the coarse / fine predictions back into image 0
    bwd = match_coarse_to_fine(fwd["coarse_points"], maps1, maps0, extent1, extent0, levels="coarse", **kw)
    bwd_f = match_coarse_to_fine(fwd["fine_points"], maps1, maps0, extent1, extent0, **kw)
    pred = {**fwd, "cycle_coarse_points": bwd["coarse_points"], "cycle_fine_points": bwd_f["fine_points"]}
    floors = tuple(conf.min_std * extent1[1] / maps1[level].shape[-1] for level in ("coarse", "fine"))  # min_std cells
    losses, masks = caps_loss_terms(points0, pred, F_0to1, image_size0, image_size1, valid, conf, floors)

    n = valid.numel()
    with torch.no_grad():
        metrics = {
            "coarse_error": masked_mean(masks["coarse_errors"], masks["coarse"]),
            "fine_error": masked_mean(masks["fine_errors"], masks["fine"]),
            "valid": masks["coarse"].float().sum() / max(n, 1),
            "fine_valid": masks["fine"].float().sum() / max(n, 1),
        }
    # per-query tensors: the predictions, ``valid``, each term's mask ``<term>_valid``, errors and cycle distances
    terms = ("coarse", "fine", "cycle_coarse", "cycle_fine")
    metrics["matches"] = {**fwd, "valid": valid, **{(f"{k}_valid" if k in terms else k): v for k, v in masks.items()}}
    return losses, metrics


# ------------------------------------------------------------------------------------------------ wrapper
class CAPSLoss:
    """Configured CAPS loss: ``loss(pred, data) -> (losses, metrics)``.

    Args:
        conf: keys of :data:`default_conf`.

    Call with:
        pred: ``coarse0``, ``fine0``, ``coarse1``, ``fine1`` raw maps (B, C, h, w) from
            :class:`featlab.nn.resunet.ResUNet` (any dtype; matching runs in float32).
        data: ``points0`` (B, N, 2) queries in image 0; ``points1`` (B, M, 2) queries in image 1 (used when
            ``symmetric``); optional ``points0_masks`` / ``points1_masks`` (B, N) bool; ``K0``, ``K1`` (B, 3, 3);
            ``T_0to1`` (B, 4, 4); ``image0`` / ``image1`` (B, C, H, W) (only their sizes are read).
    Returns:
        losses: ``total`` (weighted sum, what to minimise), and the unweighted terms ``coarse``, ``fine``,
            ``cycle_coarse``, ``cycle_fine`` (averaged over the directions).
        metrics: ``coarse_error``, ``fine_error`` (pixels), ``valid``, ``fine_valid`` (fractions), floats.
    """

    def __init__(self, conf: dict | None = None):
        self.conf = resolve_conf(default_conf, conf, "loss")

    def __call__(self, pred: dict, data: dict):
        conf = self.conf
        device = pred["coarse0"].device
        with torch.autocast(device_type=device.type, enabled=False):
            size0 = tuple(data["image0"].shape[-2:])
            size1 = tuple(data["image1"].shape[-2:])
            ext0, ext1 = map_extent(*size0), map_extent(*size1)
            maps0 = normalize_maps({"coarse": pred["coarse0"], "fine": pred["fine0"]})
            maps1 = normalize_maps({"coarse": pred["coarse1"], "fine": pred["fine1"]})
            F_0to1 = fundamental_from_pose(data["K0"].float(), data["K1"].float(), data["T_0to1"].float())
            runs = [caps_losses(data["points0"], maps0, maps1, F_0to1, ext0, ext1, size0, size1, conf,
                                data.get("points0_masks"))]
            if conf.symmetric and "points1" in data:
                runs.append(caps_losses(data["points1"], maps1, maps0, F_0to1.transpose(-1, -2), ext1, ext0,
                                        size1, size0, conf, data.get("points1_masks")))
            losses = {k: sum(r[0][k] for r in runs) / len(runs) for k in runs[0][0]}
            losses["total"] = (conf.coarse_weight * losses["coarse"] + conf.fine_weight * losses["fine"]
                               + conf.cycle_weight * (losses["cycle_coarse"] + losses["cycle_fine"]))
            metrics = {k: float(sum(r[1][k] for r in runs) / len(runs))
                       for k in ("coarse_error", "fine_error", "valid", "fine_valid")}
        return losses, metrics
