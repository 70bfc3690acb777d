"""Extractor interface and featlab's data contract.

The data contract (used by every extractor, matcher, dataset, loss and benchmark)
---------------------------------------------------------------------------------
Data flows as dicts of batched tensors; names are plural nouns.

Single view:
    image            float32 (B, C, H, W) in [0, 1]; C = 3 (RGB) or 1 (gray). Extractors accept both.
    keypoints        float32 (B, N, 2) as (x, y) in featlab pixels (centre of the top-left pixel at (0.5, 0.5),
                     see :mod:`featlab.pixels`), in the coordinates of the image that was passed in.
    keypoint_scores  float32 (B, N), larger is better; keypoints are sorted by decreasing score.
    descriptors      float32 (B, N, D), L2-normalised, one row per keypoint (never (B, D, N)).
                     Binary extractors (``descriptor_type == "binary"``) return uint8 (B, N, D/8) packed bits.
    keypoint_masks   bool (B, N), only present when B > 1 and images have different keypoint counts: padded
                     entries are False (and zero).
    image_size       int64 (B, 2) as (W, H) of the image the keypoints refer to.

Two views: the same keys with suffix ``0`` / ``1`` (``keypoints0``, ``descriptors1``...), plus
    matches0          int64 (B, N0): index into keypoints1, -1 for unmatched.
    matching_scores0  float32 (B, N0).
Geometry: ``T_0to1`` float (B, 4, 4) world-free relative pose (x1 = R x0 + t in camera frames), ``H_0to1``
(B, 3, 3) homography in featlab pixels, intrinsics ``K0``/``K1`` (B, 3, 3) in featlab pixels, ``depth0``
(B, H, W) metres (0 = invalid).

Depth input (extractors that declare ``inputs = "depth"``; the default is ``inputs = "image"``):
    depth            float32 (B, 1, H, W) z-depth in metres, 0 = invalid (read by :func:`featlab.io.depth.read_depth`
                     from 16-bit PNGs, never through 8 bits).
    intrinsics       float32 (B, 3, 3) K of the depth map in featlab pixels.
A depth extractor's ``_forward(data)`` reads these two keys (there is no ``image``) and returns the usual keys:
``keypoints`` in featlab pixels of the depth map, ``keypoint_scores``, ``descriptors``; ``image_size`` is the depth
map's (W, H). :func:`extract_depth` runs one on a numpy depth map and K (resizing with nearest sampling and scaling
K), as :func:`extract_image` does for images.

Extractors are ``torch.nn.Module`` s with a ``default_conf`` (merged with the user's section by
:func:`featlab.conf.resolve_conf`, unknown keys rejected), ``_init(conf)`` and ``_forward(data)``. They are built
by name through :func:`build_extractor`; :func:`extract_image` runs one on a numpy image with resizing and maps
keypoints back to the original image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..conf import checked, none_or, resolve_conf, to_container
from ..errors import ConfigError
from ..io.image import image_to_tensor, resize_image
from ..io.weights import file_sha256, sidecar_path
from ..pixels import scale_points

#: keys every extractor understands, merged under the extractor's own defaults
COMMON_CONF = {
    "max_keypoints": checked(2048, ge=1, also=(-1,)),  # keep the top-k keypoints by score; -1 keeps all
    # None: native size; int: longest side; [H, W]: exact size (used by extract_image)
    "resize": checked(none_or(int, list), ge=1),
    "dtype": checked("float32", choices=("float32", "bfloat16")),  # autocast for learned networks on CPU
    "channels_last": False,  # channels_last memory format for convnets (faster on CPU with bf16)
}


class Extractor(nn.Module):
    """Base class. Subclasses set ``default_conf`` and implement ``_init`` and ``_forward``."""

    default_conf: dict = {}
    #: 'float' (L2-normalised float vectors) or 'binary' (packed uint8 bits, Hamming distance)
    descriptor_type: str = "float"
    #: True when the extractor uses colour; every extractor accepts gray or RGB input and converts itself
    needs_rgb: bool = False
    #: 'image' (``data["image"]``) or 'depth' (``data["depth"]`` and ``data["intrinsics"]``): see the module docstring
    inputs: str = "image"
    name: str = "extractor"

    def __init__(self, conf: dict | None = None):
        super().__init__()
        defaults = {**COMMON_CONF, **self.default_conf}
        self.conf = resolve_conf(defaults, conf, type(self).__name__.lower())
        self._init(self.conf)

    def _init(self, conf):  # pragma: no cover - interface
        raise NotImplementedError

    def _forward(self, data: dict) -> dict:  # pragma: no cover - interface
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        p = next(self.parameters(), None)
        if p is None:
            b = next(self.buffers(), None)
            return b.device if b is not None else torch.device("cpu")
        return p.device

    def forward(self, data: dict) -> dict:
        """Args: data with ``image`` (B, C, H, W) float in [0, 1]; for ``inputs = "depth"``, ``depth``
        (B, 1, H, W) metres and ``intrinsics`` (B, 3, 3) instead.

        Returns: ``keypoints`` (B, N, 2), ``keypoint_scores`` (B, N), ``descriptors`` (B, N, D) and
        ``image_size`` (B, 2); see the module docstring.
        """
        if self.inputs == "depth":
            image = data["depth"]
            if image.ndim != 4 or image.shape[1] != 1:
                raise ValueError(f"depth must be (B, 1, H, W), got {tuple(image.shape)}")
            K = data["intrinsics"]
            if K.shape != (image.shape[0], 3, 3):
                raise ValueError(f"intrinsics must be (B, 3, 3) for B = {image.shape[0]}, got {tuple(K.shape)}")
        else:
            image = data["image"]
            if image.ndim != 4 or image.shape[1] not in (1, 3):
                raise ValueError(f"image must be (B, 1|3, H, W), got {tuple(image.shape)}")
        pred = self._forward(data)
        b, _, h, w = image.shape
        pred.setdefault("image_size", torch.tensor([[w, h]] * b, dtype=torch.int64, device=image.device))
        return pred

    @property
    def descriptor_dim(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def weights_files(self) -> list[Path]:
        """Files this extractor's own network was read from (``weights_path`` and its JSON sidecar, when they
        exist); not those of extractors inside it. Their content identifies the weights
        (:func:`extractor_identity`)."""
        path = getattr(self, "weights_path", None)
        if path is None:
            return []
        side = sidecar_path(path)
        return [Path(path)] + ([side] if side.is_file() else [])


def extractor_identity(extractor: Extractor) -> dict:
    """What decides an extractor's outputs, for cache keys and resume records: its class, descriptor type and full
    resolved config, the SHA-256 of every weights file it read (content, not name: weights re-exported under the
    same name get another identity), and the same for each extractor inside it (``parts``: a residual
    descriptor's ``g``, CAPS' ``detector``).

    Returns:
        JSON-serialisable dict: ``class``, ``descriptor_type``, ``conf``, and when present ``weights_sha256``
        ({file name: hex digest}) and ``parts`` ({attribute: identity}).
    """
    ident = {"class": type(extractor).__name__, "descriptor_type": extractor.descriptor_type,
             "conf": to_container(extractor.conf)}
    files = extractor.weights_files()
    if files:
        ident["weights_sha256"] = {f.name: file_sha256(f) for f in files}
    parts = {name: extractor_identity(m) for name, m in extractor.named_children() if isinstance(m, Extractor)}
    if parts:
        ident["parts"] = parts
    return ident


def top_k_keypoints(keypoints: torch.Tensor, scores: torch.Tensor, *others: torch.Tensor, k: int):
    """Keep the k best by score (all if k < 0), sorted by decreasing score, ties in input order (stable).
    Shapes (N, 2), (N,), (N, ...)."""
    order = torch.argsort(scores, descending=True, stable=True)
    if k is not None and k >= 0:
        order = order[:k]
    return (keypoints[order], scores[order], *[o[order] for o in others])


def stack_padded(items: list[dict]) -> dict:
    """Stack per-image predictions {key: (N_i, ...)} into a batch, zero-padding to the largest N.

    Adds ``keypoint_masks`` (B, N) when the counts differ.
    """
    counts = [len(it["keypoints"]) for it in items]
    n = max(counts) if counts else 0
    out = {}
    for key in items[0]:
        rows = []
        for it in items:
            v = it[key]
            pad = n - v.shape[0]
            if pad:
                v = torch.cat([v, v.new_zeros((pad, *v.shape[1:]))], 0)
            rows.append(v)
        out[key] = torch.stack(rows, 0)
    if len(set(counts)) > 1:
        mask = torch.zeros(len(items), n, dtype=torch.bool)
        for i, c in enumerate(counts):
            mask[i, :c] = True
        out["keypoint_masks"] = mask
    return out


# --------------------------------------------------------------------------------------------- registry
_REGISTRY: dict[str, tuple[Callable[..., Extractor], dict, str]] = {}


def register_extractor(name: str, preset: dict | None = None, summary: str = ""):
    """Class decorator: register ``cls`` under ``name`` with a preset config (variants share a class)."""

    def deco(cls):
        _REGISTRY[name] = (cls, dict(preset or {}), summary or (cls.__doc__ or "").strip().split("\n")[0])
        return cls

    return deco


def add_extractor(name: str, factory: Callable[..., Extractor], preset: dict | None = None, summary: str = ""):
    """Register a factory (not a class) under ``name``."""
    _REGISTRY[name] = (factory, dict(preset or {}), summary)


def _load_builtin():
    # import for the side effect of registration; kept lazy so `import featlab` stays fast
    import importlib.util
    from . import handcrafted  # noqa: F401
    for mod in ("baselines", "depth_baselines", "depthkp", "surf", "residual", "patch_residual", "pose_sift", "caps",
                "scfeat"):
        if importlib.util.find_spec(f"{__package__}.{mod}") is not None:
            importlib.import_module(f"{__package__}.{mod}")


def available_extractors() -> dict[str, str]:
    _load_builtin()
    return {k: v[2] for k, v in sorted(_REGISTRY.items())}


def build_extractor(name: str, conf: dict | None = None) -> Extractor:
    """Build a registered extractor; ``conf`` overrides its preset. Unknown names/keys raise ConfigError."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown extractor '{name}'; available: {', '.join(sorted(_REGISTRY))}")
    factory, preset, _ = _REGISTRY[name]
    merged = {**preset, **(to_container(conf) or {})}
    ext = factory(merged)
    ext.name = name
    return ext.eval()


@torch.no_grad()
def extract_image(extractor: Extractor, image: np.ndarray, resize: Any = "conf") -> dict[str, np.ndarray]:
    """Run an extractor on one RGB uint8 image (H, W, 3); keypoints come back in the original image's pixels.

    Args:
        resize: 'conf' uses ``extractor.conf.resize``; otherwise None / int / (H, W) as in
            :func:`featlab.io.image.resize_image`.
    Returns:
        numpy dict: keypoints (N, 2), keypoint_scores (N,), descriptors (N, D), image_size (2,) as (W, H) of the
        original image.
    """
    if extractor.inputs != "image":
        raise ConfigError(f"extractor '{extractor.name}' takes {extractor.inputs} maps, not images (extract_depth)")
    if resize == "conf":
        resize = extractor.conf.resize
        resize = to_container(resize)
    small, scale = resize_image(image, resize)
    t = image_to_tensor(small).to(extractor.device)
    pred = extractor({"image": t})
    kpts = scale_points(pred["keypoints"][0].float(), scale)
    h, w = image.shape[:2]
    return {
        "keypoints": kpts.cpu().numpy().astype(np.float32),
        "keypoint_scores": pred["keypoint_scores"][0].float().cpu().numpy(),
        "descriptors": pred["descriptors"][0].cpu().numpy() if extractor.descriptor_type == "binary"
        else pred["descriptors"][0].float().cpu().numpy(),
        "image_size": np.array([w, h], dtype=np.int64),
    }


@torch.no_grad()
def extract_depth(extractor: Extractor, depth: np.ndarray, K: np.ndarray,
                  resize: Any = "conf") -> dict[str, np.ndarray]:
    """Run a depth extractor (``inputs = "depth"``) on one depth map; keypoints come back in its original pixels.

    Args:
        depth: (H, W) float32 metres, 0 = invalid (:func:`featlab.io.depth.read_depth`).
        K: (3, 3) intrinsics of ``depth`` in featlab pixels.
        resize: 'conf' uses ``extractor.conf.resize``; otherwise None / int / (H, W) as in
            :func:`featlab.io.depth.resize_depth` (nearest sampling; K scaled to the resized map).
    Returns:
        numpy dict as :func:`extract_image`: keypoints (N, 2), keypoint_scores (N,), descriptors (N, D),
        image_size (2,) as (W, H) of the original depth map.
    Raises:
        ConfigError: the extractor takes images; InputError: depth is not a 2-D map or K not (3, 3).
    """
    from ..errors import InputError
    from ..io.depth import resize_depth

    if extractor.inputs != "depth":
        raise ConfigError(f"extractor '{extractor.name}' takes images, not depth maps (extract_image)")
    depth = np.asarray(depth, dtype=np.float32)
    K = np.asarray(K, dtype=np.float64)
    if depth.ndim != 2 or K.shape != (3, 3):
        raise InputError(f"extract_depth needs a (H, W) depth map and a (3, 3) K, got {depth.shape} and {K.shape}")
    if resize == "conf":
        resize = to_container(extractor.conf.resize)
    small, scale = resize_depth(depth, resize)
    K_small = np.diag([1.0 / scale[0], 1.0 / scale[1], 1.0]) @ K  # exact in featlab pixels (both span [0, W])
    dev = extractor.device
    pred = extractor({"depth": torch.from_numpy(np.ascontiguousarray(small))[None, None].to(dev),
                      "intrinsics": torch.from_numpy(K_small).float()[None].to(dev)})
    kpts = scale_points(pred["keypoints"][0].float(), scale)
    h, w = depth.shape
    return {
        "keypoints": kpts.cpu().numpy().astype(np.float32),
        "keypoint_scores": pred["keypoint_scores"][0].float().cpu().numpy(),
        "descriptors": pred["descriptors"][0].cpu().numpy() if extractor.descriptor_type == "binary"
        else pred["descriptors"][0].float().cpu().numpy(),
        "image_size": np.array([w, h], dtype=np.int64),
    }
