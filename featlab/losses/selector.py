"""Loss of the learned keypoint selector (:class:`featlab.nn.selector.KeypointSelector`).

Binary cross-entropy of the matchability logit of every detection against its label (1: the detection has a
ground-truth partner among the other view's detections, mutually closest within the positive radius), averaged over
valid rows (unweighted: the logit is then the log-odds of a partner, which the ranking adds to the log response as
measured, see :mod:`featlab.nn.selector`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def selector_loss(pred: dict, data: dict) -> tuple[torch.Tensor, dict]:
    """Args:
        pred: ``selector_logits`` float (B, C) matchability logits of C candidate detections per image.
        data: ``selector_labels`` float (B, C) in {0, 1}; ``selector_masks`` bool (B, C), False for padding.
    Returns:
        (scalar loss, metrics: ``selector_bce``, ``selector_positive_rate``, ``selector_accuracy``).
    """
    m = data["selector_masks"]
    logits, labels = pred["selector_logits"][m].float(), data["selector_labels"][m].float()
    if logits.numel() == 0:
        zero = pred["selector_logits"].sum() * 0.0
        return zero, {"selector_bce": zero.detach()}
    loss = F.binary_cross_entropy_with_logits(logits, labels)
    with torch.no_grad():
        accuracy = ((logits > 0).float() == labels).float().mean()
    return loss, {"selector_bce": loss.detach(), "selector_positive_rate": labels.mean(),
                  "selector_accuracy": accuracy}


__all__ = ["selector_loss"]
