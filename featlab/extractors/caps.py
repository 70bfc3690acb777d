"""CAPS descriptors (Wang et al., ECCV 2020) at the keypoints of another extractor.

The CAPS network (:class:`featlab.nn.resunet.ResUNet`, trained from camera poses only, see
:mod:`featlab.training.caps`) gives a coarse (H/16) and a fine (H/4) dense map. The descriptor of a keypoint is
``normalise(concat(normalise(coarse(x)), normalise(fine(x))))``: each map sampled bilinearly at the keypoint with
:func:`featlab.pixels.sample_map` and L2-normalised, then concatenated (256-d for 128 + 128) and normalised again
(each half then has norm 1/sqrt(2), so the cosine similarity is the mean of the two levels' similarities).

Registered extractors:
- ``caps-sift``: OpenCV SIFT keypoints (and scores) + CAPS descriptors.
- ``caps``: the generic form; conf key ``detector`` names any registered extractor whose keypoints are used
  (``detector_conf`` overrides its settings; ``max_keypoints`` is passed on).

Weights: ``weights`` is a ``.safetensors`` path or the name of a file in ``featlab/weights/`` (default
``caps-resnet18``), with a JSON sidecar beside it (same stem, ``.json``) holding the network config
(:func:`save_caps_weights`). ``dtype: bfloat16`` with ``channels_last: true`` runs the network under bf16
autocast in channels_last memory format (much faster on CPU); descriptors are float32 either way.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..conf import none_or, to_container
from ..errors import ConfigError, InputError
from ..io.weights import (SHIPPED_WEIGHTS_DIR, load_network, resolve_weights_path, save_weights,  # noqa: F401
                          sidecar_path)
from ..nn.fold import fold_batchnorm
from ..nn.resunet import ResUNet, map_extent
from ..pixels import sample_map
from .base import Extractor, build_extractor, register_extractor

#: shipped weights: featlab/weights/<name>.safetensors + <name>.json
WEIGHTS_DIR = SHIPPED_WEIGHTS_DIR
DEFAULT_WEIGHTS = "caps-resnet18"
FORMAT = "featlab-caps/1"
TRAIN_HINT = ("featlab train caps --data SEQUENCE_DIR -o runs/caps-resnet18 --export caps-resnet18 "
              "(or pass weights=PATH.safetensors)")


# ------------------------------------------------------------------------------------------------ weights I/O
def save_caps_weights(net: ResUNet, path: str | Path, extra: dict | None = None) -> Path:
    """Write the network's weights (safetensors) and its JSON sidecar (network config + ``extra``), atomically."""
    return save_weights(net, path, {"format": FORMAT, "model": to_container(dict(net.conf)), **(extra or {})})


def load_caps_weights(path: str | Path) -> tuple[ResUNet, dict]:
    """Read weights + sidecar written by :func:`save_caps_weights` -> (network in eval mode, sidecar dict).

    Raises:
        InputError: missing or corrupt weights or sidecar, or weights that do not fit the sidecar's network.
    """
    return load_network(path, FORMAT, "CAPS weights", f"train them with `{TRAIN_HINT}`", ResUNet)


# ------------------------------------------------------------------------------------------------ descriptors
def dense_maps(net: ResUNet, image: torch.Tensor, amp_dtype: torch.dtype | None = None,
               channels_last: bool = False) -> dict[str, torch.Tensor]:
    """Run the network: image (B, 3|1, H, W) in [0, 1] -> ``coarse``/``fine`` float32 raw maps."""
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=image.device.type, dtype=amp_dtype or torch.bfloat16,
                        enabled=amp_dtype is not None):
        maps = net(image)
    return {k: v.float() for k, v in maps.items()}


def sample_descriptors(maps: dict[str, torch.Tensor], keypoints: torch.Tensor, image_size) -> torch.Tensor:
    """CAPS descriptors at keypoints: normalise(concat(normalise(coarse(x)), normalise(fine(x)))).

    Args:
        maps: ``coarse`` (B, C, h/16, w/16) and ``fine`` (B, C', h/4, w/4) raw maps of images of size
            ``image_size`` = (H, W) (the maps cover :func:`featlab.nn.resunet.map_extent` (H, W)).
        keypoints: (B, N, 2) featlab pixels.
    Returns:
        (B, N, C + C') float32, L2-normalised.
    """
    extent = map_extent(*image_size)
    with torch.autocast(device_type=keypoints.device.type, enabled=False):
        kp = keypoints.float()
        coarse = sample_map(maps["coarse"].float(), kp, extent, normalize=True)
        fine = sample_map(maps["fine"].float(), kp, extent, normalize=True)
        return F.normalize(torch.cat([coarse, fine], -1), dim=-1)


# ------------------------------------------------------------------------------------------------- extractor
@register_extractor("caps-sift", preset={"detector": "sift"},
                    summary="SIFT keypoints + CAPS descriptors (pose-supervised ResNet U-Net, 256-d)")
@register_extractor("caps", summary="CAPS descriptors at the keypoints of any extractor (conf key `detector`)")
class CAPS(Extractor):
    """Keypoints of a registered detector, CAPS descriptors (coarse + fine, 256-d) sampled at them."""

    needs_rgb = True
    default_conf = {
        "detector": "sift",  # registered extractor whose keypoints (and scores) are used
        "detector_conf": none_or(dict),  # overrides of the detector's config (max_keypoints is passed on from here)
        "weights": DEFAULT_WEIGHTS,  # .safetensors path, or the name of a file in featlab/weights/
        # channels_last also in float32: measured 8% faster inference at 480x640 on the 2-core AVX2 CPU
        # (306 vs 334 ms, before BatchNorm folding;
        # docs/results/RESULTS-before-issue8.md), same descriptors to float rounding
        "channels_last": True,
    }

    def _init(self, conf):
        if not conf.detector or conf.detector.startswith("caps"):
            raise ConfigError(f"caps.detector must name a keypoint extractor (e.g. sift), got {conf.detector!r}")
        path = resolve_weights_path(conf.weights, WEIGHTS_DIR)
        if not path.is_file():
            raise InputError(f"CAPS weights not found: {path}; train them with `{TRAIN_HINT}`")
        net, meta = load_caps_weights(path)
        net = fold_batchnorm(net)  # built for inference only (training uses ResUNet itself)
        for p in net.parameters():
            p.requires_grad_(False)
        if conf.channels_last:
            net = net.to(memory_format=torch.channels_last)
        self.net = net
        self.meta = meta
        self.weights_path = path
        self.amp_dtype = torch.bfloat16 if conf.dtype == "bfloat16" else None
        det_conf = dict(to_container(conf.detector_conf) or {})
        det_conf["max_keypoints"] = conf.max_keypoints
        self.detector = build_extractor(conf.detector, det_conf)

    @property
    def descriptor_dim(self) -> int:
        return self.net.coarse_dim + self.net.fine_dim

    @torch.no_grad()
    def _forward(self, data):
        image = data["image"]
        pred = dict(self.detector({"image": image}))
        rgb = image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image
        kpts = pred["keypoints"]
        b, n = kpts.shape[:2]
        if n == 0:
            desc = kpts.new_zeros((b, 0, self.descriptor_dim), dtype=torch.float32)
        else:
            maps = dense_maps(self.net, rgb.float(), self.amp_dtype, bool(self.conf.channels_last))
            desc = sample_descriptors(maps, kpts, tuple(image.shape[-2:]))
            if "keypoint_masks" in pred:  # padded entries are zero (data contract)
                desc = desc * pred["keypoint_masks"][..., None]
        pred["descriptors"] = desc
        return pred


def available_weights() -> dict[str, Path]:
    """Shipped CAPS weights in featlab/weights/ (name -> path)."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("caps*.safetensors"))}


__all__ = ["CAPS", "save_caps_weights", "load_caps_weights", "dense_maps", "sample_descriptors",
           "resolve_weights_path", "sidecar_path"]
