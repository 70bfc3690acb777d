"""Learned keypoint selection among a detector's candidates: which detections will find a partner in another view.

A descriptor cannot make mutual nearest-neighbour matching ignore a keypoint that has no partner in the other
view, and such keypoints make most of RootSIFT's wrong matches (measured on ``bsds500/val`` warps: 57.6 of 74.8
wrong matches per pair come from keypoints whose ground-truth partner is not among the other image's keypoints).
SIFT keeps its top-k detections by DoG response; :class:`KeypointSelector` re-ranks all of them by a learned
matchability instead, from what the detector already gives (no image pass):

    features = [log response, log size, distance to the image border (fraction of the short side, capped at 0.2,
                times 5), g's descriptor]                                                      (N, 3 + g_dim)
    logit    = MLP(BatchNorm(features))                                                        (N,)
    rank     = logit + log response                                                            (N,)

Trained with binary cross-entropy (:func:`featlab.losses.selector.selector_loss`) on random warps against the
label "this detection has a ground-truth partner among the other image's detections" (within the positive radius,
mutually closest). ``rank`` adds SIFT's own log response to the learned logit: measured on ``bsds500/val`` warps
(moderate / hard presets, 25 pairs each, top 1000, RootSIFT descriptors, selector trained on 150 warped pairs of
the training photos), MMA@3 0.890 / 0.775 by response, 0.899 / 0.813 by the logit alone, 0.907 / 0.821 by their
sum (``benchmarks/selector_ranking.py 150 rep 1``).
"""
from __future__ import annotations

import torch
from torch import nn

#: features before the descriptor: log response, log size, border distance
NUM_GEOMETRY_FEATURES = 3
#: border distance is capped at this fraction of the image's short side (beyond it, position says nothing)
BORDER_CAP = 0.2


def selector_features(keypoints: torch.Tensor, responses: torch.Tensor, sizes: torch.Tensor,
                      descriptors: torch.Tensor, image_size) -> torch.Tensor:
    """Per-keypoint input of :class:`KeypointSelector`.

    Args:
        keypoints: (N, 2) featlab pixels; responses: (N,) detector responses (> 0); sizes: (N,) OpenCV keypoint
            sizes (px); descriptors: (N, D) g's descriptors; image_size: (W, H) of the image.
    Returns:
        (N, 3 + D) float32.
    """
    w, h = (float(v) for v in image_size)
    k = keypoints.float()
    border = torch.stack([k[:, 0], k[:, 1], w - k[:, 0], h - k[:, 1]], -1).amin(-1) / min(w, h)
    geometry = torch.stack([responses.float().clamp_min(1e-6).log(), sizes.float().clamp_min(1e-3).log(),
                            border.clamp(0.0, BORDER_CAP) / BORDER_CAP], -1)
    return torch.cat([geometry, descriptors.float()], -1)


class KeypointSelector(nn.Module):
    """MLP matchability of detections (module docstring). Input (N, 3 + g_dim) -> logits (N,)."""

    def __init__(self, g_dim: int = 128, hidden: int = 64):
        super().__init__()
        d = NUM_GEOMETRY_FEATURES + int(g_dim)
        # BatchNorm without affine: the input's scale is learnt from the data, then frozen with the weights
        self.norm = nn.BatchNorm1d(d, affine=False)
        self.mlp = nn.Sequential(nn.Linear(d, int(hidden)), nn.ReLU(inplace=True), nn.Linear(int(hidden), 1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.shape[0] == 0:
            return features.new_zeros((0,))
        return self.mlp(self.norm(features.float()))[:, 0]

    def rank(self, features: torch.Tensor) -> torch.Tensor:
        """Ranking score (N,): learned logit + log response (feature 0), larger is better."""
        return self(features) + features[:, 0].float()


__all__ = ["KeypointSelector", "selector_features", "NUM_GEOMETRY_FEATURES"]
