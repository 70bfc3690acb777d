"""Multi-layer perceptron on the last dimension (per-keypoint descriptor refinement)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """Linear layers with ReLU between them (none after the last one).

    Args:
        dims: layer widths including input and output, e.g. (128, 256, 256, 128).

    Shape: (..., dims[0]) -> (..., dims[-1]).
    """

    def __init__(self, dims: Sequence[int]):
        super().__init__()
        dims = [int(d) for d in dims]
        if len(dims) < 2:
            raise ValueError(f"MLP needs at least input and output sizes, got {dims}")
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(a, b))
            if i < len(dims) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)
        self.dims = dims

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
