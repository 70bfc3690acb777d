"""ResNet encoders (He et al. 2016), written for featlab (torchvision is not used).

Layout of a ResNet-``depth`` encoder (``widths`` = base planes per stage, default (64, 128, 256, 512)):

    stem:    conv7x7 3->64 stride 2, norm, ReLU            (H/2)
             maxpool3x3 stride 2                           (H/4)
    stage 1: blocks[0] x block(64 planes), stride 1        (H/4)
    stage 2: blocks[1] x block(128 planes), stride 2       (H/8)
    stage 3: blocks[2] x block(256 planes), stride 2       (H/16)
    stage 4: blocks[3] x block(512 planes), stride 2       (H/32)  (dropped when ``num_stages=3``)

    depth 18: BasicBlock, blocks (2, 2, 2, 2)     output channels = planes
    depth 34: BasicBlock, blocks (3, 4, 6, 3)     output channels = planes
    depth 50: Bottleneck, blocks (3, 4, 6, 3)     output channels = 4 x planes (256, 512, 1024, 2048)

Downsampling happens in the first block of a stage (stride on the 3x3 conv, as in "ResNet v1.5"); the shortcut is
a strided 1x1 conv + norm whenever the shape changes. Stride-2 layers use padding k // 2, so an H x W input gives
ceil(H / 2^k) x ceil(W / 2^k) maps; pad inputs to a multiple of the largest stride so that every map covers the
image extent exactly (see :func:`featlab.nn.superpoint.pad_to_multiple`).
"""
from __future__ import annotations

import torch
from torch import nn

#: depth -> (block type, blocks per stage)
LAYOUTS = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


def make_norm(kind: str, channels: int) -> nn.Module:
    """Normalisation layer by name: 'batch' (BatchNorm2d), 'group' (GroupNorm, up to 32 groups), 'none'."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"unknown norm '{kind}'; choose batch, group or none")


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


def _shortcut(in_channels: int, out: int, stride: int, norm: str) -> nn.Module | None:
    """The residual shortcut: None (identity) when shape is kept, else a strided 1x1 projection + norm."""
    if stride == 1 and in_channels == out:
        return None
    return nn.Sequential(_conv1x1(in_channels, out, stride), make_norm(norm, out))


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut. Output channels = ``planes``."""

    expansion = 1
    #: (conv, norm) attribute pairs applied as norm(conv(x)), for featlab.nn.fold.fold_batchnorm
    conv_norm_pairs = (("conv1", "norm1"), ("conv2", "norm2"))

    def __init__(self, in_channels: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.norm1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, out)
        self.norm2 = make_norm(norm, out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out, stride, norm)

    @property
    def last_norm(self) -> nn.Module:
        return self.norm2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        return self.relu(y + identity)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (strided), 1x1 expand (x4), with a shortcut. Output channels = 4 x ``planes``."""

    expansion = 4
    #: (conv, norm) attribute pairs applied as norm(conv(x)), for featlab.nn.fold.fold_batchnorm
    conv_norm_pairs = (("conv1", "norm1"), ("conv2", "norm2"), ("conv3", "norm3"))

    def __init__(self, in_channels: int, planes: int, stride: int = 1, norm: str = "batch"):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = _conv1x1(in_channels, planes)
        self.norm1 = make_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.norm2 = make_norm(norm, planes)
        self.conv3 = _conv1x1(planes, out)
        self.norm3 = make_norm(norm, out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = _shortcut(in_channels, out, stride, norm)

    @property
    def last_norm(self) -> nn.Module:
        return self.norm3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.shortcut is None else self.shortcut(x)
        y = self.relu(self.norm1(self.conv1(x)))
        y = self.relu(self.norm2(self.conv2(y)))
        y = self.norm3(self.conv3(y))
        return self.relu(y + identity)


class ResNetEncoder(nn.Module):
    """ResNet-18/34/50 feature pyramid (no pooling head, no classifier).

    Args:
        depth: 18, 34 or 50.
        num_stages: residual stages to build, 1..4 (CAPS uses 3: strides 4, 8, 16).
        widths: base planes of stages 1..4 (a Bottleneck stage outputs 4x its planes).
        stem_width: channels of the 7x7 stem conv.
        in_channels: 3 for RGB input.
        norm: 'batch', 'group' or 'none'.
        zero_init_residual: start every residual branch at zero (last norm's scale = 0) so that each block is the
            identity at initialisation: steadier when training from scratch.

    Attributes:
        out_channels: channels of each returned map, strides 4, 8, 16, 32 (first ``num_stages``).
        strides: the strides of the returned maps.
    """

    def __init__(self, depth: int = 18, num_stages: int = 4, widths=(64, 128, 256, 512), stem_width: int = 64,
                 in_channels: int = 3, norm: str = "batch", zero_init_residual: bool = True):
        super().__init__()
        if depth not in LAYOUTS:
            raise ValueError(f"unsupported ResNet depth {depth}; choose one of {sorted(LAYOUTS)}")
        if not 1 <= num_stages <= 4:
            raise ValueError(f"num_stages must be in 1..4, got {num_stages}")
        widths = tuple(int(w) for w in widths)
        if len(widths) < num_stages:
            raise ValueError(f"need {num_stages} widths, got {widths}")
        kind, blocks = LAYOUTS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        self.depth = depth
        self.stem_channels = stem_width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False),
            make_norm(norm, stem_width),
            nn.ReLU(inplace=True),
        )
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.stages = nn.ModuleList()
        self.out_channels: list[int] = []
        self.strides: list[int] = []
        cin = stem_width
        for i in range(num_stages):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(blocks[i]):
                layers.append(block(cin, widths[i], stride if j == 0 else 1, norm))
                cin = widths[i] * block.expansion
            self.stages.append(nn.Sequential(*layers))
            self.out_channels.append(cin)
            self.strides.append(4 * 2**i)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)) and isinstance(m.last_norm, (nn.BatchNorm2d,
                                                                                       nn.GroupNorm)):
                    nn.init.zeros_(m.last_norm.weight)

    def forward(self, x: torch.Tensor, return_stem: bool = False):
        """Args: x (B, C, H, W).

        Returns:
            list of maps, one per stage: (B, out_channels[i], H / strides[i], W / strides[i]) (ceil for sizes
            that are not multiples of the stride). With ``return_stem`` the stride-2 stem map is returned first,
            as a separate value: ``(stem, maps)``.
        """
        stem = self.stem(x)
        y = self.pool(stem)
        maps = []
        for stage in self.stages:
            y = stage(y)
            maps.append(y)
        return (stem, maps) if return_stem else maps
