"""SCFeat networks: the F2R description network, the coupling bridge and the peakiness-based detector.

Sun, Ji, Zhu, "Decoupling detection and description" (SCFeat), building on PoSFeat (Li et al., CVPR 2022); RECIPES
section 3. Channels shown for the reference's ResNet-50 (``model.depth: 50``, ``widths: [64, 128, 256]``, the
``scfeat-full`` config); featlab's CPU default (``scfeat``) is the same layout with a ResNet-18 encoder at half
width (``widths: [32, 64, 128]``, stem 32, decoder [64, 32]), trained from scratch.

    encoder   stem conv7x7 s2, maxpool, ResNet stages 1-3           x4 (H/4, 256), x8 (H/8, 512), x16 (H/16, 1024)
    decoder   d8 = conv3x3(concat(x8, conv3x3(up(x16))))            (H/8, 512)      conv3x3 + GroupNorm + ELU
              d4 = conv3x3(concat(x4, conv3x3(up(d8))))             (H/4, 256)
    fusion    1x1(d4) -> 128, 3x3(up(d8)) -> 128, 3x3(up(x16)) -> 128, concat 384, 1x1 -> 128   ``desc_map``
    bridge    local_map = (w1 PN(desc_map) + w2 CN(desc_map)) / (w1 + w2), w learnable, init 0.7 / 0.3
    detector  (see :class:`Detector`) on detach(local_map), detach(x4) and the image -> ``scores`` (H, W) >= 0

PN (per-pixel normalisation): standardise each pixel across channels, then scale and shift by 7x7 convs of the
channel-mean map. CN (channel normalisation): standardise each channel over the image (instance-norm style, no
affine, no running statistics).

Which map gives the descriptors: the reference trains its loss on ``local_map`` but extracts from ``desc_map``.
featlab samples descriptors from the map the loss trained (``local_map``) by default; ``model.extract_from: desc``
reproduces the reference (see :meth:`SCFeatNet.descriptor_map`).

All maps cover the input padded to a multiple of 16 (:func:`featlab.nn.resunet.map_extent`); the score map is
cropped back to the input size. Sample dense maps with ``featlab.pixels.sample_map(map, points, map_extent(H, W))``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import resolve_conf, to_container
from ..errors import ConfigError
from .resnet import LAYOUTS, ResNetEncoder, make_norm
from .resunet import _MEAN, _STD, map_extent

default_conf = {
    "depth": 18,  # ResNet encoder depth: 18 | 34 | 50 (the reference: 50, ImageNet-pretrained; featlab: scratch)
    "widths": [32, 64, 128],  # base planes of ResNet stages 1-3 (the reference: 64, 128, 256 with Bottleneck x4)
    "stem_width": 32,  # channels of the 7x7 stem conv (reference: 64)
    "decoder_widths": [64, 32],  # [H/8, H/4] decoder channels (reference: 512, 256 = the encoder's)
    "norm": "group",  # encoder normalisation: batch | group | none (group: batches of 2 pairs are too small
    # for batch statistics when training from scratch)
    "descriptor_dim": 128,  # channels of desc_map / local_map
    "bridge_weights": [0.7, 0.3],  # initial (PN, CN) weights of the coupling bridge (learnable)
    "bridge": True,  # false: local_map = L2-normalised desc_map (the PoSFeat ablation without the bridge)
    "extract_from": "local",  # local | desc: the map descriptors are sampled from at extraction
    # (local: the map the loss trains, featlab's choice; desc: the reference's extraction, a defect)
    "detector_width": 16,  # channels of the detector's blocks (reference: 64 at H/4, 16 for the image branch)
    "detector_blocks": 2,  # conv3x3 + InstanceNorm + PReLU blocks at H/4
}


# -------------------------------------------------------------------------------------------- building blocks
def peakiness(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """PoSFeat/ASLFeat peakiness: ``max_c softplus(x - avgpool3x3(x)) * softplus(x - mean_c(x))``.

    ``x`` is first divided by its largest absolute value per image (so the score does not depend on the feature
    scale). High where one channel stands out both spatially (against its 3x3 neighbourhood) and across channels.

    Args:
        x: (B, C, H, W).
    Returns:
        (B, 1, H, W) >= 0.
    """
    x = x / x.detach().abs().flatten(1).amax(1).clamp(min=eps)[:, None, None, None]
    spatial = F.softplus(x - F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False))
    depth = F.softplus(x - x.mean(1, keepdim=True))
    return (spatial * depth).amax(1, keepdim=True)


class CouplingBridge(nn.Module):
    """``(w1 PN(x) + w2 CN(x)) / (w1 + w2)`` with learnable w (see the module docstring).

    Args:
        channels: C of the input map.
        weights: initial (w1, w2).
    """

    def __init__(self, channels: int, weights=(0.7, 0.3), eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weights = nn.Parameter(torch.tensor([float(w) for w in weights]))
        # PN's modulation: gamma, beta = 7x7 convs of the channel mean; start at gamma = 1, beta = 0
        self.pn_gamma = nn.Conv2d(1, channels, 7, padding=3)
        self.pn_beta = nn.Conv2d(1, channels, 7, padding=3)
        for conv, bias in ((self.pn_gamma, 1.0), (self.pn_beta, 0.0)):
            nn.init.zeros_(conv.weight)
            nn.init.constant_(conv.bias, bias)

    def pn_standardize(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel standardisation across channels (zero mean, unit variance over C at each pixel)."""
        mean = x.mean(1, keepdim=True)
        return (x - mean) / (x.var(1, keepdim=True, unbiased=False) + self.eps).sqrt()

    def cn(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image, per-channel standardisation over H x W (no affine, no running statistics)."""
        return F.instance_norm(x, eps=self.eps)

    def pn(self, x: torch.Tensor) -> torch.Tensor:
        m = x.mean(1, keepdim=True)
        return self.pn_standardize(x) * self.pn_gamma(m) + self.pn_beta(m)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W)."""
        w = self.weights
        return (w[0] * self.pn(x) + w[1] * self.cn(x)) / (w[0] + w[1])


class _ConvGNELU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=False), make_norm("group", cout), nn.ELU(inplace=True))


class _ConvINPReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1), nn.InstanceNorm2d(cout, affine=True), nn.PReLU(cout))


class Detector(nn.Module):
    """Keypoint score map from detached descriptor features, encoder features and the image.

    Feature branch (H/4): concat(local_map, x4) -> ``blocks`` x [conv3x3 + InstanceNorm + PReLU] -> f; its
    peakiness P(f). Image branch (H): conv3x3 + InstanceNorm + PReLU on the image -> g; P(g). Head (H):
    concat(up(f), up(P(f)), g, P(g)) -> conv3x3 + InstanceNorm + PReLU -> 1x1 conv -> softplus.

    The reference feeds 192 "stem" channels at H/4; featlab feeds the encoder's H/4 map (stage 1 output).
    """

    def __init__(self, in_channels: int, width: int = 16, blocks: int = 2):
        super().__init__()
        layers, c = [], in_channels
        for _ in range(int(blocks)):
            layers.append(_ConvINPReLU(c, width))
            c = width
        self.features = nn.Sequential(*layers)
        self.image_branch = _ConvINPReLU(3, width)
        self.head = nn.Sequential(_ConvINPReLU(2 * width + 2, width), nn.Conv2d(width, 1, 1))

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """features (B, C, Hp/4, Wp/4), image (B, 3, Hp, Wp) standardised -> scores (B, 1, Hp, Wp) >= 0."""
        f = self.features(features)
        pf = peakiness(f)
        up = lambda t: F.interpolate(t, size=image.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        g = self.image_branch(image)
        x = torch.cat([up(f), up(pf), g, peakiness(g)], 1)
        return F.softplus(self.head(x))


# -------------------------------------------------------------------------------------------------- network
class SCFeatNet(nn.Module):
    """F2R description network + coupling bridge + detector (see the module docstring).

    Args:
        conf: keys of :data:`default_conf`.
    Raises:
        ConfigError: unknown keys or bad values.
    """

    def __init__(self, conf: dict | None = None):
        super().__init__()
        conf = to_container(resolve_conf(default_conf, conf, "model"))
        if conf["depth"] not in LAYOUTS:
            raise ConfigError(f"model.depth must be one of {sorted(LAYOUTS)}, got {conf['depth']}")
        if len(conf["widths"]) != 3 or len(conf["decoder_widths"]) != 2 or len(conf["bridge_weights"]) != 2:
            raise ConfigError("model.widths needs 3 values, model.decoder_widths 2 and model.bridge_weights 2")
        if conf["extract_from"] not in ("local", "desc"):
            raise ConfigError(f"model.extract_from must be local or desc, got {conf['extract_from']!r}")
        if conf["norm"] not in ("batch", "group", "none"):
            raise ConfigError(f"model.norm must be batch, group or none, got {conf['norm']!r}")
        if min(conf["bridge_weights"]) < 0 or sum(conf["bridge_weights"]) <= 0:
            raise ConfigError(f"model.bridge_weights must be >= 0 with a positive sum, got {conf['bridge_weights']}")
        #: the resolved config, a plain dict (stored in the weights' sidecar)
        self.conf = conf
        self.encoder = ResNetEncoder(depth=int(conf["depth"]), num_stages=3, widths=tuple(conf["widths"]),
                                     stem_width=int(conf["stem_width"]), norm=conf["norm"])
        c4, c8, c16 = self.encoder.out_channels
        d8, d4 = (int(v) for v in conf["decoder_widths"])
        dim = int(conf["descriptor_dim"])
        self.up3 = _ConvGNELU(c16, d8)
        self.iconv3 = _ConvGNELU(c8 + d8, d8)
        self.up2 = _ConvGNELU(d8, d4)
        self.iconv2 = _ConvGNELU(c4 + d4, d4)
        self.fuse4 = nn.Conv2d(d4, dim, 1)
        self.fuse8 = nn.Conv2d(d8, dim, 3, padding=1)
        self.fuse16 = nn.Conv2d(c16, dim, 3, padding=1)
        self.fuse = nn.Conv2d(3 * dim, dim, 1)
        self.bridge = CouplingBridge(dim, conf["bridge_weights"]) if conf["bridge"] else None
        self.detector = Detector(dim + c4, int(conf["detector_width"]), int(conf["detector_blocks"]))
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def descriptor_dim(self) -> int:
        return self.fuse.out_channels

    def description_parameters(self) -> list[nn.Parameter]:
        """Parameters of the description stage (everything but the detector)."""
        det = {id(p) for p in self.detector.parameters()}
        return [p for p in self.parameters() if id(p) not in det]

    def _prepare(self, image: torch.Tensor) -> torch.Tensor:
        if image.ndim != 4 or image.shape[1] not in (1, 3):
            raise ValueError(f"image must be (B, 1|3, H, W), got {tuple(image.shape)}")
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        x = (image - self.mean.to(image)) / self.std.to(image)
        hp, wp = map_extent(*x.shape[-2:])
        return F.pad(x, (0, wp - x.shape[-1], 0, hp - x.shape[-2]))

    def describe(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Description maps.

        Args:
            image: (B, 3 or 1, H, W) in [0, 1].
        Returns:
            desc_map: (B, D, Hp/4, Wp/4) raw fused map; local_map: (B, D, Hp/4, Wp/4) the bridge's output;
            features4: (B, c4, Hp/4, Wp/4) encoder stage-1 map; input: (B, 3, Hp, Wp) the standardised, padded image.
        """
        x = self._prepare(image)
        x4, x8, x16 = self.encoder(x)
        up = lambda t, ref: F.interpolate(t, size=ref.shape[-2:], mode="bilinear", align_corners=False)  # noqa: E731
        d8 = self.iconv3(torch.cat([x8, self.up3(up(x16, x8))], 1))
        d4 = self.iconv2(torch.cat([x4, self.up2(up(d8, x4))], 1))
        desc = self.fuse(torch.cat([self.fuse4(d4), self.fuse8(up(d8, d4)), self.fuse16(up(x16, d4))], 1))
        local = self.bridge(desc) if self.bridge is not None else F.normalize(desc, dim=1)
        return {"desc_map": desc, "local_map": local, "features4": x4, "input": x}

    def detect(self, maps: dict[str, torch.Tensor], image_size) -> torch.Tensor:
        """Score map (B, 1, H, W) >= 0 of images of size ``image_size`` = (H, W) from :meth:`describe`'s maps.

        The detector sees detached inputs: its training never changes the description network.
        """
        feats = torch.cat([maps["local_map"].detach(), maps["features4"].detach()], 1)
        scores = self.detector(feats, maps["input"].detach())
        return scores[..., : image_size[0], : image_size[1]]

    def descriptor_map(self, maps: dict[str, torch.Tensor]) -> torch.Tensor:
        """The map descriptors are sampled from at extraction (``model.extract_from``)."""
        return maps["local_map"] if self.conf["extract_from"] == "local" else maps["desc_map"]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """:meth:`describe` plus ``scores`` (B, 1, H, W)."""
        maps = self.describe(image)
        return {**maps, "scores": self.detect(maps, image.shape[-2:])}


__all__ = ["default_conf", "SCFeatNet", "CouplingBridge", "Detector", "peakiness"]
