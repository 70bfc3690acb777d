"""The depth keypoint network of ``depthkp`` (Georgakis et al. 2018, RECIPES section 4): a small fully
convolutional trunk over a depth map, a keypoint-proposal (score) head and a descriptor head, and the sampling layer
that keeps the top proposals and pools a descriptor for each.

Input encoding (:func:`encode_depth`, a featlab choice: the paper's is not known): two channels, the depth minus
the median of the map's valid depths divided by ``depth_unit`` metres (0 at invalid pixels), and the validity mask.
Subtracting the median makes the input independent of how far the scene is as a whole; the network still sees
metric relief (a 5 cm step is the same number near and far), which is what a depth descriptor can rely on.

Layout (``channels`` = [c0, c1, c2, c3], default [16, 32, 64, 96]; every conv is 3x3 + BatchNorm + ReLU)::

    stride 1: conv 2->c0
    stride 2: conv c0->c1 (stride 2)
    stride 4: conv c1->c2 (stride 2), conv c2->c2                     -> skip
    stride 8: conv c2->c3 (stride 2), conv c3->c3
    decoder : upsample x2 (bilinear), concat with skip, conv1x1 -> head_channels, conv3x3 head->head
    heads   : score conv1x1 head->1 (logit), descriptor conv1x1 head->descriptor_dim      (stride 4)

The Siamese use (both views through the same weights) is simply both depth maps in one batch. At 240x320 the
default network costs about 0.75 GMAC per map (about 0.2 M parameters).

Sampling layer (:func:`sample_proposals`): every cell of the stride-4 score map whose 4x4 pixels hold mostly valid
depth, and whose centre pixel has depth, is a proposal; non-maximum suppression keeps the cells that are the maximum of their (2r+1)^2 neighbourhood
(r = ``nms_radius`` cells); the top-k by score are kept in score order, at their cell centres (featlab pixels,
:func:`featlab.pixels.from_grid_indices`); each gets the L2-normalised descriptor sampled there.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import checked, resolve_conf
from ..pixels import from_grid_indices, sample_map

#: stride of the score and descriptor maps
STRIDE = 4
#: the input size must be a multiple of this (three stride-2 convs)
MULTIPLE = 8

default_conf = {
    "channels": [16, 32, 64, 96],  # trunk channels at strides 1, 2, 4, 8
    "head_channels": 64,  # decoder / head width (stride 4)
    "descriptor_dim": 64,  # descriptor length
    "depth_unit": checked(1.0, gt=0),  # metres: the relief channel is (depth - median) / depth_unit
}


def _block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def encode_depth(depth: torch.Tensor, depth_unit: float = 1.0) -> torch.Tensor:
    """Depth maps -> the network's 2-channel input (see the module docstring).

    Args:
        depth: (B, 1, H, W) metres, 0 = invalid.
    Returns:
        (B, 2, H, W) float: relief (depth - per-map median of valid depths) / depth_unit (0 where invalid), mask.
    """
    depth = depth.float()
    valid = depth > 0
    b = depth.shape[0]
    flat = depth.reshape(b, -1)
    # median of the valid depths per map (nanmedian ignores the invalid ones); a map without depth gets 0
    med = torch.nanmedian(torch.where(flat > 0, flat, torch.full_like(flat, float("nan"))), dim=1).values
    med = torch.nan_to_num(med, nan=0.0).reshape(b, 1, 1, 1)
    relief = torch.where(valid, (depth - med) / float(depth_unit), torch.zeros_like(depth))
    return torch.cat([relief, valid.float()], 1)


class DepthKPNet(nn.Module):
    """Fully convolutional trunk + score head + descriptor head over depth maps (see the module docstring).

    Args:
        conf: overrides of :data:`default_conf`.
    """

    def __init__(self, conf=None):
        super().__init__()
        self.conf = conf = resolve_conf(default_conf, conf, "model")
        c = [int(v) for v in conf.channels]
        if len(c) != 4 or min(c) < 1:
            raise ValueError(f"model.channels must be 4 positive widths, got {c}")
        h = int(conf.head_channels)
        self.stem = nn.Sequential(*_block(2, c[0]), *_block(c[0], c[1], 2))
        self.down4 = nn.Sequential(*_block(c[1], c[2], 2), *_block(c[2], c[2]))
        self.down8 = nn.Sequential(*_block(c[2], c[3], 2), *_block(c[3], c[3]))
        self.fuse = nn.Sequential(nn.Conv2d(c[2] + c[3], h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU(inplace=True),
                                  *_block(h, h))
        self.score_head = nn.Conv2d(h, 1, 1)
        self.descriptor_head = nn.Conv2d(h, int(conf.descriptor_dim), 1)

    @property
    def descriptor_dim(self) -> int:
        return int(self.conf.descriptor_dim)

    def forward(self, depth: torch.Tensor) -> dict[str, torch.Tensor]:
        """Args: depth (B, 1, H, W) metres (0 invalid), H and W multiples of 8.

        Returns:
            ``scores`` (B, 1, H/4, W/4) proposal logits, ``descriptors`` (B, D, H/4, W/4) raw (not normalised)
            descriptor map; both cover the whole image extent.
        """
        if depth.ndim != 4 or depth.shape[1] != 1 or depth.shape[-2] % MULTIPLE or depth.shape[-1] % MULTIPLE:
            raise ValueError(f"depth must be (B, 1, H, W) with H, W multiples of {MULTIPLE}, got {tuple(depth.shape)}")
        x = encode_depth(depth, float(self.conf.depth_unit)).to(next(self.parameters()).dtype)
        x4 = self.down4(self.stem(x))
        x8 = self.down8(x4)
        up = F.interpolate(x8, size=x4.shape[-2:], mode="bilinear", align_corners=False)
        feat = self.fuse(torch.cat([x4, up], 1))
        return {"scores": self.score_head(feat), "descriptors": self.descriptor_head(feat)}


def valid_cells(depth: torch.Tensor, stride: int = STRIDE, min_fraction: float = 0.5) -> torch.Tensor:
    """Cells of a stride-``stride`` map that may hold a keypoint: the pixel that contains the cell centre has depth
    (a keypoint is lifted to 3D with it) and at least ``min_fraction`` of the cell's pixels have depth.

    Args: depth (B, 1, H, W), H and W multiples of ``stride``. Returns: bool (B, H/stride, W/stride).
    """
    valid = depth > 0
    frac = F.avg_pool2d(valid.float(), stride, stride)
    centre = valid[:, :, stride // 2::stride, stride // 2::stride]  # pixel (s*i + s/2) holds centre s*(i + 0.5)
    return (frac >= min_fraction)[:, 0] & centre[:, 0]


def sample_proposals(score_logits: torch.Tensor, descriptor_map: torch.Tensor, cell_mask: torch.Tensor, k: int,
                     image_size, nms_radius: int = 1, stride: int = STRIDE) -> dict[str, torch.Tensor]:
    """The sampling layer: top-k proposals of a score map after NMS, with their descriptors.

    Args:
        score_logits: (B, 1, h, w) proposal logits.
        descriptor_map: (B, D, h, w) raw descriptor map (same grid).
        cell_mask: bool (B, h, w), cells that may be proposed (valid depth).
        k: proposals kept per map (< 0: all that pass); maps with fewer candidates are padded.
        image_size: (H, W) of the image the maps cover (H = h * stride).
        nms_radius: cells; a proposal is the maximum of its (2r+1)^2 neighbourhood (0: no NMS).
    Returns:
        ``keypoints`` (B, N, 2) featlab pixels (cell centres), ``logits`` (B, N) (with gradient),
        ``keypoint_scores`` (B, N) sigmoid of the logits, sorted descending, ``descriptors`` (B, N, D)
        L2-normalised, ``keypoint_masks`` bool (B, N) (False for padding, whose scores are 0 and keypoints (0, 0)).
    """
    b, _, h, w = score_logits.shape
    logits = score_logits[:, 0]
    detached = logits.detach().float()
    keep = cell_mask.clone()
    if nms_radius > 0:
        size = 2 * int(nms_radius) + 1
        masked = torch.where(cell_mask, detached, torch.full_like(detached, -torch.inf))
        local_max = F.max_pool2d(masked[:, None], size, stride=1, padding=int(nms_radius))[:, 0]
        keep &= masked == local_max
    flat = torch.where(keep, detached, torch.full_like(detached, -torch.inf)).reshape(b, -1)
    n = int(keep.reshape(b, -1).sum(1).max()) if k < 0 else min(int(k), h * w)
    top, idx = torch.sort(flat, dim=1, descending=True, stable=True)
    top, idx = top[:, :n], idx[:, :n]
    masks = torch.isfinite(top)
    ij = torch.stack([idx // w, idx % w], -1)
    keypoints = from_grid_indices(ij, float(stride)) * masks[..., None]
    sel_logits = logits.reshape(b, -1).gather(1, idx)
    descriptors = sample_map(descriptor_map, keypoints, image_size, normalize=True)
    scores = torch.sigmoid(sel_logits.detach().float()) * masks
    return {"keypoints": keypoints, "logits": sel_logits, "keypoint_scores": scores, "descriptors": descriptors,
            "keypoint_masks": masks}


def pad_to_multiple(depth: torch.Tensor, multiple: int = MULTIPLE) -> torch.Tensor:
    """Zero-pad (invalid depth) a (B, 1, H, W) map at the bottom and right to multiples of ``multiple``: the
    coordinates of the original pixels do not change."""
    h, w = depth.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(depth, (0, pw, 0, ph)) if ph or pw else depth


__all__ = ["DepthKPNet", "default_conf", "encode_depth", "sample_proposals", "valid_cells", "pad_to_multiple",
           "STRIDE", "MULTIPLE"]
