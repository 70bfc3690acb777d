"""Triplet (hinge) loss on keypoint descriptors with negative mining, for descriptors trained on known matches.

For an anchor a (keypoint i of image 0) with positive p (its ground-truth match j in image 1) and a negative n
(another keypoint of image 1, chosen by the mining rule):

    l(a) = max(0, d(a, p) - d(a, n) + margin)

Distance and margin (a documented choice, conf keys ``distance`` and ``margin``): the residual-descriptor paper
quotes m = 2 "for unit vectors". With the Euclidean distance between unit vectors, d is in [0, 2], so m = 2 can only
be met by d(a,p) = 0 and antipodal negatives: the hinge never switches off and the loss degenerates into
d(a,p) - d(a,n) + 2 for every triplet. featlab's default is the HardNet choice, **Euclidean distance with
margin 1.0** (d(a,n) must exceed d(a,p) by half the diameter of the sphere). ``distance="squared"`` (squared
Euclidean, in [0, 4]) with ``margin=2`` is the reading of the paper under which its m = 2 is meaningful.

Mining (conf ``mining``), always within the same image pair:
- ``random``: a uniformly random keypoint of image 1 other than the positive.
- ``hardest``: the keypoint of image 1, other than the positive, closest in descriptor space to the anchor.
- ``hardest-outside-radius``: as ``hardest`` but ignoring keypoints within ``negative_radius`` px of the
  positive: keypoints that close to the true location (duplicated SIFT points with another orientation,
  neighbours on the same blob) are not wrong matches that the descriptor should push away.
"""
from __future__ import annotations

import torch

MINING_MODES = ("random", "hardest", "hardest-outside-radius")
DISTANCES = ("euclidean", "squared")


def pairwise_distances(desc0: torch.Tensor, desc1: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Distances between all rows of two descriptor sets.

    Args:
        desc0: (B, N, D); desc1: (B, M, D).
        distance: 'euclidean' or 'squared' (squared Euclidean).
    Returns:
        (B, N, M) float32.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    desc0, desc1 = desc0.float(), desc1.float()
    sq = (desc0.pow(2).sum(-1)[..., :, None] + desc1.pow(2).sum(-1)[..., None, :]
          - 2.0 * desc0 @ desc1.transpose(-1, -2)).clamp(min=0.0)
    if distance == "squared":
        return sq
    return sq.clamp(min=1e-12).sqrt()


def invert_matches(matches0: torch.Tensor, num_keypoints1: int) -> torch.Tensor:
    """(B, N) indices into image 1 (-1 unmatched) -> (B, M) indices into image 0 (-1 unmatched)."""
    b, n = matches0.shape
    matches1 = matches0.new_full((b, num_keypoints1), -1)
    bi, i = torch.nonzero(matches0 >= 0, as_tuple=True)
    matches1[bi, matches0[bi, i]] = i
    return matches1


def triplet_loss(desc0: torch.Tensor, desc1: torch.Tensor, matches0: torch.Tensor,
                 keypoints1: torch.Tensor | None = None, mask1: torch.Tensor | None = None,
                 margin: float = 1.0, mining: str = "hardest-outside-radius", negative_radius: float = 4.0,
                 distance: str = "euclidean", generator: torch.Generator | None = None):
    """Mean hinge loss over the anchors of image 0 that have a ground-truth match in image 1.

    Args:
        desc0: (B, N, D) anchor descriptors (image 0).
        desc1: (B, M, D) descriptors of image 1 (positives and negative candidates).
        matches0: (B, N) int64 index of the positive in image 1, -1 where keypoint i has no match.
        keypoints1: (B, M, 2) keypoints of image 1 in pixels; required for 'hardest-outside-radius'.
        mask1: (B, M) bool, False for padded keypoints of image 1 (never used as negatives).
        margin: hinge margin.
        mining: 'random', 'hardest' or 'hardest-outside-radius' (see the module docstring).
        negative_radius: pixels around the positive excluded from the negatives ('hardest-outside-radius').
        distance: 'euclidean' or 'squared'.
        generator: torch generator for 'random' mining (reproducibility).
    Returns:
        loss: scalar, mean over valid anchors (0 with no valid anchor, still differentiable).
        metrics: dict of detached scalars: ``positive_distance``, ``negative_distance``, ``active_fraction``
            (fraction of triplets with a non-zero hinge), ``triplet_accuracy`` (d(a,p) < d(a,n)),
            ``num_anchors``.
    """
    if mining not in MINING_MODES:
        raise ValueError(f"mining must be one of {MINING_MODES}, got {mining!r}")
    with torch.autocast(device_type=desc0.device.type, enabled=False):  # distances in float32, always
        return _triplet_loss(desc0.float(), desc1.float(), matches0, keypoints1, mask1, margin, mining,
                             negative_radius, distance, generator)


def _triplet_loss(desc0, desc1, matches0, keypoints1, mask1, margin, mining, negative_radius, distance, generator):
    b, n, _ = desc0.shape
    m = desc1.shape[1]
    dist = pairwise_distances(desc0, desc1, distance)  # B,N,M
    has_pos = matches0 >= 0
    pos_idx = matches0.clamp(min=0)
    d_pos = torch.gather(dist, 2, pos_idx[..., None])[..., 0]  # B,N

    cand = torch.ones(b, n, m, dtype=torch.bool, device=desc0.device)
    if mask1 is not None:
        cand &= mask1[:, None, :]
    cand &= torch.arange(m, device=desc0.device)[None, None, :] != pos_idx[..., None]
    if mining == "hardest-outside-radius":
        if keypoints1 is None:
            raise ValueError("mining='hardest-outside-radius' needs keypoints1")
        kp1 = keypoints1.float()
        pos_xy = torch.gather(kp1, 1, pos_idx[..., None].expand(-1, -1, 2))  # B,N,2
        cand &= torch.cdist(pos_xy, kp1) >= negative_radius
    valid = has_pos & cand.any(-1)

    if mining == "random":
        noise = torch.rand(b, n, m, generator=generator).to(desc0.device)  # the generator lives on the CPU
        neg_idx = noise.masked_fill(~cand, -1.0).argmax(-1)
    else:
        neg_idx = dist.detach().masked_fill(~cand, float("inf")).argmin(-1)
    d_neg = torch.gather(dist, 2, neg_idx[..., None])[..., 0]

    per_anchor = torch.relu(d_pos - d_neg + margin)
    count = valid.sum()
    loss = (per_anchor * valid).sum() / count.clamp(min=1)
    with torch.no_grad():
        denom = count.clamp(min=1).float()
        metrics = {
            "positive_distance": (d_pos * valid).sum() / denom,
            "negative_distance": (d_neg * valid).sum() / denom,
            "active_fraction": ((per_anchor > 0) & valid).sum() / denom,
            "triplet_accuracy": ((d_pos < d_neg) & valid).sum() / denom,
            "num_anchors": count.float(),
        }
    return loss, metrics


class TripletLoss:
    """Configured triplet loss: ``loss(pred, data) -> (losses, metrics)`` (the signature of every featlab loss);
    symmetric by default (anchors in both images).

    Args:
        conf: keys of :attr:`default_conf`.

    Call with:
        pred: ``descriptors0`` (B, N, D), ``descriptors1`` (B, M, D).
        data: ``matches0`` (B, N) int64 index into image 1, -1 unmatched; ``keypoints1`` (B, M, 2) (and
            ``keypoints0`` (B, N, 2) when symmetric) for 'hardest-outside-radius'; optional ``keypoint_masks0``
            (B, N) / ``keypoint_masks1`` (B, M) bool, False for padding.
        generator: optional torch generator for 'random' mining (reproducibility).
    Returns:
        losses: ``total`` (what to minimise: the mean of the directions), ``triplet0`` (anchors in image 0) and,
            when symmetric, ``triplet1`` (anchors in image 1); scalar tensors.
        metrics: those of :func:`triplet_loss`, averaged over the directions; detached scalar tensors.
    """

    default_conf = {
        "margin": 1.0,  # hinge margin (see the module docstring for the choice vs the paper's m = 2)
        "distance": "euclidean",  # euclidean | squared
        "mining": "hardest-outside-radius",  # random | hardest | hardest-outside-radius
        "negative_radius": 4.0,  # px around the positive that are never negatives (hardest-outside-radius)
        "symmetric": True,  # also use the keypoints of image 1 as anchors against image 0
    }

    def __init__(self, conf=None):
        from ..conf import resolve_conf
        from ..errors import ConfigError

        self.conf = resolve_conf(self.default_conf, conf, "loss")
        if self.conf.mining not in MINING_MODES:
            raise ConfigError(f"loss.mining must be one of {MINING_MODES}, got {self.conf.mining!r}")
        if self.conf.distance not in DISTANCES:
            raise ConfigError(f"loss.distance must be one of {DISTANCES}, got {self.conf.distance!r}")

    def __call__(self, pred: dict, data: dict, generator: torch.Generator | None = None):
        c = self.conf
        kw = dict(margin=c.margin, mining=c.mining, negative_radius=c.negative_radius, distance=c.distance,
                  generator=generator)
        desc0, desc1, matches0 = pred["descriptors0"], pred["descriptors1"], data["matches0"]
        loss0, metrics = triplet_loss(desc0, desc1, matches0, data.get("keypoints1"), data.get("keypoint_masks1"),
                                      **kw)
        if not c.symmetric:
            return {"total": loss0, "triplet0": loss0}, metrics
        matches1 = invert_matches(matches0, desc1.shape[1])
        loss1, metrics1 = triplet_loss(desc1, desc0, matches1, data.get("keypoints0"), data.get("keypoint_masks0"),
                                       **kw)
        losses = {"total": 0.5 * (loss0 + loss1), "triplet0": loss0, "triplet1": loss1}
        return losses, {k: 0.5 * (v + metrics1[k]) for k, v in metrics.items()}
