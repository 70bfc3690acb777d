"""Inference-time folding of BatchNorm into the convolution before it.

In eval mode ``bn(conv(x)) = gamma * (W x + b - mean) / sqrt(var + eps) + beta`` is one convolution with weights
``W * s`` and bias ``(b - mean) * s + beta`` per output channel, ``s = gamma / sqrt(var + eps)``. Folding removes
one pass over every feature map (and its memory traffic) and changes the outputs only by float rounding. It is
for inference only: a folded network no longer has BatchNorm to train.

A convolution followed by a BatchNorm is found in two places: adjacent entries of an ``nn.Sequential``
(``Sequential(conv, bn, relu)``), and pairs of attributes that a module names in ``conv_norm_pairs`` (the ResNet
blocks, whose ``forward`` calls ``norm1(conv1(x))``). BatchNorm anywhere else (or without running statistics)
is left as it is, which is still correct.
"""
from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _foldable(conv: nn.Module, norm: nn.Module) -> bool:
    return (isinstance(conv, _CONVS) and isinstance(norm, _NORMS) and norm.running_mean is not None
            and norm.num_features == conv.out_channels)


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """An eval-mode copy of ``module`` with every BatchNorm that directly follows a convolution folded into it.

    The folded BatchNorms become ``nn.Identity`` (indices of ``nn.Sequential`` and attribute names are kept, so
    code that reaches into the network still finds its layers). ``module`` itself is not changed.

    Args:
        module: any network; eval-mode outputs of the copy equal ``module.eval()``'s up to float rounding.
    Returns:
        the folded copy, in eval mode.
    """
    folded = copy.deepcopy(module).eval()
    for m in folded.modules():
        if isinstance(m, nn.Sequential):
            for i in range(len(m) - 1):
                if _foldable(m[i], m[i + 1]):
                    m[i] = fuse_conv_bn_eval(m[i], m[i + 1])
                    m[i + 1] = nn.Identity()
        for conv_name, norm_name in getattr(m, "conv_norm_pairs", ()):
            conv, norm = getattr(m, conv_name), getattr(m, norm_name)
            if _foldable(conv, norm):
                setattr(m, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(m, norm_name, nn.Identity())
    return folded

