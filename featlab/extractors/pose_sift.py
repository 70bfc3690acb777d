"""``pose-sift``: the residual descriptor v2 architecture (RootSIFT g + PatchNet h on oriented, scale-normalised
patches, fused as ``L2norm([cos(phi) g, sin(phi) h])``) trained from camera poses alone.

The network, the weights format (``featlab-patch-residual/1``) and the extraction are those of
:class:`featlab.extractors.patch_residual.PatchResidualDescriptor`; only the training differs
(:mod:`featlab.training.pose`: the sparse epipolar loss of :mod:`featlab.losses.epipolar_sparse` on posed image
pairs, no correspondences; the fusion angle fitted for epipolar precision on the selection pairs under a
homography guard). The shipped h reads patches of 15 keypoint sizes, twice SIFT's support.
Weights: ``featlab/weights/pose-sift.safetensors`` (+ ``.json``), or any file given as ``weights=PATH``.
"""
from __future__ import annotations

from .base import register_extractor
from .patch_residual import PatchResidualDescriptor

TRAIN_HINT = "bash scripts/reproduce_models.sh pose-sift (featlab train pose -o runs/pose-sift --export pose-sift)"


@register_extractor("pose-sift", preset={"weights": "pose-sift"},
                    summary="rootsift keypoints; RootSIFT + oriented-patch descriptor trained from camera poses "
                            "only (sparse epipolar loss), 256-d (weights featlab/weights/pose-sift.safetensors)")
class PoseSIFT(PatchResidualDescriptor):
    """:class:`PatchResidualDescriptor` with the pose-trained weights (module docstring)."""

    model_name = "pose-sift"
    train_hint = TRAIN_HINT


__all__ = ["PoseSIFT"]
