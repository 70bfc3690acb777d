"""Losses of ``depthkp`` (Georgakis et al. 2018, RECIPES section 4): pose-derived positives and negatives, a
contrastive descriptor loss and a score loss, trained jointly.

Positives and negatives come from the known relative pose, never from labels (:func:`depth_correspondences`):
each proposal of view 0 is back-projected with its depth and ``K0``, moved by ``T_0to1`` and projected with
``K1``; it has a correspondence only when it lands inside view 1 *with a consistent depth* (the transferred depth
agrees with view 1's depth map within ``depth_tolerance`` x depth), so an occluded point is never a positive (the
authors' related code had no such check). Its positive is view 1's descriptor map sampled at that point; its
negatives are view-1 proposals farther than ``negative_radius`` pixels from it. Both directions (0 -> 1 and
1 -> 0) are used.

- Descriptor loss (:func:`contrastive_loss`, Hadsell et al.): ``mean_pos d^2 + mean_neg max(0, margin - d)^2``
  with d the Euclidean distance of L2-normalised descriptors (in [0, 2]). Negatives per positive:
  ``num_negatives`` of the candidates, either the hardest (nearest in descriptor space; featlab's default) or
  uniformly random ones (the related code's: 32 random negatives per positive).
- Score loss (:func:`score_loss`): binary cross-entropy on the proposal logits with target 1 for a proposal whose
  descriptor's nearest neighbour among the other view's proposals lies within ``match_radius`` pixels of its
  true correspondence (a correct match) and 0 for the other proposals that have a correspondence; proposals
  without one (out of view, occluded, no depth) are left out: no descriptor could match them.

Every function here is pure: the same tensors in give the same loss out (random negatives draw from a generator
seeded by ``data["seed"]``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conf import checked, resolve_conf
from ..geometry.depth import warp_points_depth
from ..pixels import sample_map

default_conf = {
    "margin": checked(1.0, gt=0),  # contrastive margin on distances of unit descriptors (in [0, 2]); the related
    #                                code's 2 was not on unit vectors: here 2 would push every negative antipodal
    "num_negatives": checked(32, ge=1),  # negatives per positive (the related code: 32)
    "hard_negatives": True,  # true: the num_negatives nearest in descriptor space; false: uniformly random
    "negative_radius": checked(8.0, ge=0),  # px (training resolution): candidates nearer the true point are not negatives
    "match_radius": checked(4.0, gt=0),  # px: a nearest-neighbour match this close to the true point is correct
    "depth_tolerance": checked(0.05, gt=0),  # relative depth agreement of a correspondence (occlusion check)
    "score_weight": checked(1.0, ge=0),  # weight of the score loss in the total
}


def depth_correspondences(keypoints0, depth0, depth1, K0, K1, T_0to1, depth_tolerance: float = 0.05):
    """Where keypoints of view 0 are in view 1, and whether that is a depth-consistent correspondence.

    Args:
        keypoints0: (B, N, 2) featlab pixels of view 0.
        depth0, depth1: (B, H, W) or (B, 1, H, W) metres (0 invalid).
        K0, K1: (B, 3, 3); T_0to1: (B, 4, 4) with ``x_cam1 = T_0to1 x_cam0``.
        depth_tolerance: relative depth agreement required in view 1 (occluded points disagree).
    Returns:
        points1 (B, N, 2) featlab pixels in view 1 (meaningful where valid), valid bool (B, N): depth at the
        keypoint, in front of camera 1, inside view 1, depth there, and consistent with it.
    """
    if depth0.ndim == 4:
        depth0, depth1 = depth0[:, 0], depth1[:, 0]
    return warp_points_depth(keypoints0, depth0, K0, K1, T_0to1, depth1=depth1, depth_tolerance=depth_tolerance)


def _pairwise_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, N, D), (B, M, D) unit vectors -> (B, N, M) Euclidean distances (stable at 0)."""
    sim = torch.einsum("bnd,bmd->bnm", a, b)
    return (2.0 - 2.0 * sim).clamp(min=1e-8).sqrt()


def contrastive_loss(anchors, positives, candidates, positive_points, candidate_points, valid, candidate_masks,
                     margin: float = 1.0, num_negatives: int = 32, hard: bool = True, negative_radius: float = 8.0,
                     generator: torch.Generator | None = None):
    """Contrastive loss with pose-derived positives and negatives.

    Args:
        anchors: (B, N, D) unit descriptors of view-0 proposals.
        positives: (B, N, D) unit descriptors of view 1 at their true correspondences.
        candidates: (B, M, D) unit descriptors of view-1 proposals (negatives are drawn among them).
        positive_points: (B, N, 2) true correspondences in view 1 (featlab pixels).
        candidate_points: (B, M, 2) view-1 proposal locations.
        valid: bool (B, N), anchors with a correspondence; candidate_masks: bool (B, M), real candidates.
        negative_radius: candidates within this many pixels of the true point are not negatives.
        generator: for random negatives.
    Returns:
        (loss scalar, metrics dict: ``pos_distance``, ``neg_distance``, ``num_positives``). 0 (with gradient)
        when there is no positive.
    """
    d_pos = (anchors - positives).norm(dim=-1)  # (B, N)
    dist = _pairwise_distance(anchors, candidates)  # (B, N, M)
    far = (torch.cdist(positive_points.float(), candidate_points.float()) > negative_radius) & candidate_masks[:, None]
    usable = far & valid[..., None]
    m = candidates.shape[1]
    k = min(int(num_negatives), m)
    if hard:
        key = torch.where(usable, dist.detach(), torch.full_like(dist, torch.inf))
        _, idx = torch.topk(key, k, dim=-1, largest=False)
    else:
        noise = torch.rand(dist.shape, generator=generator, device="cpu").to(dist.device)
        key = torch.where(usable, noise, torch.full_like(noise, torch.inf))
        _, idx = torch.topk(key, k, dim=-1, largest=False)
    d_neg = dist.gather(-1, idx)
    neg_ok = usable.gather(-1, idx)
    n_pos = valid.sum()
    n_neg = neg_ok.sum()
    zero = anchors.sum() * 0.0
    pos_term = (d_pos.pow(2) * valid).sum() / n_pos.clamp(min=1) if n_pos > 0 else zero
    neg_term = (F.relu(margin - d_neg).pow(2) * neg_ok).sum() / n_neg.clamp(min=1) if n_neg > 0 else zero
    metrics = {"pos_distance": (d_pos.detach() * valid).sum() / n_pos.clamp(min=1),
               "neg_distance": (d_neg.detach() * neg_ok).sum() / n_neg.clamp(min=1),
               "num_positives": n_pos.float()}
    return pos_term + neg_term, metrics


@torch.no_grad()
def correct_match_labels(descriptors0, descriptors1, keypoints1, points1, valid0, masks1,
                         match_radius: float = 4.0) -> torch.Tensor:
    """Which proposals of view 0 lead to a correct match: the nearest neighbour (in descriptor space) among the
    real proposals of view 1 lies within ``match_radius`` px of the true correspondence.

    Args: descriptors0 (B, N, D), descriptors1 (B, M, D) unit; keypoints1 (B, M, 2); points1 (B, N, 2) true
        correspondences; valid0 bool (B, N); masks1 bool (B, M).
    Returns: bool (B, N), False where ``valid0`` is False.
    """
    sim = torch.einsum("bnd,bmd->bnm", descriptors0.float(), descriptors1.float())
    sim = torch.where(masks1[:, None], sim, torch.full_like(sim, -torch.inf))
    nn_idx = sim.argmax(-1)  # (B, N)
    nn_pts = keypoints1.gather(1, nn_idx[..., None].expand(-1, -1, 2))
    return valid0 & ((nn_pts - points1).norm(dim=-1) <= match_radius) & masks1.any(-1, keepdim=True)


def score_loss(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of proposal logits (B, N) against targets (B, N) {0, 1}, averaged over ``mask``
    (B, N) bool; 0 (with gradient) when the mask is empty. Raises the scores of proposals with target 1 and lowers
    the others."""
    per = F.binary_cross_entropy_with_logits(logits.float(), targets.float(), reduction="none")
    n = mask.sum()
    return (per * mask).sum() / n.clamp(min=1) if n > 0 else logits.sum() * 0.0


def _direction(pred: dict, data: dict, src: str, dst: str, conf, generator):
    """Loss terms for the proposals of view ``src`` against view ``dst``."""
    T = data["T_0to1"] if src == "0" else torch.linalg.inv(data["T_0to1"].double()).to(data["T_0to1"].dtype)
    points, valid = depth_correspondences(pred[f"keypoints{src}"], data[f"depth{src}"], data[f"depth{dst}"],
                                          data[f"K{src}"], data[f"K{dst}"], T, conf.depth_tolerance)
    valid = valid & pred[f"keypoint_masks{src}"]
    size = data[f"depth{dst}"].shape[-2:]
    positives = sample_map(pred[f"descriptor_map{dst}"], points, size, normalize=True)
    desc_loss, metrics = contrastive_loss(
        pred[f"descriptors{src}"], positives, pred[f"descriptors{dst}"], points, pred[f"keypoints{dst}"], valid,
        pred[f"keypoint_masks{dst}"], margin=float(conf.margin), num_negatives=int(conf.num_negatives),
        hard=bool(conf.hard_negatives), negative_radius=float(conf.negative_radius), generator=generator)
    correct = correct_match_labels(pred[f"descriptors{src}"].detach(), pred[f"descriptors{dst}"].detach(),
                                   pred[f"keypoints{dst}"], points, valid, pred[f"keypoint_masks{dst}"],
                                   float(conf.match_radius))
    s_loss = score_loss(pred[f"logits{src}"], correct, valid)
    metrics.update(correct_ratio=correct.sum() / valid.sum().clamp(min=1),
                   visible_ratio=valid.sum() / pred[f"keypoint_masks{src}"].sum().clamp(min=1))
    return desc_loss, s_loss, metrics


def depthkp_loss(pred: dict, data: dict, conf=None) -> tuple[dict, dict]:
    """The joint loss of ``depthkp`` on a batch of depth pairs, both directions.

    Args:
        pred: per view s in {0, 1}: ``keypoints{s}`` (B, N, 2) proposals at the training resolution,
            ``logits{s}`` (B, N), ``descriptors{s}`` (B, N, D) unit, ``keypoint_masks{s}`` bool (B, N),
            ``descriptor_map{s}`` (B, D, h, w) raw map covering the image.
        data: ``depth0``/``depth1`` (B, 1, H, W) metres, ``K0``/``K1`` (B, 3, 3), ``T_0to1`` (B, 4, 4), optional
            ``seed`` (int) for random negatives.
        conf: overrides of :data:`default_conf`.
    Returns:
        losses {``total``, ``descriptor``, ``score``}, metrics {name: detached scalar}.
    """
    conf = resolve_conf(default_conf, conf, "loss")
    generator = None
    if not conf.hard_negatives:
        generator = torch.Generator().manual_seed(int(data.get("seed", 0)))
    terms = [_direction(pred, data, a, b, conf, generator) for a, b in (("0", "1"), ("1", "0"))]
    desc = (terms[0][0] + terms[1][0]) / 2
    score = (terms[0][1] + terms[1][1]) / 2
    metrics = {k: (terms[0][2][k] + terms[1][2][k]).detach() / 2 for k in terms[0][2]}
    total = desc + float(conf.score_weight) * score
    return {"total": total, "descriptor": desc, "score": score}, metrics


class DepthKPLoss:
    """Configured wrapper: ``DepthKPLoss(conf)(pred, data) -> (losses, metrics)`` (see :func:`depthkp_loss`)."""

    def __init__(self, conf=None):
        self.conf = resolve_conf(default_conf, conf, "loss")

    def __call__(self, pred: dict, data: dict):
        return depthkp_loss(pred, data, self.conf)


__all__ = ["default_conf", "depth_correspondences", "contrastive_loss", "correct_match_labels", "score_loss",
           "depthkp_loss", "DepthKPLoss"]
