"""CAPS network: a ResNet U-Net giving a coarse (H/16) and a fine (H/4) dense descriptor map.

Layout (Wang et al., ECCV 2020, "Learning Feature Descriptors using Camera Pose Supervision"); channels shown for
the paper's ResNet-50 at 480x640 input, ResNet-18/34 in brackets:

    encoder  stem conv7x7 s2 + norm + ReLU            240x320x64
             maxpool3x3 s2                            120x160x64
             stage 1 (x1)                             120x160x256   [64]
             stage 2 (x2)                              60x80x512    [128]
             stage 3 (x3)                              30x40x1024   [256]     (ResNet stage 4 dropped)
    coarse   conv1x1(x3) -> 128                        30x40x128
    decoder  up3 = conv3x3(bilinear x2 (x3)) -> 512 [128];  i3 = conv3x3(concat(x2, up3)) -> 512 [128]
             up2 = conv3x3(bilinear x2 (i3)) -> 256 [64];   i2 = conv3x3(concat(x1, up2)) -> 256 [64]
    fine     conv1x1(i2) -> 128                       120x160x128

Decoder widths default to the encoder's stride-8 and stride-4 channels (the paper's 512 and 256 for ResNet-50).
Decoder convs are conv3x3 + norm + ELU (a choice; the paper names no activation). The two heads are plain 1x1
convs (no norm, no activation): the maps are raw, L2-normalise the sampled vectors.

Input: RGB (or gray, repeated to 3 channels) in [0, 1], standardised with fixed per-channel statistics inside the
network. Sizes that are not multiples of 16 are zero-padded at the bottom/right (after standardisation) so that
both maps cover the padded extent :func:`map_extent` exactly; sample them with
``featlab.pixels.sample_map(map, points, map_extent(H, W))``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import none_or, resolve_conf, to_container
from ..errors import ConfigError
from .resnet import LAYOUTS, ResNetEncoder, make_norm

#: stride of the coarse map (and the padding multiple)
COARSE_STRIDE = 16
#: stride of the fine map
FINE_STRIDE = 4

#: per-channel statistics used to standardise RGB input (ImageNet's; any fixed values work from scratch)
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)

default_conf = {
    "depth": 18,  # ResNet encoder depth: 18, 34 or 50
    "widths": [64, 128, 256],  # base planes of the three kept ResNet stages (Bottleneck stages output 4x)
    "stem_width": 64,  # channels of the 7x7 stem conv
    "decoder_widths": none_or(list),  # [stride-8, stride-4] decoder channels; None: the encoder's channels at
    # those strides
    "coarse_dim": 128,  # channels of the coarse (H/16) descriptor map
    "fine_dim": 128,  # channels of the fine (H/4) descriptor map
    "norm": "batch",  # encoder normalisation: batch | group | none
    "decoder_norm": "batch",  # decoder normalisation: batch | group | none
}


def map_extent(height: int, width: int) -> tuple[int, int]:
    """Image extent (H, W) covered by the maps of an ``height`` x ``width`` input (padded to multiples of 16)."""
    return (-(-height // COARSE_STRIDE) * COARSE_STRIDE, -(-width // COARSE_STRIDE) * COARSE_STRIDE)


class _ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__(nn.Conv2d(cin, cout, 3, padding=1, bias=norm == "none"), make_norm(norm, cout),
                         nn.ELU(inplace=True))


class ResUNet(nn.Module):
    """CAPS descriptor network (see the module docstring).

    Args:
        conf: keys of :data:`default_conf` (a plain dict or an OmegaConf node; missing keys take the defaults).

    Raises:
        ConfigError: unknown keys or bad values.
    """

    def __init__(self, conf: dict | None = None):
        super().__init__()
        conf = to_container(resolve_conf(default_conf, conf, "model"))
        if conf["depth"] not in LAYOUTS:
            raise ConfigError(f"model.depth must be one of {sorted(LAYOUTS)}, got {conf['depth']}")
        if len(conf["widths"]) != 3 or (conf["decoder_widths"] is not None and len(conf["decoder_widths"]) != 2):
            raise ConfigError("model.widths needs 3 values and model.decoder_widths 2 (or null)")
        for key in ("norm", "decoder_norm"):
            if conf[key] not in ("batch", "group", "none"):
                raise ConfigError(f"model.{key} must be batch, group or none, got {conf[key]!r}")
        #: the resolved config, a plain dict (stored in the weights' sidecar)
        self.conf = conf
        self.encoder = ResNetEncoder(depth=int(conf["depth"]), num_stages=3, widths=tuple(conf["widths"]),
                                     stem_width=int(conf["stem_width"]), norm=conf["norm"])
        c4, c8, c16 = self.encoder.out_channels
        d8, d4 = conf["decoder_widths"] if conf["decoder_widths"] is not None else (c8, c4)
        norm = conf["decoder_norm"]
        self.coarse_head = nn.Conv2d(c16, int(conf["coarse_dim"]), 1)
        self.up3 = _ConvBlock(c16, d8, norm)
        self.iconv3 = _ConvBlock(c8 + d8, d8, norm)
        self.up2 = _ConvBlock(d8, d4, norm)
        self.iconv2 = _ConvBlock(c4 + d4, d4, norm)
        self.fine_head = nn.Conv2d(d4, int(conf["fine_dim"]), 1)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)
        for m in [self.coarse_head, self.up3, self.iconv3, self.up2, self.iconv2, self.fine_head]:
            for sub in m.modules():
                if isinstance(sub, nn.Conv2d):
                    nn.init.kaiming_normal_(sub.weight, nonlinearity="relu")
                    if sub.bias is not None:
                        nn.init.zeros_(sub.bias)

    @property
    def coarse_dim(self) -> int:
        return self.coarse_head.out_channels

    @property
    def fine_dim(self) -> int:
        return self.fine_head.out_channels

    @staticmethod
    def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Dense coarse and fine descriptor maps.

        Args:
            image: (B, 3 or 1, H, W) float in [0, 1].
        Returns:
            coarse: (B, coarse_dim, Hp / 16, Wp / 16) raw (not normalised) map.
            fine: (B, fine_dim, Hp / 4, Wp / 4) raw map.
            with (Hp, Wp) = :func:`map_extent` (H, W), the extent the maps cover.
        """
        if image.ndim != 4 or image.shape[1] not in (1, 3):
            raise ValueError(f"image must be (B, 1|3, H, W), got {tuple(image.shape)}")
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        x = (image - self.mean.to(image)) / self.std.to(image)
        h, w = x.shape[-2:]
        hp, wp = map_extent(h, w)
        if (hp, wp) != (h, w):
            x = F.pad(x, (0, wp - w, 0, hp - h))
        x4, x8, x16 = self.encoder(x)
        coarse = self.coarse_head(x16)
        y = self.up3(self._upsample_to(x16, x8))
        y = self.iconv3(torch.cat([x8, y], 1))
        y = self.up2(self._upsample_to(y, x4))
        y = self.iconv2(torch.cat([x4, y], 1))
        fine = self.fine_head(y)
        return {"coarse": coarse, "fine": fine}


#: the name used in the style guide and the docs
CAPSNet = ResUNet
