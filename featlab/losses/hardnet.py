"""Hardest-in-batch triplet loss (HardNet, Mishchuk et al. 2017), in both matching directions.

Rows are M corresponding descriptor pairs (a_i in image 0, p_i in image 1), from any number of image pairs. With
D the (M, M) Euclidean distances ``D[i, j] = |a_i - p_j|``, each pair i contributes two hinges::

    max(0, margin + D[i, i] - min_j D[i, j])      p_i must be a_i's nearest neighbour among all p
    max(0, margin + D[i, i] - min_j D[j, i])      a_i must be p_i's nearest neighbour among all a

(minima over j != i that are not excluded). Both hinges at zero mean that (a_i, p_i) is a *mutual* nearest
neighbour pair with a margin, which is what mutual-NN matching needs for a correct match: the loss is a margin
relaxation of mutual-NN precision on the batch, and ``mutual_nn_accuracy`` (both hinges' strict inequalities hold)
measures it directly. HardNet's own anchor swap keeps only the smaller of the two minima; here both directions
count, as the matcher checks both.

``exclude`` removes candidates that are not wrong matches: another keypoint at (nearly) the same place, e.g. SIFT's
copies of a location with a second orientation, which the benchmarks count as correct.

``extra0`` / ``extra1``: more candidates that are nobody's positive (other detected keypoints of the images, e.g.
the ones the handcrafted descriptor confuses with a positive): mutual-NN matching meets every detected keypoint,
not only those with a correspondence. ``extra1`` rows compete in the first hinge (negatives of a_i), ``extra0``
rows in the second (negatives of p_i).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def hardest_in_batch_loss(desc0: torch.Tensor, desc1: torch.Tensor, exclude: torch.Tensor | None = None,
                          margin: float = 1.0, extra0: torch.Tensor | None = None,
                          extra1: torch.Tensor | None = None, exclude_extra0: torch.Tensor | None = None,
                          exclude_extra1: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Mean of the two hardest-negative hinges of every corresponding pair (module docstring).

    Args:
        desc0: (M, D) descriptors in image 0; desc1: (M, D) in image 1, row i corresponding to row i.
        exclude: optional (M, M) bool, True where j must not serve as a negative of i (in either direction;
            the diagonal is always excluded).
        margin: hinge margin (unit descriptors: distances lie in [0, 2]).
        extra0: optional (E0, D) more candidates in image 0 (negatives of every p_i), extra1: (E1, D) in image 1
            (negatives of every a_i); exclude_extra0: optional (M, E0) bool, True where extra0[e] must not serve
            as a negative of pair i; exclude_extra1: (M, E1) likewise.
    Returns:
        loss: scalar (0 with fewer than 2 pairs, still differentiable).
        metrics: detached scalars ``positive_distance``, ``negative_distance`` (mean of the two hardest),
            ``mutual_nn_accuracy``, ``num_pairs``.
    """
    m = desc0.shape[0]
    if desc1.shape[0] != m:
        raise ValueError(f"desc0 and desc1 must have the same rows, got {desc0.shape[0]} and {desc1.shape[0]}")
    with torch.autocast(device_type=desc0.device.type, enabled=False):  # distances in float32
        d0, d1 = desc0.float(), desc1.float()
        dist = (2.0 - 2.0 * d0 @ d1.T).clamp(min=1e-12).sqrt()  # unit rows
        pos = dist.diagonal()
        blocked = torch.eye(m, dtype=torch.bool, device=dist.device)
        if exclude is not None:
            blocked = blocked | exclude
        masked = dist.masked_fill(blocked, float("inf"))
        neg_row = masked.min(1).values  # nearest other p_j of a_i
        neg_col = masked.min(0).values  # nearest other a_j of p_i
        for extra, excl, mine, rows in ((extra1, exclude_extra1, "row", d0), (extra0, exclude_extra0, "col", d1)):
            if extra is None or len(extra) == 0:
                continue
            extra_dist = (2.0 - 2.0 * rows @ extra.float().T).clamp(min=1e-12).sqrt()  # (M, E)
            if excl is not None:
                extra_dist = extra_dist.masked_fill(excl, float("inf"))
            if mine == "row":
                neg_row = torch.minimum(neg_row, extra_dist.min(1).values)
            else:
                neg_col = torch.minimum(neg_col, extra_dist.min(1).values)
        valid = torch.isfinite(neg_row) & torch.isfinite(neg_col)
        hinge = torch.relu(margin + pos - neg_row.masked_fill(~valid, 0)) + \
            torch.relu(margin + pos - neg_col.masked_fill(~valid, 0))
        count = valid.sum()
        loss = 0.5 * (hinge * valid).sum() / count.clamp(min=1)
        with torch.no_grad():
            denom = count.clamp(min=1).float()
            metrics = {
                "positive_distance": (pos * valid).sum() / denom,
                "negative_distance": (0.5 * (neg_row + neg_col)).masked_fill(~valid, 0).sum() / denom,
                "mutual_nn_accuracy": ((pos < neg_row) & (pos < neg_col) & valid).sum() / denom,
                "num_pairs": count.float(),
            }
    return loss, metrics


def infonce_loss(desc0: torch.Tensor, desc1: torch.Tensor, exclude: torch.Tensor | None = None,
                 temperature: float = 0.05, extra0: torch.Tensor | None = None, extra1: torch.Tensor | None = None,
                 exclude_extra0: torch.Tensor | None = None,
                 exclude_extra1: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """Symmetric InfoNCE: softmax cross-entropy of each positive against *all* candidates, in both directions.

    Row i of the first term: logits ``a_i . c / temperature`` over c in (p_1..p_M, extra1), target p_i; the second
    term swaps the images (candidates a_1..a_M, extra0, target a_i). Unlike the hardest-negative hinge every
    candidate that is closer than the positive gets a gradient, weighted by its softmax share: the nearest-neighbour
    ranking against all detected keypoints, which is what mutual-NN matching uses. Same arguments and metrics as
    :func:`hardest_in_batch_loss` (``margin`` replaced by ``temperature``); excluded candidates are dropped from
    the softmax (the positive never is).
    """
    m = desc0.shape[0]
    if desc1.shape[0] != m:
        raise ValueError(f"desc0 and desc1 must have the same rows, got {desc0.shape[0]} and {desc1.shape[0]}")
    with torch.autocast(device_type=desc0.device.type, enabled=False):
        d0, d1 = desc0.float(), desc1.float()
        eye = torch.eye(m, dtype=torch.bool, device=d0.device)
        blocked = torch.zeros_like(eye) if exclude is None else exclude & ~eye
        sim = d0 @ d1.T  # (M, M) cosine similarities
        total, others = 0.0, []
        for rows, logits, mask, extra, excl in ((d0, sim, blocked, extra1, exclude_extra1),
                                                (d1, sim.T, blocked.T, extra0, exclude_extra0)):
            diagonal = eye
            if extra is not None and len(extra):
                logits = torch.cat([logits, rows @ extra.float().T], 1)
                mask = torch.cat([mask, excl if excl is not None else torch.zeros_like(logits[:, m:], dtype=bool)], 1)
                diagonal = torch.cat([eye, torch.zeros_like(mask[:, m:])], 1)
            logits = logits.masked_fill(mask, float("-inf"))
            total = total + F.cross_entropy(logits / temperature, torch.arange(m, device=d0.device), reduction="sum")
            others.append(logits.detach().masked_fill(diagonal, float("-inf")).max(1).values)  # nearest other
        loss = 0.5 * total / max(m, 1)
        with torch.no_grad():
            pos = sim.diagonal()
            other = torch.maximum(others[0], others[1]).clamp(-1.0, 1.0)
            metrics = {
                "positive_distance": (2.0 - 2.0 * pos).clamp(min=0).sqrt().mean(),
                "negative_distance": (2.0 - 2.0 * other).clamp(min=0).sqrt().mean(),
                "mutual_nn_accuracy": (pos > other).float().mean(),
                "num_pairs": torch.tensor(float(m)),
            }
    return loss, metrics


__all__ = ["hardest_in_batch_loss", "infonce_loss"]
