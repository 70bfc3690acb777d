"""Trimmed SuperPoint: SuperPoint's VGG encoder and descriptor head, without the detector head.

Full layout (DeTone et al. 2018), stride 8:
    conv3x3 3->64, conv3x3 64->64, maxpool2,
    conv3x3 64->64, conv3x3 64->64, maxpool2,
    conv3x3 64->128, conv3x3 128->128, maxpool2,
    conv3x3 128->128, conv3x3 128->128            (ReLU after every conv)
    head: conv3x3 128->256, ReLU, conv1x1 256->D  (D = 128 by default)

"small" variant (the residual paper's ablation: half the encoder layers): one conv per stage instead of two,
    conv3x3 3->64, maxpool2, conv3x3 64->64, maxpool2, conv3x3 64->128, maxpool2, conv3x3 128->128,
i.e. the *second* conv of every stage is dropped (8 -> 4 encoder convs); the descriptor head is unchanged.
Parameters with D=128: full 0.96 M, small 0.59 M (SuperPoint with its detector head: 1.3 M).

The output is a raw (not normalised) dense map at H/8 x W/8 covering the whole image extent; callers pad the image
to a multiple of 8 first (:func:`pad_to_multiple`) so that the map covers exactly the padded image, and sample it
with :func:`featlab.pixels.sample_map`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

#: channel plan per stage; each stage is (channels, convs in the full model)
_STAGES = ((64, 2), (64, 2), (128, 2), (128, 2))
STRIDE = 8


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class TrimmedSuperPoint(nn.Module):
    """VGG encoder + descriptor head of SuperPoint; dense descriptors at stride 8.

    Args:
        descriptor_dim: channels of the output map (the head's 1x1 conv output, 128 in SuperPoint).
        variant: "full" (8 encoder convs) or "small" (4 encoder convs, see the module docstring).
        in_channels: 3 for RGB input (the residual descriptor uses RGB), 1 for gray.
        batchnorm: BatchNorm after every conv but the last (as in the SuperPoint training code of
            rpautrat/SuperPoint); helps training from scratch without a good starting point.
    """

    def __init__(self, descriptor_dim: int = 128, variant: str = "full", in_channels: int = 3,
                 batchnorm: bool = False):
        super().__init__()
        if variant not in ("full", "small"):
            raise ValueError(f"variant must be 'full' or 'small', got {variant!r}")
        self.variant = variant
        self.descriptor_dim = descriptor_dim
        layers: list[nn.Module] = []
        cin = in_channels
        def block(a, b):
            return [_conv(a, b), *([nn.BatchNorm2d(b)] if batchnorm else []), nn.ReLU(inplace=True)]

        for i, (cout, n_convs) in enumerate(_STAGES):
            for _ in range(n_convs if variant == "full" else 1):
                layers += block(cin, cout)
                cin = cout
            if i < len(_STAGES) - 1:
                layers.append(nn.MaxPool2d(2, 2))
        self.encoder = nn.Sequential(*layers)
        self.head = nn.Sequential(*block(cin, 256), _conv(256, descriptor_dim, k=1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Args: image (B, C, H, W) float in [0, 1], H and W multiples of 8.

        Returns: (B, D, H/8, W/8) raw descriptor map.
        """
        # centre the input: the network is trained from scratch, zero-mean input speeds up the first steps
        return self.head(self.encoder(image * 2.0 - 1.0))


def pad_to_multiple(image: torch.Tensor, multiple: int = STRIDE) -> torch.Tensor:
    """Zero-pad (B, C, H, W) at the bottom/right to multiples of ``multiple``; pixel coordinates are unchanged."""
    h, w = image.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return image
    return F.pad(image, (0, pw, 0, ph))
