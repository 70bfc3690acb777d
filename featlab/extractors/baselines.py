"""Learned comparison baselines through kornia 0.9: DISK, ALIKED and XFeat, with weights from local files.

kornia's ``from_pretrained`` downloads its weights, which fails offline; here each network is built from kornia's
architecture and loaded from a file (conf key ``weights``; by default the file under
``<repository>/../shared/data/weights/<name>/``). A missing file raises :class:`~featlab.errors.InputError` naming
the file and the ``weights`` key.

Pixel convention. kornia's frame puts the centre of the top-left pixel at (0, 0), as OpenCV: DISK and XFeat
return the integer (column, row) indices of heatmap maxima, ALIKED the index of a maximum plus a soft-argmax
residual (normalised with (W - 1, H - 1) and mapped back). Keypoints are converted once, here, with
:func:`featlab.pixels.from_opencv` (+0.5); the tests check featlab's keypoints against kornia's own output + 0.5.
The networks are translation-equivariant (ALIKED on a crop shifted by (7, 5) px: median residual < 0.01 px) but
not mirror-equivariant: on three photos and their mirror images, half the median of ``x + x_mirror - W`` is about
-1 px in y for DISK, +0.5 px in x for XFeat and +1 px in x and y for ALIKED (the spread is +-2 px). Those are the
networks' own position biases relative to the image content, not a convention error, and are left as they are.

Speed: ``dtype: bfloat16`` only pays off on hardware with native bf16 (AVX512-BF16/AMX CPUs, GPUs). On an
AVX2-only CPU it made all three slower at 240x320 (XFeat ~10x, ALIKED 1.3-2x, DISK ~8x with channels_last and
~100x without); ``channels_last`` alone was neutral to ~1.5x faster.

Sizes. DISK needs multiples of 16: the image is zero-padded at the bottom and right (as kornia's
``pad_if_not_divisible``) and the maps are cropped back before detection, so no keypoint lies in the padding and
no coordinate moves. ALIKED pads internally (replicate, around the centre) and crops its maps back. XFeat needs
multiples of 32 and kornia's wrapper *resizes* to the multiple below (and then reports resized pixel ``i`` at
``i * W / W'`` rather than at its centre ``(i + 0.5) * W / W' - 0.5``); here the image is instead replicate-padded
at the bottom and right to the multiple above, the network runs on that, and maxima in the padding are dropped,
so keypoints stay on the image's own pixel grid.

Precision. With ``dtype: bfloat16`` only the dense network runs under ``torch.autocast(bfloat16)``; its maps are
cast to float32 before detection and sparse sampling, because grid coordinates in bfloat16 are off by up to
~1 px at 640 px (kornia samples half-precision maps with half-precision grids). Outputs are always float32.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
import torch.nn.functional as F

from ..conf import checked, none_or
from ..errors import ConfigError, InputError
from ..pixels import from_opencv
from .base import Extractor, register_extractor, stack_padded, top_k_keypoints

#: ``<repository>/../shared/data/weights``: the shared data folder beside the repository
WEIGHTS_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "weights"

ALIKED_VARIANTS = ("aliked-t16", "aliked-n16", "aliked-n16rot", "aliked-n32")


def default_weights_path(name: str, variant: str | None = None) -> Path:
    """Default weights file of a baseline (``disk``, ``aliked`` with its variant, ``xfeat``)."""
    if name == "disk":
        return WEIGHTS_DIR / "disk" / "disk-depth-save.pth"
    if name == "aliked":
        return WEIGHTS_DIR / "aliked" / f"{variant or 'aliked-n16'}.pth"
    if name == "xfeat":
        return WEIGHTS_DIR / "xfeat" / "xfeat.pt"
    raise ConfigError(f"no default weights for '{name}'")


def load_weights_file(path: str | Path, what: str) -> dict:
    """Read a PyTorch state-dict file on the CPU (tensors only, no pickled code).

    Raises:
        InputError: the file is missing or unreadable; the message names the file and the ``weights`` key.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(f"{what} weights file not found: {path} (set the extractor config key "
                         f"'weights' to the file's path, e.g. weights=/path/to/{path.name})")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds of errors for bad files
        raise InputError(f"cannot read {what} weights file {path}: {e}") from None


def _load_state(module: torch.nn.Module, state: dict, path: Path, what: str, allowed_missing=()) -> None:
    """load_state_dict non-strictly, then fail unless only ``allowed_missing`` keys are absent."""
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatch: the file is for another architecture / variant
        raise InputError(f"{what} weights file {path} does not fit the network: {str(e).splitlines()[0]}") \
            from None
    missing = [k for k in result.missing_keys if k not in allowed_missing]
    if missing or result.unexpected_keys:
        raise InputError(f"{what} weights file {path} does not fit the network: missing {missing[:5]}, "
                         f"unexpected {list(result.unexpected_keys)[:5]}")


def _pad_bottom_right(image: torch.Tensor, multiple: int, mode: str, minimum: int = 0) -> torch.Tensor:
    """Pad (B, C, H, W) at the bottom and right to the next multiple (at least ``minimum``); coordinates of the
    original pixels do not change."""
    h, w = image.shape[-2:]
    ht = max(minimum, -(-h // multiple) * multiple)
    wt = max(minimum, -(-w // multiple) * multiple)
    if (ht, wt) == (h, w):
        return image
    if mode == "constant":
        return F.pad(image, (0, wt - w, 0, ht - h), value=0.0)
    return F.pad(image, (0, wt - w, 0, ht - h), mode=mode)


class _KorniaBaseline(Extractor):
    """Shared plumbing: weights path, dtype/channels_last, RGB handling. Subclasses build ``self.net``."""

    needs_rgb = True
    kind = ""  # 'disk' | 'aliked' | 'xfeat': registry name and weights sub-folder
    label = ""  # name in messages

    def _init(self, conf):
        self.net = self._build(conf)
        path = Path(conf.weights).expanduser() if conf.weights else self._default_weights(conf)
        self.weights_path = path
        self._load(load_weights_file(path, self.label), path)
        self.net.eval()
        if conf.channels_last:
            self.net.to(memory_format=torch.channels_last)

    def _default_weights(self, conf) -> Path:
        return default_weights_path(self.kind)

    def _network_input(self, image: torch.Tensor) -> torch.Tensor:
        x = image.float()
        if self.needs_rgb and x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.conf.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        else:
            x = x.contiguous()
        return x

    def _autocast(self, device: torch.device):
        if self.conf.dtype == "bfloat16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()


@register_extractor("disk", summary="DISK (kornia), 128-d, weights from shared/data/weights/disk")
class DISK(_KorniaBaseline):
    """DISK (Tyszkiewicz et al., NeurIPS 2020) through ``kornia.feature.DISK``, RGB input, 128-d descriptors."""

    kind = "disk"
    label = "DISK"
    default_conf = {
        "weights": none_or(str, Path),  # state-dict file; None: ../shared/data/weights/disk/disk-depth-save.pth
        "detection_threshold": 0.0,  # keep heatmap maxima whose logit is strictly above this
        "nms_window": checked(5, ge=1),  # side of the non-maximum-suppression window (px)
    }

    def _build(self, conf):
        from kornia.feature import DISK as KorniaDISK

        return KorniaDISK(desc_dim=128)

    def _load(self, state, path):
        if not isinstance(state, dict) or "extractor" not in state:
            raise InputError(f"DISK weights file {path} has no 'extractor' entry (keys: {list(state)[:5]})")
        _load_state(self.net, state["extractor"], path, "DISK")

    @property
    def descriptor_dim(self) -> int:
        return 128

    @torch.no_grad()
    def _forward(self, data):
        from kornia.feature.disk.detector import heatmap_to_keypoints

        image = data["image"]
        h, w = image.shape[-2:]
        x = _pad_bottom_right(self._network_input(image), 16, "constant")
        with self._autocast(image.device):
            heatmaps, dense = self.net.heatmap_and_dense_descriptors(x)
        heatmaps = heatmaps[..., :h, :w].float()
        dense = dense[..., :h, :w].float()
        k = self.conf.max_keypoints
        detections = heatmap_to_keypoints(heatmaps, n=k if k is not None and k >= 0 else None,
                                          window_size=self.conf.nms_window,
                                          score_threshold=self.conf.detection_threshold)
        items = []
        for b, det in enumerate(detections):
            feats = det.merge_with_descriptors(dense[b])  # integer (x, y) pixel indices, unit descriptors
            kp, sc, de = top_k_keypoints(from_opencv(feats.keypoints.float()), feats.detection_scores.float(),
                                         feats.descriptors.float(), k=k)
            items.append({"keypoints": kp, "keypoint_scores": sc, "descriptors": F.normalize(de, dim=-1)})
        return stack_padded(items)


@register_extractor("aliked", summary="ALIKED (kornia), variant by conf, weights from shared/data/weights/aliked")
class ALIKED(_KorniaBaseline):
    """ALIKED (Zhao et al., TIM 2023) through ``kornia.feature.ALIKED``, RGB input, 128-d (t16: 64-d)."""

    kind = "aliked"
    label = "ALIKED"
    default_conf = {
        "model_name": checked("aliked-n16", choices=ALIKED_VARIANTS),  # ALIKED_VARIANTS
        "weights": none_or(str, Path),  # state-dict file; None: ../shared/data/weights/aliked/<model_name>.pth
        "detection_threshold": 0.2,  # > 0: keep maxima above it (at most max_keypoints); <= 0: top-k mode
        "nms_radius": checked(2, ge=0),  # NMS window is 2 * nms_radius + 1
    }

    def _build(self, conf):
        from kornia.feature import ALIKED as KorniaALIKED

        k = conf.max_keypoints if conf.max_keypoints is not None else -1
        return KorniaALIKED(model_name=conf.model_name, max_num_keypoints=k,
                            detection_threshold=conf.detection_threshold, nms_radius=conf.nms_radius)

    def _default_weights(self, conf) -> Path:
        return default_weights_path("aliked", conf.model_name)

    def _load(self, state, path):
        # the released files lack DKD's fixed soft-argmax grid (a buffer kornia builds itself): nothing else
        _load_state(self.net, state, path, "ALIKED", allowed_missing=("dkd.hw_grid",))

    @property
    def descriptor_dim(self) -> int:
        return 64 if self.conf.model_name == "aliked-t16" else 128

    @torch.no_grad()
    def _forward(self, data):
        image = data["image"]
        h, w = image.shape[-2:]
        x = self._network_input(image)
        with self._autocast(image.device):
            feature_map, score_map = self.net.extract_dense_map(x)  # pads to /32 internally and crops back
        feature_map = feature_map.float().contiguous()
        score_map = score_map.float().contiguous()
        keypoints, scores, _ = self.net.dkd(score_map)  # normalised to [-1, 1] via (W - 1, H - 1)
        descriptors, _ = self.net.desc_head(feature_map, keypoints)
        wh = score_map.new_tensor([w - 1, h - 1])
        items = []
        for kpn, sc, de in zip(keypoints, scores, descriptors):
            kp = from_opencv((kpn.float() + 1) / 2 * wh)
            kp, sc, de = top_k_keypoints(kp, sc.float(), de.float(), k=self.conf.max_keypoints)
            items.append({"keypoints": kp, "keypoint_scores": sc, "descriptors": F.normalize(de, dim=-1)})
        return stack_padded(items)


@register_extractor("xfeat", summary="XFeat sparse (kornia), 64-d, weights from shared/data/weights/xfeat")
class XFeat(_KorniaBaseline):
    """XFeat (Potje et al., CVPR 2024) sparse keypoints through ``kornia.feature.XFeat``, 64-d descriptors.

    The network averages the colour channels itself, so gray and RGB input are both used as given.
    """

    kind = "xfeat"
    label = "XFeat"
    needs_rgb = False
    default_conf = {
        "weights": none_or(str, Path),  # state-dict file; None: ../shared/data/weights/xfeat/xfeat.pt
        "detection_threshold": 0.05,  # keep keypoint-heatmap maxima strictly above this
        "nms_window": checked(5, ge=1),  # side of the non-maximum-suppression window (px)
    }

    def _build(self, conf):
        from kornia.feature import XFeat as KorniaXFeat

        return KorniaXFeat(top_k=4096, detection_threshold=conf.detection_threshold)

    def _load(self, state, path):
        _load_state(self.net.net, state, path, "XFeat")

    @property
    def descriptor_dim(self) -> int:
        return 64

    @torch.no_grad()
    def _forward(self, data):
        from kornia.geometry.subpix import nms2d

        image = data["image"]
        h, w = image.shape[-2:]
        x = _pad_bottom_right(self._network_input(image), 32, "replicate", minimum=32)
        hp, wp = x.shape[-2:]
        with self._autocast(image.device):
            dense, logits, reliability = self.net.net(x)
        dense = F.normalize(dense.float(), dim=1)
        logits, reliability = logits.float(), reliability.float()
        heatmap = self.net._get_kpts_heatmap(logits)  # (B, 1, Hp, Wp), pixel (x, y) of the padded image
        win = self.conf.nms_window
        peaks = nms2d(heatmap, (win, win), mask_only=True) & (heatmap > self.conf.detection_threshold)
        peaks[..., h:, :] = False  # maxima in the padding
        peaks[..., :, w:] = False
        items = []
        for b in range(x.shape[0]):
            pos = peaks[b, 0].nonzero().flip(-1)[None]  # (1, N, 2) integer (x, y)
            # the reference's sampling conventions, which the pretrained weights expect (see kornia's XFeat)
            sc = (self.net._nearest(heatmap[b:b + 1], pos, hp, wp)
                  * self.net._bilinear(reliability[b:b + 1], pos, hp, wp))[0, :, 0]
            keep = sc > 0
            pos, sc = pos[:, keep], sc[keep]
            order = torch.argsort(sc, descending=True)
            k = self.conf.max_keypoints
            if k is not None and k >= 0:
                order = order[:k]
            pos, sc = pos[:, order], sc[order]
            if pos.shape[1]:
                de = F.normalize(self.net.interpolator(dense[b:b + 1], pos, hp, wp)[0], dim=-1)
            else:
                de = dense.new_zeros((0, dense.shape[1]))
            items.append({"keypoints": from_opencv(pos[0].float()), "keypoint_scores": sc,
                          "descriptors": de})
        return stack_padded(items)
