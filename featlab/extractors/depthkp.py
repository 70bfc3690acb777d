"""``depthkp``: learned keypoints and descriptors on depth maps (Georgakis et al. 2018, RECIPES section 4).

A depth extractor (``inputs = "depth"``, see the data contract in :mod:`featlab.extractors.base`): it reads
``depth`` (B, 1, H, W) metres (0 = invalid) and ``intrinsics`` (B, 3, 3), runs :class:`featlab.nn.depthnet.DepthKPNet`
(the map is zero-padded to a multiple of 8 at the bottom/right, which moves no pixel), and keeps the top
``max_keypoints`` proposals of the sampling layer (:func:`featlab.nn.depthnet.sample_proposals`: valid-depth cells of
the stride-4 score map, NMS, top-k in score order, cell centres, L2-normalised descriptors). The network ignores K
(it sees depth relief only); K is part of the input contract for the geometry that follows (lifting to 3D).

Scale: the network learned depth relief at one pixel scale, 7-Scenes' 640x480 maps halved to 240x320 (focal 292.5
px; the synthetic rooms: 251 px). The extractor therefore resizes every map itself (nearest sampling, pixel-centre
aligned, as :func:`featlab.datasets.posed.resize_depth_nearest`) so that its focal length becomes ``target_focal``
(from ``intrinsics``; skipped within 5 %), and maps the keypoints back exactly. A 640x480 Kinect map (fx = 585)
runs at 240x320, whatever ``resize`` the caller chose; a keypoint's cell is then 8 px of the original map. Weights: ``weights`` is a ``.safetensors`` path or the name
of a file in ``featlab/weights/`` (default ``depthkp``) with its JSON sidecar (:func:`save_depthkp_weights`).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..conf import checked, none_or, to_container
from ..errors import InputError
from ..io.weights import SHIPPED_WEIGHTS_DIR, load_network, resolve_weights_path, save_weights
from ..nn.depthnet import DepthKPNet, pad_to_multiple, sample_proposals, valid_cells
from ..pixels import from_opencv
from .base import Extractor, register_extractor

WEIGHTS_DIR = SHIPPED_WEIGHTS_DIR
DEFAULT_WEIGHTS = "depthkp"
FORMAT = "featlab-depthkp/1"
TRAIN_HINT = ("featlab train depthkp --data SEQUENCE_DIR -o runs/depthkp --export depthkp "
              "(or pass weights=PATH.safetensors)")


def save_depthkp_weights(net: DepthKPNet, path: str | Path, extra: dict | None = None) -> Path:
    """Write the network's weights (safetensors) and its JSON sidecar (network config + ``extra``), atomically."""
    return save_weights(net, path, {"format": FORMAT, "model": to_container(net.conf), **(extra or {})})


def load_depthkp_weights(path: str | Path) -> tuple[DepthKPNet, dict]:
    """Read weights + sidecar written by :func:`save_depthkp_weights` -> (network in eval mode, sidecar dict).

    Raises:
        InputError: missing or corrupt weights or sidecar, or weights that do not fit the sidecar's network.
    """
    return load_network(path, FORMAT, "depthkp weights", f"train them with `{TRAIN_HINT}`", DepthKPNet)


def resize_depth_nearest_torch(depth: torch.Tensor, size) -> torch.Tensor:
    """Nearest resize of (B, 1, H, W) depth to ``size`` = (H', W') with pixel centres aligned (output pixel (i, j)
    takes input pixel ``(floor((i + 0.5) H / H'), floor((j + 0.5) W / W'))``): no depth is mixed across edges."""
    h, w = depth.shape[-2:]
    oh, ow = int(size[0]), int(size[1])
    dev = depth.device
    rows = (from_opencv(torch.arange(oh, device=dev, dtype=torch.float64)) * (h / oh)).long().clamp(max=h - 1)
    cols = (from_opencv(torch.arange(ow, device=dev, dtype=torch.float64)) * (w / ow)).long().clamp(max=w - 1)
    return depth[..., rows[:, None], cols[None, :]]


@register_extractor("depthkp", preset={"target_focal": 292.5},
                    summary="learned keypoints + descriptors on depth maps (Georgakis et al. 2018), featlab weights")
class DepthKP(Extractor):
    """Keypoints and 64-d descriptors learned on depth maps (see the module docstring)."""

    inputs = "depth"
    default_conf = {
        "weights": DEFAULT_WEIGHTS,  # .safetensors path or name in featlab/weights/
        "nms_radius": checked(1, ge=0),  # cells of the stride-4 score map (1: 3x3 NMS)
        "min_valid_fraction": checked(0.5, gt=0, le=1),  # a cell is proposed only if this share of it has depth
        # px: maps are resized to this focal length before the network (the training scale); null: never resized
        "target_focal": checked(none_or(float), gt=0),
    }

    def _init(self, conf):
        self.weights_path = resolve_weights_path(conf.weights)
        self.net, self.meta = load_depthkp_weights(self.weights_path)

    @property
    def descriptor_dim(self) -> int:
        return self.net.descriptor_dim

    def _forward(self, data: dict) -> dict:
        """Args: ``depth`` (B, 1, H, W) metres (0 invalid), ``intrinsics`` (B, 3, 3) (not used by the network).

        Returns: ``keypoints`` (B, N, 2) featlab pixels of the depth map, ``keypoint_scores`` (B, N) in (0, 1)
        sorted descending, ``descriptors`` (B, N, D) L2-normalised, and ``keypoint_masks`` (B, N) when B > 1 and
        the maps have different numbers of proposals (padding: False, zero).
        """
        depth = data["depth"].float()
        h, w = depth.shape[-2:]
        scale = 1.0
        if self.conf.target_focal is not None:
            # one factor for the batch (the mean focal): maps of one batch share a size
            scale = float(self.conf.target_focal) / float(data["intrinsics"][:, 0, 0].float().mean())
        if abs(scale - 1.0) > 0.05:
            depth = resize_depth_nearest_torch(depth, (max(8, round(h * scale)), max(8, round(w * scale))))
        sx, sy = w / depth.shape[-1], h / depth.shape[-2]  # p_original = p_resized * (sx, sy), exact in featlab pixels
        padded = pad_to_multiple(depth)
        amp = self.conf.dtype == "bfloat16"
        with torch.autocast(device_type=depth.device.type, dtype=torch.bfloat16, enabled=amp):
            maps = self.net(padded)
        out = sample_proposals(maps["scores"].float(), maps["descriptors"].float(),
                               valid_cells(padded, min_fraction=float(self.conf.min_valid_fraction)),
                               int(self.conf.max_keypoints), padded.shape[-2:], int(self.conf.nms_radius))
        # cells of the padding hold no depth, so every keypoint lies inside the original map
        masks = out["keypoint_masks"]
        counts = masks.sum(1)
        n = int(counts.max()) if len(counts) else 0
        keypoints = out["keypoints"][:, :n] * out["keypoints"].new_tensor([sx, sy])
        pred = {"keypoints": keypoints, "keypoint_scores": out["keypoint_scores"][:, :n],
                "descriptors": out["descriptors"][:, :n] * masks[:, :n, None]}
        if len(counts) > 1 and int(counts.min()) != n:
            pred["keypoint_masks"] = masks[:, :n]
        return pred


__all__ = ["DepthKP", "save_depthkp_weights", "load_depthkp_weights", "FORMAT", "DEFAULT_WEIGHTS"]
