"""SCFeat keypoints and descriptors (one network: :class:`featlab.nn.f2r.SCFeatNet`).

Extraction (as the reference): the detector's score map (full resolution) -> non-maximum suppression of radius
``nms_radius`` (a pixel is kept when it is the maximum of its (2r+1)^2 neighbourhood) -> scores above
``score_threshold`` -> pixels closer than ``border`` to the image edge dropped -> the ``max_keypoints`` best ->
sub-pixel refinement: the score-weighted mean of the offsets in the 3x3 neighbourhood (:func:`refine_subpixel`)
-> descriptors sampled bilinearly from the map chosen by ``model.extract_from`` (``local_map``, the map the
descriptor loss trained, by default) and L2-normalised.

Registered extractors:
- ``scfeat``: featlab's weights ``featlab/weights/scfeat.safetensors`` (CPU-sized network, see docs/MODELS.md).
- ``scfeat-desc``: descriptors of the same network at the keypoints of another extractor (conf ``detector``,
  default ``sift``): to compare learned keypoints with SIFT's for one descriptor.
- ``scfeat-rootsift``: weights ``featlab/weights/scfeat-rootsift.safetensors``, whose detector was trained for
  RootSIFT (below): learned keypoints, RootSIFT descriptors.

The detector is decoupled from the descriptor: a detector stage trained with a handcrafted descriptor
(``detector.descriptor: rootsift`` or ``sift`` in its config, recorded in the weights' sidecar) describes its
keypoints with that descriptor at one size (``detector.keypoint_size``, OpenCV keypoint size in pixels) and SIFT's
dominant orientation (:func:`describe_handcrafted`), in training and in extraction alike.

Weights: ``weights`` is a ``.safetensors`` path or the name of a file in ``featlab/weights/``, with a JSON sidecar
holding the network config (:func:`save_scfeat_weights`).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from ..conf import none_or, to_container
from ..errors import ConfigError, InputError
from ..io.weights import SHIPPED_WEIGHTS_DIR, load_network, resolve_weights_path, save_weights
from ..nn.f2r import SCFeatNet
from ..nn.resunet import map_extent
from ..pixels import from_grid_indices, sample_map
from .base import Extractor, build_extractor, register_extractor, stack_padded
from .handcrafted import to_gray_uint8

WEIGHTS_DIR = SHIPPED_WEIGHTS_DIR
DEFAULT_WEIGHTS = "scfeat"
FORMAT = "featlab-scfeat/1"
TRAIN_HINT = ("train them with scripts/reproduce_models.sh (featlab train scfeat, stage descriptor then detector) "
              "or pass weights=PATH.safetensors")


# ------------------------------------------------------------------------------------------------ weights I/O
def save_scfeat_weights(net: SCFeatNet, path: str | Path, extra: dict | None = None) -> Path:
    """Write the network's weights (safetensors) and its JSON sidecar (network config + ``extra``), atomically."""
    return save_weights(net, path, {"format": FORMAT, "model": to_container(dict(net.conf)), **(extra or {})})


def load_scfeat_weights(path: str | Path) -> tuple[SCFeatNet, dict]:
    """Read weights + sidecar written by :func:`save_scfeat_weights` -> (network in eval mode, sidecar).

    Raises:
        InputError: missing or corrupt files, or weights that do not fit the sidecar's network.
    """
    return load_network(path, FORMAT, "SCFeat weights", TRAIN_HINT, SCFeatNet)


# ------------------------------------------------------------------------------------------- keypoint picking
def nms_mask(scores: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """True where a pixel is the maximum of its (2 radius + 1)^2 neighbourhood. (B, 1, H, W) -> same, bool."""
    if radius <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    pooled = F.max_pool2d(scores, 2 * radius + 1, stride=1, padding=radius)
    return scores == pooled


def refine_subpixel(scores: torch.Tensor, ij: torch.Tensor) -> torch.Tensor:
    """Score-weighted mean offset in the 3x3 neighbourhood of integer peaks.

    Args:
        scores: (H, W) non-negative score map; ij: (N, 2) int64 (row, col) peaks.
    Returns:
        (N, 2) offsets (dx, dy) in pixels, each in [-1, 1] (0 where the neighbourhood sums to 0). Borders are
        replicated.
    """
    padded = F.pad(scores[None, None], (1, 1, 1, 1), mode="replicate")[0, 0]
    d = torch.arange(-1, 2, device=scores.device)
    dy, dx = torch.meshgrid(d, d, indexing="ij")
    rows = ij[:, :1, None] + 1 + dy[None]  # N, 3, 3 (padded coordinates)
    cols = ij[:, 1:, None] + 1 + dx[None]
    w = padded[rows, cols].clamp(min=0)
    total = w.flatten(1).sum(1).clamp(min=1e-12)
    ox = (w * dx[None]).flatten(1).sum(1) / total
    oy = (w * dy[None]).flatten(1).sum(1) / total
    return torch.stack([ox, oy], -1).float()


def detect_keypoints(scores: torch.Tensor, max_keypoints: int = 8000, nms_radius: int = 1,
                     score_threshold: float = 0.0, border: int = 0, subpixel: bool = True):
    """Keypoints of one score map.

    Args:
        scores: (H, W) >= 0.
        max_keypoints: keep the best this many (-1: all).
    Returns:
        (keypoints (N, 2) featlab pixels (x, y), keypoint_scores (N,)), sorted by decreasing score.
    """
    h, w = scores.shape
    keep = nms_mask(scores[None, None], nms_radius)[0, 0] & (scores > score_threshold)
    if border > 0:
        inner = torch.zeros_like(keep)
        inner[border:h - border, border:w - border] = True
        keep &= inner
    ij = keep.nonzero()
    vals = scores[ij[:, 0], ij[:, 1]]
    order = torch.argsort(vals, descending=True, stable=True)
    if max_keypoints >= 0:
        order = order[:max_keypoints]
    ij, vals = ij[order], vals[order]
    kp = from_grid_indices(ij)
    if subpixel and len(ij):
        kp = kp + refine_subpixel(scores, ij)
    return kp, vals.float()


# --------------------------------------------------------------------------------- descriptors of the keypoints
DESCRIPTORS = ("scfeat", "sift", "rootsift")  # what describes the detector's keypoints (detector.descriptor)


def handcrafted_describer(name: str):
    """The SIFT extractor that describes a detector's keypoints for ``detector.descriptor`` = ``name``; None for
    ``scfeat`` (the network's own descriptor map)."""
    if name not in DESCRIPTORS:
        raise ConfigError(f"detector.descriptor must be one of {', '.join(DESCRIPTORS)}, got {name!r}")
    return None if name == "scfeat" else build_extractor(name, {"max_keypoints": -1})


def describe_handcrafted(describer, image: torch.Tensor, keypoints: torch.Tensor, size: float) -> torch.Tensor:
    """Descriptors of ``describer`` (:func:`handcrafted_describer`) at (N, 2) featlab-pixel keypoints of one
    (C, H, W) image in [0, 1]: one OpenCV keypoint size ``size``, SIFT's dominant orientation -> (N, 128) on the
    keypoints' device."""
    gray = to_gray_uint8(image[None])[0]
    desc = describer.describe(gray, keypoints.detach().cpu().numpy(), float(size))
    return torch.from_numpy(desc).to(keypoints.device)


# ------------------------------------------------------------------------------------------------- extractor
def _load_net(weights: str) -> tuple[SCFeatNet, dict, Path]:
    path = resolve_weights_path(weights, WEIGHTS_DIR)
    if not path.is_file():
        raise InputError(f"SCFeat weights not found: {path}; {TRAIN_HINT}")
    net, meta = load_scfeat_weights(path)
    for p in net.parameters():
        p.requires_grad_(False)
    return net, meta, path


@register_extractor("scfeat", summary="SCFeat: peakiness detector + F2R descriptors (pose-supervised, 128-d)")
@register_extractor("scfeat-rootsift", preset={"weights": "scfeat-rootsift"},
                    summary="SCFeat's detector trained for RootSIFT (pose-supervised keypoints, RootSIFT descriptors at "
                            "one size + dominant orientation, 128-d)")
class SCFeat(Extractor):
    """SCFeat keypoints and descriptors (see the module docstring)."""

    needs_rgb = True
    default_conf = {
        "weights": DEFAULT_WEIGHTS,  # .safetensors path, or the name of a file in featlab/weights/
        "max_keypoints": 8000,  # the reference's setting
        "nms_radius": 1,  # pixels; (2r+1)^2 non-maximum suppression
        "score_threshold": 0.0,  # keep scores strictly above this
        "border": 4,  # drop keypoints closer than this (pixels) to the image edge
        "subpixel": True,  # 3x3 score-weighted refinement
        "extract_from": none_or(str),  # local | desc: override the weights' model.extract_from
        "descriptor": none_or(str),  # scfeat | sift | rootsift; null: the one the detector was trained with
        # (sidecar detector.descriptor, scfeat when absent)
        "keypoint_size": none_or(float),  # OpenCV keypoint size (px) of a handcrafted descriptor; null: the
        # training's detector.keypoint_size
    }

    def _init(self, conf):
        net, meta, path = _load_net(conf.weights)
        if conf.extract_from is not None:
            if conf.extract_from not in ("local", "desc"):
                raise ConfigError(f"scfeat.extract_from must be local or desc, got {conf.extract_from!r}")
            net.conf["extract_from"] = conf.extract_from
        trained = meta.get("detector") or {}
        self.descriptor = conf.descriptor or trained.get("descriptor", "scfeat")
        self.describer = handcrafted_describer(self.descriptor)
        self.keypoint_size = float(conf.keypoint_size if conf.keypoint_size is not None
                                   else trained.get("keypoint_size", 4.0))
        if self.keypoint_size <= 0:
            raise ConfigError(f"scfeat.keypoint_size must be > 0, got {self.keypoint_size}")
        self.net, self.meta, self.weights_path = net, meta, path

    @property
    def descriptor_dim(self) -> int:
        return 128 if self.describer is not None else self.net.descriptor_dim

    @torch.no_grad()
    def _forward(self, data):
        image = data["image"].float()
        size = tuple(image.shape[-2:])
        out = self.net(image)
        dmap = self.net.descriptor_map(out)
        items = []
        for b in range(image.shape[0]):
            kp, sc = detect_keypoints(out["scores"][b, 0], int(self.conf.max_keypoints), int(self.conf.nms_radius),
                                      float(self.conf.score_threshold), int(self.conf.border),
                                      bool(self.conf.subpixel))
            if self.describer is not None:
                desc = describe_handcrafted(self.describer, image[b], kp, self.keypoint_size)
            else:
                desc = sample_map(dmap[b:b + 1], kp[None], map_extent(*size), normalize=True)[0]
            items.append({"keypoints": kp, "keypoint_scores": sc, "descriptors": desc})
        return stack_padded(items)


@register_extractor("scfeat-desc", summary="SCFeat descriptors at the keypoints of another extractor (`detector`)")
class SCFeatDescriptors(Extractor):
    """Keypoints (and scores) of a registered detector, SCFeat descriptors sampled at them."""

    needs_rgb = True
    default_conf = {
        "detector": "sift",  # registered extractor whose keypoints are used
        "detector_conf": none_or(dict),  # overrides of its config (max_keypoints is passed on from here)
        "weights": DEFAULT_WEIGHTS,
    }

    def _init(self, conf):
        if not conf.detector or conf.detector.startswith("scfeat"):
            raise ConfigError(f"scfeat-desc.detector must name a keypoint extractor, got {conf.detector!r}")
        self.net, self.meta, self.weights_path = _load_net(conf.weights)
        det_conf = dict(to_container(conf.detector_conf) or {})
        det_conf["max_keypoints"] = conf.max_keypoints
        self.detector = build_extractor(conf.detector, det_conf)

    @property
    def descriptor_dim(self) -> int:
        return self.net.descriptor_dim

    @torch.no_grad()
    def _forward(self, data):
        image = data["image"].float()
        pred = dict(self.detector({"image": image}))
        kp = pred["keypoints"]
        maps = self.net.describe(image)
        desc = sample_map(self.net.descriptor_map(maps), kp, map_extent(*image.shape[-2:]), normalize=True)
        if "keypoint_masks" in pred:
            desc = desc * pred["keypoint_masks"][..., None]
        pred["descriptors"] = desc
        return pred


__all__ = ["SCFeat", "SCFeatDescriptors", "save_scfeat_weights", "load_scfeat_weights", "nms_mask",
           "refine_subpixel", "detect_keypoints", "DESCRIPTORS", "handcrafted_describer", "describe_handcrafted"]
