"""Residual descriptor v2: RootSIFT g + a learned descriptor h of oriented, scale-normalised patches.

The first residual descriptor (:mod:`featlab.extractors.residual`) samples a dense CNN map at the keypoint location
only, so it ignores SIFT's scale and orientation and adds noise on rotated or scaled views. Here h describes the
same image region as SIFT's own descriptor, in the keypoint's frame:

**Patch geometry** (:func:`extract_patches`). OpenCV's SIFT descriptor (``calcSIFTDescriptor``) of a keypoint of
diameter ``kp.size`` is a 4 x 4 grid of histogram cells, each ``3 * kp.size / 2`` px wide (``SIFT_DESCR_SCL_FCTR
= 3`` times the scale ``kp.size / 2``), so the grid spans ``6 * kp.size``; trilinear binning reaches half a cell
further on every side, so the pixels SIFT reads span ``7.5 * kp.size``. A patch (``patch.size`` = 32 samples a
side) covers that square: ``patch.window`` = 7.5 keypoint sizes. Its axes are SIFT's: the first (columns) points
along the dominant orientation ``u = (cos a, sin a)`` with ``a = kp.angle`` in degrees in image coordinates
(x right, y down: checked by rotating an image by +30 deg, which adds +30 deg to the angles of the re-detected
keypoints), the second (rows) along ``v = (-sin a, cos a)``. Sample (row i, column j) lies at::

    x + window * size * (((j + 0.5) / P - 0.5) * u + ((i + 0.5) / P - 0.5) * v)     (featlab pixels)

Samples are read with :func:`featlab.pixels.sample_map` (bilinear) from a Gaussian pyramid of the grey image
(:func:`gaussian_pyramid`): level l has pixels 2^l wide and a blur of ~0.6 * 2^l px, so a patch whose sample
step is s px reads level log2(s) (linearly interpolated between the two nearest levels, clamped to the pyramid):
large keypoints do not alias and the patch changes continuously with the keypoint's size, which keeps it
equivariant under scaling. The resulting patch depends only on the keypoint frame (x, size, angle), so an image
rotated or scaled about any point gives the same patch at corresponding frames (tests/test_patch_residual.py).

**h**: :class:`featlab.nn.patchnet.PatchNet` (128-d, L2-normalised, per-patch mean/std normalisation).

**Fusion that cannot hurt**: ``descriptor = L2-normalise(concat(a * g, b * h))`` (256-d), with ``a, b >= 0`` a
buffer of the network (``fusion``), fitted after training by maximising MMA@3 of mutual nearest-neighbour
matches on the selection split (:mod:`featlab.training.patch_residual`). Both parts are unit vectors, so the
squared distance of two fused descriptors is ``(a^2 d_g^2 + b^2 d_h^2) / (a^2 + b^2)``: ``b = 0`` matches exactly
as g does, and the fit can always fall back to it.

**Keypoint selection** (weights with ``model.selector_hidden`` > 0, as shipped): g returns all its detections
(``candidates``), :class:`featlab.nn.selector.KeypointSelector` ranks them by learned matchability plus log response
and the best ``max_keypoints`` are kept (:func:`select_keypoints`). When the fitted fusion gives h no weight
(b = 0) the descriptor is g's own (g_dim), exactly, and h is not computed.

Weights: ``.safetensors`` + JSON sidecar (format ``featlab-patch-residual/1``: the model config, patch geometry
included, and the handcrafted g it was trained with), loaded by name from ``featlab/weights/`` or by path.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import none_or, resolve_conf, to_container
from ..errors import ConfigError, InputError
from ..io.image import rgb_to_gray
from ..io.weights import (SHIPPED_WEIGHTS_DIR, load_state_strict, load_weights, resolve_weights_path,
                          save_weights)
from ..nn import fold_batchnorm
from ..nn.patchnet import PatchNet
from ..nn.selector import KeypointSelector, selector_features
from ..pixels import pixel_grid, sample_map
from .base import Extractor, build_extractor, register_extractor, stack_padded
from .residual import build_trained_g

FORMAT = "featlab-patch-residual/1"
TRAIN_HINT = "bash scripts/reproduce_models.sh residual-sift"
WEIGHTS_DIR = SHIPPED_WEIGHTS_DIR

#: OpenCV SIFT's descriptor support in keypoint sizes: (4 cells + 1 interpolation cell) * 3 * size / 2
SIFT_SUPPORT = 7.5

# separable 6-tap binomial (variance 1.25 input px): blur + decimation by 2 whose output sample k is centred at
# input coordinate 2k + 1 (featlab pixels, 2 * (k + 0.5)), i.e. exactly the centre of the level's pixel k
_PYR_TAPS = (1.0, 5.0, 10.0, 10.0, 5.0, 1.0)


def gaussian_pyramid(gray: torch.Tensor, levels: int) -> tuple[list[torch.Tensor], tuple[int, int]]:
    """Blur-and-decimate pyramid of a grey image, aligned with featlab's pixel convention.

    The image is first padded (edge values replicated) at the bottom/right to multiples of ``2 ** (levels - 1)``,
    so every level covers the padded image extent exactly (what :func:`featlab.pixels.sample_map` assumes);
    keypoint coordinates are unchanged by that padding.

    Args:
        gray: (B, 1, H, W) float.
        levels: number of levels (>= 1); level 0 is the (padded) image.
    Returns:
        maps: list of ``levels`` tensors (B, 1, Hp / 2^l, Wp / 2^l); (Hp, Wp): the padded size.
    """
    m = 2 ** (levels - 1)
    h, w = gray.shape[-2:]
    hp, wp = -(-h // m) * m, -(-w // m) * m
    x = F.pad(gray, (0, wp - w, 0, hp - h), mode="replicate") if (hp, wp) != (h, w) else gray
    taps = gray.new_tensor(_PYR_TAPS) / sum(_PYR_TAPS)
    kx, ky = taps.view(1, 1, 1, 6), taps.view(1, 1, 6, 1)
    maps = [x]
    for _ in range(levels - 1):
        x = F.pad(x, (2, 2, 2, 2), mode="replicate")
        x = F.conv2d(F.conv2d(x, kx, stride=(1, 2)), ky, stride=(2, 1))
        maps.append(x)
    return maps, (hp, wp)


def patch_sample_points(keypoints: torch.Tensor, sizes: torch.Tensor, angles: torch.Tensor, patch_size: int,
                        window: float) -> torch.Tensor:
    """Image locations of the samples of each keypoint's oriented patch (see the module docstring).

    Args:
        keypoints: (N, 2) featlab pixels; sizes: (N,) OpenCV ``kp.size`` in px; angles: (N,) ``kp.angle`` in
            degrees; patch_size: P; window: patch side in keypoint sizes.
    Returns:
        (N, P * P, 2) featlab pixels, samples in row-major order (index = row * P + column).
    """
    a = torch.deg2rad(angles.float())
    side = float(window) * sizes.float()
    cos, sin = torch.cos(a) * side, torch.sin(a) * side
    # every patch is an affine map of one unit grid, x = k + col * side * u + row * side * v, written as one matrix
    # product (N, 6) @ (6, P*P*2): ~2 ms for 1000 patches, 5x faster than batched 2x2 products (baddbmm)
    params = torch.stack([cos, sin, -sin, cos, keypoints[:, 0].float(), keypoints[:, 1].float()], 1)
    return (params @ _unit_grid(patch_size, keypoints.device)).view(len(keypoints), patch_size * patch_size, 2)


def _unit_grid(patch_size: int, device) -> torch.Tensor:
    """(6, P*P*2): the coefficients of (u_x, u_y, v_x, v_y, k_x, k_y) in the (x, y) of each sample (row-major)."""
    # sample centres in patch sides from the patch centre: the pixel centres of a P x P image, shifted and scaled
    cols, rows = ((pixel_grid(patch_size, patch_size, device=device) - patch_size / 2) / patch_size).unbind(-1)
    ones = torch.ones_like(cols)
    zeros = torch.zeros_like(cols)
    x = torch.stack([cols, zeros, rows, zeros, ones, zeros])  # x = col * u_x + row * v_x + k_x
    y = torch.stack([zeros, cols, zeros, rows, zeros, ones])  # y = col * u_y + row * v_y + k_y
    return torch.stack([x, y], -1).reshape(6, -1)


def extract_patches(gray: torch.Tensor | None, keypoints: torch.Tensor, sizes: torch.Tensor, angles: torch.Tensor,
                    patch_size: int = 32, window: float = SIFT_SUPPORT, levels: int = 6,
                    pyramid: tuple[list[torch.Tensor], tuple[int, int]] | None = None) -> torch.Tensor:
    """Oriented, scale-normalised grey patches at keypoints of one image.

    Args:
        gray: (1, 1, H, W) float grey image (or None when ``pyramid`` is given).
        keypoints: (N, 2) featlab pixels; sizes: (N,) OpenCV ``kp.size`` (px); angles: (N,) ``kp.angle`` (deg).
        patch_size: P; window: patch side in keypoint sizes (default: SIFT's descriptor support);
        levels: pyramid levels; pyramid: a :func:`gaussian_pyramid` of the image already built.
    Returns:
        (N, 1, P, P) float32 patches (outside the image: edge values, as ``sample_map`` clamps to the border).
    """
    n = len(keypoints)
    if n == 0:
        return keypoints.new_zeros((0, 1, patch_size, patch_size), dtype=torch.float32)
    maps, (hp, wp) = pyramid if pyramid is not None else gaussian_pyramid(gray.float(), int(levels))
    step = float(window) * sizes.float() / patch_size  # image px between samples
    level = torch.log2(step.clamp(min=1e-6)).clamp(0, len(maps) - 1)
    # sorted by level, the keypoints that read a pyramid level form one contiguous range
    level, order = torch.sort(level)
    points = patch_sample_points(keypoints[order], sizes[order], angles[order], patch_size, window)
    out = points.new_zeros((n, patch_size * patch_size))
    for lv, level_map in enumerate(maps):
        start = int(torch.searchsorted(level, float(lv) - 1.0, right=True))
        stop = int(torch.searchsorted(level, float(lv) + 1.0, right=False))
        if stop <= start:
            continue
        # linear interpolation between the two nearest levels: the patch varies continuously with the size
        weight = (1.0 - (level[start:stop] - lv).abs())[:, None]
        values = sample_map(level_map, points[start:stop].reshape(1, -1, 2), (hp, wp))  # 1, n*P*P, 1
        out[start:stop] += weight * values.view(stop - start, -1)
    patches = torch.empty_like(out)
    patches[order] = out
    return patches.view(n, 1, patch_size, patch_size)


# --------------------------------------------------------------------------------------------------- network
class PatchResidualNet(nn.Module):
    """h (:class:`PatchNet`) with its patch geometry, and the fusion weights (a, b) with g.

    Config (:attr:`default_conf`): see the comments per key. ``fusion`` is a buffer (2,) = (a, b), not trained by
    gradient: it is fitted on the selection split, and travels with the weights.
    """

    default_conf = {
        "patch": {
            "size": 32,  # P: samples per side of a patch (multiple of 8)
            "window": SIFT_SUPPORT,  # patch side in OpenCV keypoint sizes (7.5: SIFT's descriptor support)
            "levels": 6,  # Gaussian pyramid levels (the coarsest has pixels 32 px wide)
        },
        "channels": [16, 32, 64, 128],  # PatchNet stage widths
        "h_dim": 128,  # h's descriptor dimension
        "g_dim": 128,  # g's descriptor dimension (RootSIFT: 128)
        # learned keypoint selection among all of g's detections (featlab.nn.selector): its hidden width; 0: none
        # (g's own top-k). configs/residual-v2.yaml: 64
        "selector_hidden": 0,
    }

    def __init__(self, conf=None):
        super().__init__()
        self.conf = conf = resolve_conf(self.default_conf, conf, "model")
        if float(conf.patch.window) <= 0 or int(conf.patch.levels) < 1:
            raise ConfigError(f"model.patch.window must be > 0 and model.patch.levels >= 1, got "
                              f"{conf.patch.window}, {conf.patch.levels}")
        try:
            self.h = PatchNet(conf.channels, int(conf.h_dim), int(conf.patch.size))
        except ValueError as e:
            raise ConfigError(f"model: {e}") from None
        if int(conf.selector_hidden) < 0:
            raise ConfigError(f"model.selector_hidden must be >= 0, got {conf.selector_hidden}")
        self.selector = KeypointSelector(int(conf.g_dim), int(conf.selector_hidden)) if conf.selector_hidden else None
        # (a, b): b = 0 until fitted, so an unfitted model matches exactly as g does
        self.register_buffer("fusion", torch.tensor([1.0, 0.0]))

    @property
    def out_dim(self) -> int:
        return int(self.conf.g_dim) + int(self.conf.h_dim)

    def set_fusion(self, a: float, b: float) -> None:
        if a < 0 or b < 0 or a + b <= 0:
            raise ValueError(f"fusion weights must be >= 0 and not both 0, got a={a}, b={b}")
        self.fusion.copy_(torch.tensor([float(a), float(b)]))

    def patches(self, gray: torch.Tensor, keypoints: torch.Tensor, sizes: torch.Tensor,
                angles: torch.Tensor) -> torch.Tensor:
        """:func:`extract_patches` with this model's geometry; gray (1, 1, H, W) -> (N, 1, P, P)."""
        p = self.conf.patch
        return extract_patches(gray, keypoints, sizes, angles, int(p.size), float(p.window), int(p.levels))

    def fuse(self, g_descriptors: torch.Tensor, h_descriptors: torch.Tensor) -> torch.Tensor:
        """(..., g_dim) and (..., h_dim) unit rows -> (..., g_dim + h_dim) L2-normalised ``[a g, b h]``."""
        a, b = self.fusion.to(g_descriptors.device, torch.float32)
        return F.normalize(torch.cat([a * g_descriptors.float(), b * h_descriptors.float()], -1), dim=-1)

    def forward(self, patches: torch.Tensor, g_descriptors: torch.Tensor) -> torch.Tensor:
        """patches (N, 1, P, P), g_descriptors (N, g_dim) -> fused descriptors (N, g_dim + h_dim)."""
        return self.fuse(g_descriptors, self.h(patches))


def save_patch_residual_weights(net: PatchResidualNet, path: str | Path, handcrafted: dict,
                                extra: dict | None = None) -> Path:
    """Weights (safetensors) + sidecar: ``format``, ``model`` (config), ``handcrafted`` ({name, conf}), extras."""
    return save_weights(net, path, {"format": FORMAT, "model": to_container(net.conf), "handcrafted": handcrafted,
                                    "fusion": [float(v) for v in net.fusion], **(extra or {})})


def load_patch_residual_weights(path: str | Path) -> tuple[PatchResidualNet, dict]:
    """-> (network in eval mode, sidecar dict). Raises InputError on a missing, corrupt or mismatched file."""
    state, meta = load_weights(path, FORMAT, "patch-residual weights",
                               missing_hint=f"train them with `{TRAIN_HINT}`")
    return load_state_strict(PatchResidualNet(meta["model"]), state, path), meta


# ------------------------------------------------------------------------------------------------- extractor
@register_extractor("residual-sift", preset={"weights": "residual-sift"},
                    summary="SIFT detections re-ranked by a learned selector; RootSIFT + learned oriented-patch "
                            "descriptor (fitted fusion; the shipped fit gives h weight 0: 128-d RootSIFT) "
                            "(weights featlab/weights/residual-sift.safetensors)")
class PatchResidualDescriptor(Extractor):
    """g's keypoints; descriptor = normalise([a g, b h(oriented patch)]) (module docstring)."""

    model_name = "residual-sift"  # in error messages; subclasses with other shipped weights set their own
    train_hint = TRAIN_HINT
    default_conf = {
        "handcrafted": "rootsift",  # g: must be the one the weights were trained with (sidecar)
        "handcrafted_conf": none_or(dict),  # overrides of g's config (default: the config it was trained with)
        "weights": none_or(str, Path),  # .safetensors path, or the name of a file in featlab/weights/
        "channels_last": True,  # channels_last for h's convolutions (measured faster in float32 on CPU)
        # weights with a keypoint selector: g's detections it ranks (-1: all; n: g's n best by response first)
        "candidates": -1,
    }

    def _init(self, conf):
        if not conf.weights:
            raise ConfigError(f"{self.model_name} needs a 'weights' file (e.g. weights=run/best.safetensors)")
        path = resolve_weights_path(conf.weights, WEIGHTS_DIR)
        if not path.is_file():
            raise InputError(f"{self.model_name} weights not found: {path}"
                             + (f"; train them with `{self.train_hint}`" if path.parent == WEIGHTS_DIR else ""))
        self.weights_path = path
        net, meta = load_patch_residual_weights(path)
        self.g = build_trained_g(meta, path, conf, net.conf.g_dim)
        if net.selector is not None:  # g gives its candidates, the selector keeps max_keypoints of them
            self.g = build_extractor(self.g.name, {**to_container(self.g.conf),
                                                   "max_keypoints": int(conf.candidates)})
        net.h = fold_batchnorm(net.h)  # inference only
        for p in net.parameters():
            p.requires_grad_(False)
        net.h.set_channels_last(bool(conf.channels_last))
        self.net = net.eval()
        self.meta = meta

    @property
    def uses_h(self) -> bool:
        """False when the fitted fusion gives h no weight (b = 0): the descriptor is then g's, exactly, and h is not
        computed (the fused vector would be [g, 0]: the same distances, twice the size, h's time for nothing)."""
        return float(self.net.fusion[1]) > 0

    @property
    def descriptor_dim(self) -> int:
        return self.net.out_dim if self.uses_h else int(self.net.conf.g_dim)

    @torch.no_grad()
    def _forward(self, data):
        image = data["image"]
        pred = dict(self.g({"image": image}))
        if "scales" not in pred or "oris" not in pred:
            raise ConfigError(f"handcrafted {self.conf.handcrafted!r} gives no keypoint scales and orientations")
        gray = rgb_to_gray(image.float())
        masks = pred.get("keypoint_masks")
        use_bf16 = self.conf.dtype == "bfloat16"
        items = []
        for i in range(image.shape[0]):
            k = int(masks[i].sum()) if masks is not None else pred["keypoints"].shape[1]  # padding comes last
            item = {key: pred[key][i, :k] for key in ("keypoints", "keypoint_scores", "descriptors", "scales",
                                                      "oris")}
            if self.net.selector is not None:
                item = select_keypoints(self.net.selector, item, (image.shape[-1], image.shape[-2]),
                                        int(self.conf.max_keypoints))
            desc = item["descriptors"].new_zeros((len(item["keypoints"]), self.descriptor_dim), dtype=torch.float32)
            if not self.uses_h:
                desc = item["descriptors"].float()
            elif len(desc):
                patches = self.net.patches(gray[i:i + 1], item["keypoints"], item["scales"], item["oris"])
                with torch.autocast(device_type=image.device.type, dtype=torch.bfloat16, enabled=use_bf16):
                    h_desc = self.net.h(patches)
                desc = self.net.fuse(item["descriptors"], h_desc)
            items.append({**item, "descriptors": desc})
        return stack_padded(items)


def select_keypoints(selector: KeypointSelector, item: dict, image_size, k: int) -> dict:
    """Keep the ``k`` best of one image's detections by the selector's rank (all if k < 0), sorted.

    Args:
        item: g's prediction for one image: keypoints (N, 2), keypoint_scores (N,) responses, descriptors (N, D),
            scales (N,), oris (N,).
        image_size: (W, H).
    Returns:
        the same keys restricted and re-ordered; keypoint_scores become the rank (learned logit + log response).
    """
    if len(item["keypoints"]) == 0:
        return dict(item)
    feats = selector_features(item["keypoints"], item["keypoint_scores"], item["scales"], item["descriptors"],
                              image_size)
    rank = selector.rank(feats)
    order = torch.argsort(rank, descending=True, stable=True)
    if k is not None and k >= 0:
        order = order[:k]
    return {**{key: v[order] for key, v in item.items()}, "keypoint_scores": rank[order]}


def fused_squared_distances(g_dist2: torch.Tensor, h_dist2: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """Squared distance of fused descriptors from those of the parts (unit rows):
    ``(a^2 d_g^2 + b^2 d_h^2) / (a^2 + b^2)``. Shapes broadcast."""
    return (a * a * g_dist2 + b * b * h_dist2) / (a * a + b * b)


def fusion_from_angle(phi: float) -> tuple[float, float]:
    """(a, b) = (cos phi, sin phi): one parameter spans every ratio b / a from 0 (g alone) to inf (h alone)."""
    return math.cos(phi), math.sin(phi)


__all__ = ["PatchResidualNet", "PatchResidualDescriptor", "gaussian_pyramid", "patch_sample_points",
           "extract_patches", "save_patch_residual_weights", "load_patch_residual_weights",
           "fused_squared_distances", "fusion_from_angle", "select_keypoints", "SIFT_SUPPORT"]
