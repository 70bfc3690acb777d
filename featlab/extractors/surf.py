"""SURF: Speeded-Up Robust Features (Bay, Tuytelaars & Van Gool, ECCV 2006 / CVIU 2008), written in torch.

OpenCV's PyPI wheels ship no SURF (it is in the non-free module), so featlab implements it from the paper.
Everything is vectorised: the detector works on whole response maps, orientation and description work on all
keypoints x samples at once; only octaves and layers are Python loops.

Design choices (where the paper leaves room):

- **Intensity scale.** The image is gray in [0, 1] (the data contract), so ``hessian_threshold`` is in those
  units. Box responses are divided by the filter area L^2, which makes them scale-normalised second derivatives
  (sigma^2 L_xx up to a constant), i.e. the same normalisation as OpenCV's SURF; OpenCV's ``hessianThreshold``
  works on [0, 255] images, so OpenCV's threshold T corresponds to ``T / 255**2`` here (the default 5e-4 is
  OpenCV's ~33; it gives a few hundred to ~1500 keypoints on a 640x480 photo).
- **Detector.** Integral image in float64 (of the mean-subtracted image: every SURF filter has zero sum, so the
  offset changes nothing but keeps the sums small). Octave o (1-based) uses filter sizes starting at 9, 15, 27,
  51 with increments 6 * 2^(o-1) and sampling step 2^(o-1); responses are computed only where the largest filter
  of the 3x3x3 neighbourhood fits inside the image (no padding artefacts). A candidate is a 3x3x3 maximum of
  det(H) = Dxx Dyy - (0.9 Dxy)^2 above the threshold in a middle layer; it is refined by fitting a 3-D
  quadratic (finite differences, one Newton step) and dropped when the offset exceeds one grid cell or the fit is
  singular. The score is the interpolated det(H); the Laplacian sign is sign(Dxx + Dyy) (-1 bright blob,
  +1 dark blob).
- **Scale.** ``scales`` holds the SURF scale s = 1.2 L / 9 in pixels (L the interpolated filter size), the
  Gaussian sigma the box filters approximate -- not a diameter like OpenCV's ``KeyPoint.size``. Measured on
  synthetic blobs, det(H) peaks at s ~ 0.7 r for a Gaussian blob of sigma r and s ~ 0.5 r for a disk of radius
  r: proportional to the blob size, but not equal to the Gaussian-derivative optimum (s = r), a property of the
  box filters with area normalisation.
- **Sampling for orientation and descriptor.** Haar wavelets are box sums over *continuous*, sub-pixel boxes:
  the integral image of a piecewise-constant image is exactly bilinear inside each pixel, so bilinear
  interpolation of the integral image (via :func:`featlab.pixels.sample_map`) gives the exact box sum for any real
  box. Sample positions follow the sub-pixel keypoint and its real-valued scale and rotation without rounding,
  and each Haar response costs 8 integral-image look-ups. The image is replicate-padded before integration so that
  windows crossing the border see the edge pixels continued.
- **Orientation.** Haar responses of size 4s at the 113 points (i, j) s with i^2 + j^2 <= 36, Gaussian weight
  sigma = 2s; a pi/3 window slides in 5 degree steps; the dominant orientation is the direction of the largest
  window sum. One orientation per keypoint. ``oris`` are degrees in [0, 360), measured from +x towards +y (y
  down, i.e. clockwise on screen), 0 when upright.
- **Descriptor.** A 20s square along the orientation, 4 x 4 subregions of 5 x 5 samples (spacing s), Haar size
  2s in the image frame, responses rotated into the keypoint frame, Gaussian weight sigma = 3.3s. 64-d:
  (sum dx, sum dy, sum |dx|, sum |dy|) per subregion; extended 128-d: (sum dx, sum |dx|) split by sign of dy
  and (sum dy, sum |dy|) split by sign of dx. L2-normalised.

Pixel convention: integral-image index k is the continuous coordinate k (a pixel boundary), so the filter
centred on pixel (row i, col j) is at featlab (j + 0.5, i + 0.5).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..conf import checked
from ..io.image import rgb_to_gray
from ..pixels import OPENCV_OFFSET, from_opencv, sample_map
from .base import Extractor, register_extractor, stack_padded, top_k_keypoints

#: the paper's weight that balances the box approximation of Dxy against Dxx, Dyy
DXY_WEIGHT = 0.9
ORI_RADIUS = 6  # orientation samples within radius 6s
ORI_SIGMA = 2.0  # Gaussian weight sigma = 2s
ORI_HAAR = 4.0  # Haar wavelet side = 4s
ORI_WINDOW = math.pi / 3
ORI_STEP_DEG = 5  # sliding-window step
DESC_SIGMA = 3.3  # descriptor Gaussian sigma = 3.3s
DESC_HAAR = 2.0  # descriptor Haar side = 2s
CHUNK = 512  # keypoints per vectorised chunk when describing
HAAR_CHUNK = 32768  # Haar responses per integral-image look-up batch (x 8 corners)
SIGN_EPS = 1e-9  # |Haar response| below this counts as >= 0 when the extended descriptor splits by sign


def filter_sizes(n_octaves: int, n_layers: int) -> tuple[list[list[int]], list[int]]:
    """Box filter sizes per octave and sampling steps, as in the paper.

    Octave 1: 9, 15, 21, 27 (+6); octave 2 starts at octave 1's second size with twice the increment: 15, 27,
    39, 51; then 27, 51, 75, 99 and 51, 99, 147, 195. The step is 1, 2, 4, 8.

    Returns:
        sizes[o][k] and steps[o].
    """
    sizes, steps = [], []
    first, inc = 9, 6
    for o in range(n_octaves):
        sizes.append([first + k * inc for k in range(n_layers)])
        steps.append(2 ** o)
        first, inc = first + inc, inc * 2
    return sizes, steps


def integral_image(image: torch.Tensor, pad: int = 0) -> torch.Tensor:
    """Zero-origin integral image of a replicate-padded gray image, float64.

    Args:
        image: (H, W) float.
        pad: pixels of replicate padding on each side.
    Returns:
        S (H + 2 pad + 1, W + 2 pad + 1) with S[r, c] = sum of padded pixels with row < r and col < c, so the
        continuous featlab coordinate x maps to index x + pad.
    """
    img = image.to(torch.float64)
    img = img - img.mean()
    if pad > 0:
        img = F.pad(img[None, None], (pad, pad, pad, pad), mode="replicate")[0, 0]
    s = F.pad(img.cumsum(0).cumsum(1), (1, 0, 1, 0))
    return s


def hessian_layer(S: torch.Tensor, pad: int, size: int, step: int, n_rows: int, n_cols: int):
    """Box-filter Hessian of one scale at the grid of pixels (step * a, step * b).

    Args:
        S: integral image of the image padded by ``pad`` (see :func:`integral_image`), ``pad`` > size // 2.
        size: filter side L (odd multiple of 3); lobe l = L / 3.
    Returns:
        det (n_rows, n_cols) = Dxx Dyy - (0.9 Dxy)^2 with area-normalised responses, and trace Dxx + Dyy.
    """
    lobe = size // 3
    half_long = (3 * lobe - 1) // 2  # half extent of the three lobes together
    half_mid = (lobe - 1) // 2  # half extent of the centre lobe
    half_wide = lobe - 1  # half extent across the lobes (width 2l - 1)

    def rows(o):
        return slice(pad + o, pad + o + step * (n_rows - 1) + 1, step)

    def cols(o):
        return slice(pad + o, pad + o + step * (n_cols - 1) + 1, step)

    def box(r0, r1, c0, c1):  # inclusive pixel offsets from the centre
        return (S[rows(r1 + 1), cols(c1 + 1)] - S[rows(r0), cols(c1 + 1)]
                - S[rows(r1 + 1), cols(c0)] + S[rows(r0), cols(c0)])

    # +1 -2 +1 lobes written as the whole block minus 3x the centre lobe
    dxx = box(-half_wide, half_wide, -half_long, half_long) - 3 * box(-half_wide, half_wide, -half_mid, half_mid)
    dyy = box(-half_long, half_long, -half_wide, half_wide) - 3 * box(-half_mid, half_mid, -half_wide, half_wide)
    # four l x l quadrants around a one-pixel cross: + top-left / bottom-right, - top-right / bottom-left
    dxy = (box(-lobe, -1, -lobe, -1) + box(1, lobe, 1, lobe)
           - box(-lobe, -1, 1, lobe) - box(1, lobe, -lobe, -1))
    inv_area = 1.0 / (size * size)
    dxx, dyy, dxy = dxx * inv_area, dyy * inv_area, dxy * inv_area
    det = dxx * dyy - (DXY_WEIGHT * dxy) ** 2
    return det, dxx + dyy


def _scale_space_maxima(det: torch.Tensor, threshold: float) -> torch.Tensor:
    """Strict-or-equal 3x3x3 maxima above ``threshold`` in the inner layers of det (n_layers, h, w).

    Separable running maxima (much faster than ``max_pool3d`` on CPU); borders count as -inf.

    Returns:
        (n_layers - 2, h, w) bool for layers 1 .. n_layers - 2.
    """
    x = F.pad(det, (1, 1, 1, 1), value=-math.inf)
    x = torch.maximum(torch.maximum(x[:, :-2], x[:, 1:-1]), x[:, 2:])  # rows
    x = torch.maximum(torch.maximum(x[:, :, :-2], x[:, :, 1:-1]), x[:, :, 2:])  # cols
    x = torch.maximum(torch.maximum(x[:-2], x[1:-1]), x[2:])  # layers
    inner = det[1:-1]
    return (inner >= x) & (inner > threshold)


def _refine(det: torch.Tensor, idx: torch.Tensor):
    """Fit a 3-D quadratic around discrete maxima (layer, row, col) of ``det`` (n_layers, h, w).

    Returns:
        offsets (K, 3) as (d_col, d_row, d_layer), interpolated values (K,), ok mask (K,).
    """
    l, i, j = idx.unbind(-1)

    def v(dl, di, dj):
        return det[l + dl, i + di, j + dj].to(torch.float64)

    c = v(0, 0, 0)
    g = torch.stack([(v(0, 0, 1) - v(0, 0, -1)) / 2, (v(0, 1, 0) - v(0, -1, 0)) / 2,
                     (v(1, 0, 0) - v(-1, 0, 0)) / 2], -1)
    hxx = v(0, 0, 1) + v(0, 0, -1) - 2 * c
    hyy = v(0, 1, 0) + v(0, -1, 0) - 2 * c
    hss = v(1, 0, 0) + v(-1, 0, 0) - 2 * c
    hxy = (v(0, 1, 1) - v(0, 1, -1) - v(0, -1, 1) + v(0, -1, -1)) / 4
    hxs = (v(1, 0, 1) - v(1, 0, -1) - v(-1, 0, 1) + v(-1, 0, -1)) / 4
    hys = (v(1, 1, 0) - v(1, -1, 0) - v(-1, 1, 0) + v(-1, -1, 0)) / 4
    hess = torch.stack([torch.stack([hxx, hxy, hxs], -1), torch.stack([hxy, hyy, hys], -1),
                        torch.stack([hxs, hys, hss], -1)], -2)
    off, info = torch.linalg.solve_ex(hess, -g[..., None])
    off = off[..., 0]
    ok = (info == 0) & torch.isfinite(off).all(-1) & (off.abs() <= 1.0).all(-1)
    off = torch.where(ok[:, None], off, torch.zeros_like(off))
    value = c + 0.5 * (g * off).sum(-1)
    return off, value, ok


def detect(gray: torch.Tensor, threshold: float, n_octaves: int = 4, n_layers: int = 4):
    """Fast-Hessian detector on one gray image.

    Args:
        gray: (H, W) float in [0, 1].
        threshold: minimum det(H) (area-normalised responses of a [0, 1] image).
    Returns:
        keypoints (N, 2) featlab pixels, scores (N,) interpolated det(H), scales (N,) s = 1.2 L / 9,
        laplacian signs (N,) int8, unsorted.
    """
    h, w = gray.shape
    sizes, steps = filter_sizes(n_octaves, n_layers)
    # octaves whose first 3x3x3 neighbourhood cannot fit anywhere in the image are skipped (and need no padding)
    octaves = [(szs, step) for szs, step in zip(sizes, steps) if szs[2] + 2 * step <= min(h, w)]
    if not octaves:
        z = gray.new_zeros
        return z((0, 2)), z(0), z(0), torch.zeros(0, dtype=torch.int8, device=gray.device)
    pad = max(szs[-1] for szs, _ in octaves) // 2 + 2
    S = integral_image(gray, pad)
    out_pts, out_scores, out_scales, out_signs = [], [], [], []
    for szs, step in octaves:
        n_rows, n_cols = (h - 1) // step + 1, (w - 1) // step + 1
        layers = [hessian_layer(S, pad, L, step, n_rows, n_cols) for L in szs]
        det = torch.stack([d for d, _ in layers]).to(torch.float32)  # (n_layers, n_rows, n_cols)
        trace = torch.stack([t for _, t in layers]).to(torch.float32)
        cand = _scale_space_maxima(det, threshold)  # (n_layers - 2, n_rows, n_cols), layers 1..n-2
        # the largest filter of the 3x3x3 neighbourhood (layer k+1) must fit at the centre's +-1 neighbours
        for k in range(1, n_layers - 1):
            margin = szs[k + 1] // 2 + step
            r0, c0 = -(-margin // step), -(-margin // step)  # first grid index with index * step >= margin
            r1, c1 = (h - 1 - margin) // step, (w - 1 - margin) // step  # last valid grid index
            if r1 < r0 or c1 < c0:
                cand[k - 1] = False
                continue
            cand[k - 1, :r0] = False
            cand[k - 1, r1 + 1:] = False
            cand[k - 1, :, :c0] = False
            cand[k - 1, :, c1 + 1:] = False
        idx = cand.nonzero()
        if len(idx) == 0:
            continue
        idx[:, 0] += 1  # back to layer indices
        off, value, ok = _refine(det, idx)
        idx, off, value = idx[ok], off[ok], value[ok]
        inc = szs[1] - szs[0]
        size = torch.tensor(szs, device=gray.device, dtype=torch.float64)[idx[:, 0]] + off[:, 2] * inc
        x = from_opencv((idx[:, 2] + off[:, 0]) * step)  # pixel indices (sub-pixel) -> featlab
        y = from_opencv((idx[:, 1] + off[:, 1]) * step)
        out_pts.append(torch.stack([x, y], -1))
        out_scores.append(value)
        out_scales.append(1.2 * size / 9.0)
        out_signs.append(torch.sign(trace[idx[:, 0], idx[:, 1], idx[:, 2]]).to(torch.int8))
    if not out_pts:
        z = gray.new_zeros
        return z((0, 2)), z(0), z(0), torch.zeros(0, dtype=torch.int8, device=gray.device)
    return (torch.cat(out_pts).float(), torch.cat(out_scores).float(), torch.cat(out_scales).float(),
            torch.cat(out_signs))


class IntegralSampler:
    """Exact box sums over real-valued (sub-pixel) boxes of one gray image.

    The integral image of a piecewise-constant image is bilinear inside each pixel cell, so bilinear
    interpolation of it (one :func:`featlab.pixels.sample_map` call for all look-ups) is the exact integral.
    """

    # corners a b c / d . f / g i j of a Haar wavelet, in units of its half side (x, y)
    _offsets = torch.tensor([[-1, -1], [0, -1], [1, -1], [-1, 0], [1, 0], [-1, 1], [0, 1], [1, 1]],
                            dtype=torch.float64)
    # dx = (right box) - (left box) = j - 2i - c + 2b + g - a; dy = (bottom) - (top) = j - g - 2f + 2d + c - a
    _weights = torch.tensor([[-1, -1], [2, 0], [-1, 1], [0, 2], [0, -2], [1, -1], [-2, 0], [1, 1]],
                            dtype=torch.float64)

    def __init__(self, gray: torch.Tensor, pad: int):
        """Args: gray (H, W) float image; pad: replicate padding (px) that look-ups may reach into."""
        self.pad = pad
        self.S = integral_image(gray, pad)[None, None]  # (1, 1, H + 2 pad + 1, W + 2 pad + 1)
        self.size = tuple(self.S.shape[-2:])

    def haar(self, points: torch.Tensor, half: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Haar wavelet responses of side 2 * half centred at points, axis-aligned in the image.

        Args:
            points: (..., 2) featlab coordinates; half: (...) half-side in pixels (broadcastable to points[..., 0]).
        Returns:
            dx (right half minus left half) and dy (bottom half minus top half), each (...), divided by the
            wavelet area.
        """
        shape = points.shape[:-1]
        points = points.to(torch.float64).reshape(-1, 2)
        half = torch.broadcast_to(half.to(torch.float64), shape).reshape(-1, 1)
        offsets, weights = self._offsets.to(points.device), self._weights.to(points.device)
        out = []
        # chunks keep the temporaries small: fresh large buffers cost more in page faults than in arithmetic
        for i in range(0, len(points), HAAR_CHUNK):
            p, h = points[i:i + HAAR_CHUNK], half[i:i + HAAR_CHUNK]
            # the 8 corners a b c / d . f / g i j of the two box pairs (the centre is not needed)
            corners = p[:, None, :] + h[:, :, None] * offsets
            corners += self.pad + OPENCV_OFFSET  # S index k is coordinate k - pad; sample_map reads index k at
            # from_opencv(k) (in place: fresh buffers cost page faults)
            values = sample_map(self.S, corners.reshape(1, -1, 2), self.size)[0]  # (m * 8, 1)
            out.append((values.reshape(-1, 8) @ weights) / (2 * h) ** 2)  # (m, 2)
        d = torch.cat(out) if out else points.new_zeros((0, 2))
        return d[:, 0].reshape(shape), d[:, 1].reshape(shape)


def _orientation_pattern(device):
    r = ORI_RADIUS
    ij = torch.stack(torch.meshgrid(torch.arange(-r, r + 1), torch.arange(-r, r + 1), indexing="xy"), -1)
    ij = ij.reshape(-1, 2).to(torch.float64)
    ij = ij[(ij ** 2).sum(-1) <= r * r]
    weight = torch.exp(-(ij ** 2).sum(-1) / (2 * ORI_SIGMA ** 2))
    return ij.to(device), weight.to(device)


def assign_orientations(sampler: IntegralSampler, keypoints: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Dominant orientation of each keypoint (radians, from +x towards +y), see the module docstring.

    Args:
        keypoints: (N, 2) featlab pixels; scales: (N,) SURF scale s.
    Returns:
        (N,) angles in [-pi, pi].
    """
    if len(keypoints) == 0:
        return keypoints.new_zeros(0)
    offsets, weight = _orientation_pattern(keypoints.device)
    s = scales.to(torch.float64)[:, None]
    pts = keypoints.to(torch.float64)[:, None] + offsets[None] * s[..., None]  # (N, P, 2)
    dx, dy = sampler.haar(pts, (ORI_HAAR / 2) * s)
    dx, dy = dx * weight, dy * weight
    # windows start at multiples of the 5 degree step and span 12 steps, so a sample lies in window w exactly
    # when its 5-degree bin is one of w .. w + 11 (mod 72): histogram the responses, then circular box-sum bins
    n_bins = 360 // ORI_STEP_DEG
    span = round(math.degrees(ORI_WINDOW)) // ORI_STEP_DEG
    bins = torch.floor(torch.remainder(torch.atan2(dy, dx), 2 * math.pi) * (n_bins / (2 * math.pi)))
    bins = bins.long().clamp_(0, n_bins - 1)
    hist = dx.new_zeros(len(dx), 2, n_bins)
    hist[:, 0].scatter_add_(1, bins, dx)
    hist[:, 1].scatter_add_(1, bins, dy)
    ext = torch.cat([hist, hist[..., :span - 1]], -1).cumsum(-1)
    window = ext[..., span - 1:] - F.pad(ext, (1, 0))[..., :n_bins]  # (N, 2, n_bins): bins w .. w + span - 1
    best = (window ** 2).sum(1).argmax(-1)
    sums = window.gather(2, best[:, None, None].expand(-1, 2, 1))[..., 0]
    return torch.atan2(sums[:, 1], sums[:, 0]).float()


def _descriptor_pattern(device):
    u = torch.arange(20, dtype=torch.float64, device=device) - 9.5  # sample centres, units of s
    vv, uu = torch.meshgrid(u, u, indexing="ij")  # row-major: v (down the window) then u (across)
    uv = torch.stack([uu, vv], -1).reshape(-1, 2)  # (400, 2)
    weight = torch.exp(-(uv ** 2).sum(-1) / (2 * DESC_SIGMA ** 2))
    return uv, weight


def compute_descriptors(sampler: IntegralSampler, keypoints: torch.Tensor, scales: torch.Tensor,
                        angles: torch.Tensor, extended: bool = True) -> torch.Tensor:
    """SURF descriptors at given keypoints.

    Args:
        keypoints: (N, 2) featlab pixels; scales: (N,) SURF scale s; angles: (N,) radians (0 = upright).
        extended: 128-d (sums split by sign) instead of 64-d.
    Returns:
        (N, 128 or 64) float32, L2-normalised.
    """
    dim = 128 if extended else 64
    if len(keypoints) == 0:
        return keypoints.new_zeros((0, dim))
    uv, weight = _descriptor_pattern(keypoints.device)
    out = []
    for start in range(0, len(keypoints), CHUNK):
        kp = keypoints[start:start + CHUNK].to(torch.float64)
        s = scales[start:start + CHUNK].to(torch.float64)[:, None]
        cos = torch.cos(angles[start:start + CHUNK].to(torch.float64))[:, None]
        sin = torch.sin(angles[start:start + CHUNK].to(torch.float64))[:, None]
        u, v = uv[None, :, 0], uv[None, :, 1]
        x = kp[:, :1] + s * (u * cos - v * sin)
        y = kp[:, 1:] + s * (u * sin + v * cos)
        dx, dy = sampler.haar(torch.stack([x, y], -1), (DESC_HAAR / 2) * s)
        # rotate image-frame responses into the keypoint frame, then weight
        rx = (dx * cos + dy * sin) * weight
        ry = (-dx * sin + dy * cos) * weight
        n = len(kp)

        def cells(t):  # (n, 400) -> (n, 16) sums over the 4 x 4 subregions of 5 x 5 samples
            return t.reshape(n, 4, 5, 4, 5).sum((2, 4)).reshape(n, 16)

        if extended:
            # responses of exactly flat or axis-aligned structure are 0 up to rounding: a tiny dead zone keeps
            # them on the non-negative side, so an affine intensity change cannot flip their sign
            neg_y, neg_x = ry < -SIGN_EPS, rx < -SIGN_EPS
            zero = torch.zeros_like(rx)
            feats = [cells(torch.where(neg_y, rx, zero)), cells(torch.where(neg_y, rx.abs(), zero)),
                     cells(torch.where(~neg_y, rx, zero)), cells(torch.where(~neg_y, rx.abs(), zero)),
                     cells(torch.where(neg_x, ry, zero)), cells(torch.where(neg_x, ry.abs(), zero)),
                     cells(torch.where(~neg_x, ry, zero)), cells(torch.where(~neg_x, ry.abs(), zero))]
        else:
            feats = [cells(rx), cells(ry), cells(rx.abs()), cells(ry.abs())]
        desc = torch.stack(feats, -1).reshape(n, dim)  # per subregion, its 4 or 8 sums
        out.append(F.normalize(desc, dim=-1).float())
    return torch.cat(out)


def describe_pad(scales: torch.Tensor) -> int:
    """Replicate padding that keeps every descriptor and orientation look-up inside the padded image."""
    if len(scales) == 0:
        return 1
    reach = max(10 * math.sqrt(2) + DESC_HAAR / 2, ORI_RADIUS + ORI_HAAR / 2)  # in units of s
    return int(math.ceil(reach * float(scales.max()))) + 2


@register_extractor("surf", summary="SURF (Fast-Hessian + Haar descriptor), extended 128-d, oriented")
@register_extractor("surf64", preset={"extended": False}, summary="SURF, 64-d descriptor, oriented")
@register_extractor("surf-upright", preset={"upright": True}, summary="U-SURF: SURF without orientation, 128-d")
class SURF(Extractor):
    """SURF keypoints and descriptors (own torch implementation of Bay et al. 2008; see the module docstring).

    Extra outputs besides the data contract: ``scales`` (B, N) SURF scale s in pixels, ``oris`` (B, N) degrees in
    [0, 360) (from +x towards +y), ``laplacian_signs`` (B, N) int8 sign of Dxx + Dyy (-1 bright blob, +1 dark).
    """

    default_conf = {
        # min det(H) of area-normalised responses, image in [0, 1] (OpenCV's value / 255^2)
        "hessian_threshold": checked(5e-4, ge=0),
        "n_octaves": checked(4, ge=1),  # octaves (filter sizes 9.., 15.., 27.., 51.., ...; step doubles per octave)
        "n_layers": checked(4, ge=3),  # filter sizes per octave (maxima are searched in the inner ones: 3x3x3)
        "extended": True,  # 128-d descriptor (sums split by sign) instead of 64-d
        "upright": False,  # U-SURF: skip orientation assignment (angle 0)
    }

    def _init(self, conf):
        pass  # the valid values are declared in default_conf

    @property
    def descriptor_dim(self) -> int:
        return 128 if self.conf.extended else 64

    def detect_and_describe(self, gray: torch.Tensor) -> dict:
        """One gray image (H, W) in [0, 1] -> keypoints (N, 2), keypoint_scores, descriptors (N, D), scales, oris
        (degrees), laplacian_signs; sorted by decreasing score, top ``max_keypoints``."""
        conf = self.conf
        kpts, scores, scales, signs = detect(gray, conf.hessian_threshold, conf.n_octaves, conf.n_layers)
        kpts, scores, scales, signs = top_k_keypoints(kpts, scores, scales, signs, k=conf.max_keypoints)
        sampler = IntegralSampler(gray, describe_pad(scales))
        if conf.upright:
            angles = torch.zeros_like(scores)
        else:
            angles = assign_orientations(sampler, kpts, scales)
        desc = compute_descriptors(sampler, kpts, scales, angles, extended=conf.extended)
        return {"keypoints": kpts, "keypoint_scores": scores, "descriptors": desc, "scales": scales,
                "oris": torch.remainder(torch.rad2deg(angles), 360.0), "laplacian_signs": signs}

    def _forward(self, data):
        gray = rgb_to_gray(data["image"].float())[:, 0]
        items = [self.detect_and_describe(g) for g in gray]
        return stack_padded(items)
