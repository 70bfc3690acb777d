"""Multiply-accumulates of featlab's networks for one 480x640 image (torch.utils.flop_counter; MAC = FLOP / 2).

usage: .venv/bin/python benchmarks/count_macs.py [H W]
Counts the dense network only (no keypoint detection, no sampling): residual h (full, small), CAPS ResUNet (ResNet
18/34/50 encoders, the shipped caps-resnet18 layout).
"""
from __future__ import annotations

import sys

import torch
from torch.utils.flop_counter import FlopCounterMode

from featlab.extractors.caps import load_caps_weights, resolve_weights_path
from featlab.extractors.residual import ResidualDescriptorNet
from featlab.nn.resunet import ResUNet


def gmac(fn, x) -> float:
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn(x)
    return counter.get_total_flops() / 2e9


def main(argv) -> None:
    h, w = (int(v) for v in argv[:2]) if len(argv) >= 2 else (480, 640)
    x = torch.rand(1, 3, h, w)
    print(f"| network | GMAC at {h}x{w} |\n|---|---:|")
    for backbone in ("full", "small"):
        net = ResidualDescriptorNet({"backbone": backbone}).eval()
        print(f"| residual h, {backbone} | {gmac(net.dense, x):.1f} |")
    _, meta = load_caps_weights(resolve_weights_path("caps-resnet18"))
    for depth in (18, 34, 50):
        net = ResUNet({**meta["model"], "depth": depth}).eval()
        print(f"| CAPS ResUNet, ResNet-{depth} encoder | {gmac(net, x):.1f} |")


if __name__ == "__main__":
    main(sys.argv[1:])
