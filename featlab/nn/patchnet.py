"""PatchNet: a small CNN that describes grey 32 x 32 patches (oriented, scale-normalised keypoint patches).

Built for a CPU budget: 1000 patches in about 40 ms on one AVX2 core (float32, BatchNorm folded), far below
HardNet's ~39 M multiply-adds per patch (this net: 0.63 M, 275 k parameters). Layout (``channels = [c0, c1, c2,
c3]``, P = 32)::

    per-patch normalisation (x - mean) / (std + eps)          as HardNet: contrast and brightness removed
    conv3x3 stride 2, 1 -> c0, BN, ReLU                         P/2
    depthwise conv3x3 stride 2, BN, conv1x1 c0 -> c1, BN, ReLU  P/4
    depthwise conv3x3,          BN, conv1x1 c1 -> c2, BN, ReLU  P/4
    depthwise conv3x3 stride 2, BN, conv1x1 c2 -> c3, BN, ReLU  P/8
    flatten, linear c3 * (P/8)^2 -> dim, L2-normalise

Every BatchNorm follows a convolution in one flat ``nn.Sequential``, so :func:`featlab.nn.fold_batchnorm` folds
them all for inference.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

#: total stride of the convolutions: the last map is (P / 8) x (P / 8)
STRIDE = 8


def _conv_bn(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class PatchNet(nn.Module):
    """Grey patches -> L2-normalised descriptors.

    Args:
        channels: widths of the four stages (see the module docstring).
        dim: descriptor dimension.
        patch_size: side P of the input patches (a multiple of 8).

    Shape: (N, 1, P, P) float -> (N, dim) float32, unit rows.
    """

    def __init__(self, channels: Sequence[int] = (16, 32, 64, 128), dim: int = 128, patch_size: int = 32):
        super().__init__()
        c = [int(v) for v in channels]
        if len(c) != 4 or min(c) < 1:
            raise ValueError(f"PatchNet needs 4 positive channel widths, got {list(channels)}")
        if patch_size < STRIDE or patch_size % STRIDE:
            raise ValueError(f"PatchNet patch_size must be a positive multiple of {STRIDE}, got {patch_size}")
        self.patch_size = int(patch_size)
        self.dim = int(dim)
        layers: list[nn.Module] = [*_conv_bn(1, c[0], stride=2), nn.ReLU(inplace=True)]
        for cin, cout, stride in ((c[0], c[1], 2), (c[1], c[2], 1), (c[2], c[3], 2)):
            # depthwise-separable block: a quarter of the cost of a full 3x3 convolution at these widths
            layers += [*_conv_bn(cin, cin, stride, groups=cin), *_conv_bn(cin, cout, kernel=1), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        side = self.patch_size // STRIDE
        self.head = nn.Linear(c[3] * side * side, self.dim)
        self.channels_last = False

    def set_channels_last(self, enabled: bool) -> "PatchNet":
        """channels_last memory format for the convolutions (measured faster float32 inference on CPU)."""
        self.channels_last = bool(enabled)
        return self.to(memory_format=torch.channels_last if enabled else torch.contiguous_format)

    @staticmethod
    def normalize_patches(patches: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
        """Per-patch zero mean and unit standard deviation; (N, 1, P, P). ``eps`` keeps flat patches near 0."""
        flat = patches.flatten(1)
        mean = flat.mean(1).view(-1, 1, 1, 1)
        std = flat.std(1, unbiased=False).view(-1, 1, 1, 1)
        return (patches - mean) / (std + eps)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Args: patches (N, 1, P, P) grey values (any affine intensity scale). Returns: (N, dim) unit rows."""
        if patches.ndim != 4 or patches.shape[1] != 1 or tuple(patches.shape[-2:]) != (self.patch_size,) * 2:
            raise ValueError(f"patches must be (N, 1, {self.patch_size}, {self.patch_size}), "
                             f"got {tuple(patches.shape)}")
        x = self.normalize_patches(patches.float())
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.features(x)
        return F.normalize(self.head(x.flatten(1)).float(), dim=-1)


__all__ = ["PatchNet"]
