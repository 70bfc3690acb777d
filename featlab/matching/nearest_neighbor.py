"""Nearest-neighbour descriptor matching: mutual check, Lowe's ratio test, distance threshold, padding masks.

Everything is one batched similarity matmul:
- float descriptors: cosine similarity ``s = <d0, d1>`` of the L2-normalised vectors; distance ``sqrt(2 - 2 s)``
  (the L2 distance of unit vectors).
- binary descriptors (uint8 packed bits, e.g. ORB's 32 bytes = 256 bits): bits are unpacked to +-1 floats, so
  ``<b0, b1> = bits - 2 * hamming`` exactly; distance = Hamming distance in bits.

Match scores are on hloc's scale, ``(1 + cos) / 2`` in [0, 1] (hloc's ``matchers/nearest_neighbor.py``), so that
hloc's ``min_match_score`` means the same on featlab's files; for binary descriptors the cosine of the +-1 vectors
gives ``1 - hamming / bits``. The ratio test defaults to hloc's symmetric one (see :func:`match_descriptors`).
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ..conf import checked, none_or, resolve_conf
from ..errors import ConfigError, InputError

_BIT_WEIGHTS = (128, 64, 32, 16, 8, 4, 2, 1)
#: ``symmetric``: hloc's ratio test (both directions, through the mutual check); ``one-way``: image 0 -> 1 only
RATIO_TESTS = ("symmetric", "one-way")
#: what ``matching_scores0`` holds, written into every matches file's record (featlab.commands.match)
SCORE_SCALE = "(1 + cosine) / 2 in [0, 1], as hloc (binary: 1 - hamming / bits)"


def unpack_bits_pm1(desc: torch.Tensor) -> torch.Tensor:
    """Packed uint8 bits (..., D/8) -> float32 (..., D) with +1 for a set bit and -1 for a clear one."""
    bits = desc.to(torch.uint8)[..., None] & desc.new_tensor(_BIT_WEIGHTS, dtype=torch.uint8)
    return (bits > 0).flatten(-2).to(torch.float32) * 2.0 - 1.0


def _similarity_and_distance_fns(desc0: torch.Tensor, desc1: torch.Tensor, binary: bool):
    """(B, N, M) similarity; functions similarity -> distance and similarity -> score."""
    if binary:
        if desc0.dtype != torch.uint8 or desc1.dtype != torch.uint8:
            raise InputError(f"binary matching needs packed uint8 descriptors, got {desc0.dtype} and {desc1.dtype}")
        b0, b1 = unpack_bits_pm1(desc0), unpack_bits_pm1(desc1)
        bits = b0.shape[-1]
        sim = b0 @ b1.transpose(-1, -2)  # bits - 2 * hamming, exact in float32 for < 2**24 bits

        def distance(s):
            return (bits - s) * 0.5

        def score(s):
            return 0.5 * (1.0 + s / bits)  # (1 + cos) / 2 of the +-1 vectors = 1 - hamming / bits
        return sim, distance, score
    if desc0.dtype == torch.uint8 or desc1.dtype == torch.uint8:
        raise InputError("uint8 (binary) descriptors need binary=True (Hamming distance); got float matching")
    d0 = F.normalize(desc0.to(torch.float32), dim=-1)
    d1 = F.normalize(desc1.to(torch.float32), dim=-1)
    sim = d0 @ d1.transpose(-1, -2)

    def distance(s):
        return (2.0 - 2.0 * s).clamp(min=0.0).sqrt()

    def score(s):
        return 0.5 * (1.0 + s)  # hloc's scale
    return sim, distance, score


def _as_torch(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if isinstance(x, torch.Tensor):
        return x
    raise InputError(f"{name} must be a numpy array or a torch tensor, got {type(x).__name__}")


def match_descriptors(desc0, desc1, mutual: bool = True, ratio: float | None = None,
                      distance_threshold: float | None = None, binary: bool = False, mask0=None, mask1=None,
                      ratio_test: str = "symmetric"):
    """Match each descriptor of image 0 to its nearest neighbour in image 1, with optional filters.

    A match i -> j = argmax_j similarity(i, j) is kept when all enabled tests pass:
    - ``mutual``: i is also the nearest neighbour of j in image 0;
    - ``ratio``: Lowe's test ``dist(i, j) < ratio * dist(i, j2)`` with j2 the second-nearest neighbour (distances:
      L2 of unit vectors for float, Hamming for binary); a row with a single valid candidate passes.
      ``ratio_test="symmetric"`` (default, hloc's ``NearestNeighbor`` with ``do_mutual_check``): with ``mutual``,
      j must also pass the test among the descriptors of image 0, and, as in hloc, the test is off when either
      image has a single descriptor; without ``mutual`` it is the one-way test (as in hloc).
      ``"one-way"``: image 0 -> 1 only (featlab's earlier default). One difference from hloc stays: hloc keeps a match
      when ``dist(i, j) <= ratio * dist(i, j2)``, featlab needs ``<``, so two equally near candidates (e.g.
      duplicated descriptors) always fail here;
    - ``distance_threshold``: ``dist(i, j) <= distance_threshold`` (L2 of unit vectors for float descriptors,
      Hamming distance in bits for binary ones).
    Padded entries (``mask == False``) are never matched and never chosen as neighbours.

    Args:
        desc0: (B, N, D) or (N, D) float descriptors, or uint8 packed bits when ``binary``; numpy or torch.
        desc1: (B, M, D) or (M, D), same kind as ``desc0``.
        mask0: optional bool (B, N) / (N,): valid entries of desc0.
        mask1: optional bool (B, M) / (M,).
    Returns:
        matches0: int64 (B, N) (or (N,)): index into desc1, -1 when unmatched.
        scores0: float32 (B, N): hloc's score ``(1 + cos) / 2`` in [0, 1] (binary: ``1 - hamming / bits``) of the
            match, 0 when unmatched. numpy in, numpy out; torch in, torch out (on the input's device).
    """
    if ratio_test not in RATIO_TESTS:
        raise ConfigError(f"ratio_test must be one of {', '.join(RATIO_TESTS)}, got {ratio_test!r}")
    is_numpy = isinstance(desc0, np.ndarray)
    d0, d1 = _as_torch(desc0, "desc0"), _as_torch(desc1, "desc1")
    if d0.ndim != d1.ndim or d0.ndim not in (2, 3):
        raise InputError(f"descriptors must both be (N, D) or (B, N, D), got {tuple(d0.shape)} and {tuple(d1.shape)}")
    unbatched = d0.ndim == 2
    if unbatched:
        d0, d1 = d0[None], d1[None]
    if d0.shape[0] != d1.shape[0]:
        raise InputError(f"batch sizes differ: {d0.shape[0]} and {d1.shape[0]}")
    if d0.shape[-1] != d1.shape[-1]:
        raise InputError(f"descriptor sizes differ: {d0.shape[-1]} and {d1.shape[-1]} (features from different "
                         "extractors?)")
    b, n, m = d0.shape[0], d0.shape[1], d1.shape[1]
    m0 = _as_torch(mask0, "mask0").to(d0.device, torch.bool) if mask0 is not None else None
    m1 = _as_torch(mask1, "mask1").to(d0.device, torch.bool) if mask1 is not None else None
    if unbatched:
        m0 = m0[None] if m0 is not None else None
        m1 = m1[None] if m1 is not None else None
    for mk, size, name in ((m0, n, "mask0"), (m1, m, "mask1")):
        if mk is not None and tuple(mk.shape) != (b, size):
            raise InputError(f"{name} must have shape {(b, size)}, got {tuple(mk.shape)}")

    matches = torch.full((b, n), -1, dtype=torch.int64, device=d0.device)
    scores = torch.zeros((b, n), dtype=torch.float32, device=d0.device)
    if n > 0 and m > 0:
        sim, distance, score = _similarity_and_distance_fns(d0, d1, binary)
        if m0 is not None or m1 is not None:
            valid = torch.ones_like(sim, dtype=torch.bool)
            if m0 is not None:
                valid &= m0[:, :, None]
            if m1 is not None:
                valid &= m1[:, None, :]
            sim = sim.masked_fill(~valid, float("-inf"))
        top, nn01 = sim.topk(min(2, m), dim=-1)  # (B, N, k)
        best = top[..., 0]
        keep = torch.isfinite(best)  # rows with at least one valid candidate
        symmetric = ratio_test == "symmetric" and mutual
        ratio_on = ratio is not None and not (symmetric and min(n, m) == 1)  # hloc: off with a single descriptor
        if mutual:
            # column-wise neighbours on a contiguous transposed copy: reductions along the last axis are several
            # times faster than along a strided one (one copy instead of two column passes)
            top10, nn10 = sim.transpose(-1, -2).contiguous().topk(min(2, n), dim=-1)  # (B, M, k)
            keep &= torch.gather(nn10[..., 0], 1, nn01[..., 0]) == torch.arange(n, device=d0.device)[None]
        if ratio_on:
            if m > 1:
                second = distance(top[..., 1])  # inf where no second valid candidate -> passes
                keep &= distance(best) < ratio * second
            if symmetric and n > 1:
                # where the mutual check holds, i is j's nearest neighbour: j's own test in image 0
                pass1 = distance(top10[..., 0]) < ratio * distance(top10[..., 1])  # (B, M)
                keep &= torch.gather(pass1, 1, nn01[..., 0])
        if distance_threshold is not None:
            keep &= distance(best) <= distance_threshold
        matches = torch.where(keep, nn01[..., 0], matches)
        scores = torch.where(keep, score(best), scores).to(torch.float32)

    if unbatched:
        matches, scores = matches[0], scores[0]
    if is_numpy:
        return matches.cpu().numpy(), scores.cpu().numpy()
    return matches, scores


def matches_to_indices(matches0):
    """(N,) matches of one image pair (or (1, N)) -> (idx0, idx1) of the matched pairs, same kind as the input."""
    if matches0.ndim == 2 and matches0.shape[0] == 1:
        matches0 = matches0[0]
    if matches0.ndim != 1:
        raise InputError(f"matches_to_indices expects the matches of one pair, (N,), got {tuple(matches0.shape)}")
    if isinstance(matches0, np.ndarray):
        idx0 = np.nonzero(matches0 >= 0)[0]
        return idx0.astype(np.int64), matches0[idx0].astype(np.int64)
    idx0 = torch.nonzero(matches0 >= 0)[:, 0]
    return idx0, matches0[idx0]


class Matcher:
    """Configured nearest-neighbour matcher on two contract dicts (see :mod:`featlab.extractors.base`)."""

    default_conf = {
        "mutual": True,  # keep only mutual nearest neighbours
        "ratio": checked(none_or(float), gt=0, le=1),  # Lowe's ratio test threshold on distances (e.g. 0.8), None: off
        "ratio_test": checked("symmetric", choices=RATIO_TESTS),  # symmetric (hloc's) | one-way (0 -> 1)
        "distance_threshold": none_or(float),  # max descriptor distance (L2 of unit vectors, or Hamming bits);
        # None: off
    }

    def __init__(self, conf: Mapping | None = None):
        self.conf = resolve_conf(self.default_conf, conf, "matcher")

    def __call__(self, pred0: Mapping, pred1: Mapping) -> dict:
        """Args: ``pred0``/``pred1`` with ``descriptors`` (B, N, D) float or uint8 packed bits and optionally
        ``keypoint_masks`` (B, N).

        Returns: ``matches0`` int64 (B, N0) (-1 unmatched) and ``matching_scores0`` float32 (B, N0).
        """
        d0, d1 = pred0["descriptors"], pred1["descriptors"]
        binary = (d0.dtype == torch.uint8) if isinstance(d0, torch.Tensor) else (d0.dtype == np.uint8)
        matches, scores = match_descriptors(
            d0, d1, mutual=self.conf.mutual,
            ratio=None if self.conf.ratio is None else float(self.conf.ratio),
            distance_threshold=None if self.conf.distance_threshold is None else float(self.conf.distance_threshold),
            binary=binary, mask0=pred0.get("keypoint_masks"), mask1=pred1.get("keypoint_masks"),
            ratio_test=self.conf.ratio_test)
        return {"matches0": matches, "matching_scores0": scores}
