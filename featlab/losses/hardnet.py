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
"""
from __future__ import annotations

import torch


def hardest_in_batch_loss(desc0: torch.Tensor, desc1: torch.Tensor, exclude: torch.Tensor | None = None,
                          margin: float = 1.0) -> tuple[torch.Tensor, dict]:
    """Mean of the two hardest-negative hinges of every corresponding pair (module docstring).

    Args:
        desc0: (M, D) descriptors in image 0; desc1: (M, D) in image 1, row i corresponding to row i.
        exclude: optional (M, M) bool, True where j must not serve as a negative of i (in either direction;
            the diagonal is always excluded).
        margin: hinge margin (unit descriptors: distances lie in [0, 2]).
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


__all__ = ["hardest_in_batch_loss"]
