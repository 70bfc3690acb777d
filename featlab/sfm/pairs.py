"""Which image pairs to match: all, a sequence window, or retrieval by a global descriptor.

Retrieval descriptor: VLAD (Jegou et al., CVPR 2010) of the images' own local descriptors, read from the features
file: a K-means vocabulary of ``clusters`` words fitted on a seeded sample of the collection's descriptors, per-word
residual sums, intra-normalisation (Arandjelovic and Zisserman, CVPR 2013), signed square root and L2. Why this
one: it runs on the CPU in about a second for a hundred images, needs no network weights (NetVLAD, OpenIBL or
DIR weights cannot be downloaded here, and featlab ships none), and works with the descriptors of any featlab model
(binary ones as +-1 vectors). Its weakness: the vocabulary is fitted per collection, so for a few images it is
coarse; with fewer images than ``K + 1`` retrieval is exhaustive matching.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from ..io.pairs import exhaustive_pairs, sequential_pairs

PAIR_MODES = ("exhaustive", "sequential", "retrieval")


def _as_float(desc: np.ndarray) -> np.ndarray:
    """(N, D) float descriptors; uint8 (binary, packed bits) become +-1 vectors of D*8."""
    if desc.dtype == np.uint8:
        return np.unpackbits(desc, axis=1).astype(np.float32) * 2 - 1
    return desc.astype(np.float32)


def kmeans(x: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Lloyd's K-means of (N, D) points, seeded K-means++ start; returns the (k, D) centres."""
    g = torch.Generator().manual_seed(int(seed))
    centres = [x[torch.randint(len(x), (1,), generator=g)].squeeze(0)]
    d2 = torch.full((len(x),), float("inf"))
    for _ in range(1, k):  # K-means++: each new centre drawn with probability ~ squared distance
        d2 = torch.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
        centres.append(x[torch.multinomial(d2 + 1e-12, 1, generator=g)].squeeze(0))
    c = torch.stack(centres)
    for _ in range(iters):
        assign = torch.cdist(x, c).argmin(1)
        for j in range(k):
            members = x[assign == j]
            if len(members):
                c[j] = members.mean(0)
    return c


def vlad_descriptors(descriptors: list[np.ndarray], clusters: int = 32, sample: int = 256, seed: int = 0) -> np.ndarray:
    """VLAD global descriptors (see the module doc).

    Args:
        descriptors: per image, (N_i, D) local descriptors (float, or uint8 packed binary).
        clusters: vocabulary size K (fewer when the collection has fewer sampled descriptors).
        sample: descriptors sampled per image for the vocabulary.
    Returns:
        (num_images, K * D) float32, L2-normalised (an image without descriptors gives zeros).
    """
    rng = np.random.default_rng(int(seed))
    feats = [torch.from_numpy(_as_float(d)) for d in descriptors]
    pool = torch.cat([f[rng.permutation(len(f))[:sample]] for f in feats if len(f)])
    if len(pool) == 0:
        return np.zeros((len(feats), 1), np.float32)
    k = int(min(clusters, len(pool)))
    centres = kmeans(pool, k, seed=seed)
    out = torch.zeros(len(feats), k, pool.shape[1])
    for i, f in enumerate(feats):
        if len(f) == 0:
            continue
        assign = torch.cdist(f, centres).argmin(1)
        out[i].index_add_(0, assign, f - centres[assign])
    out = torch.nn.functional.normalize(out, dim=2)  # intra-normalisation: no word dominates (bursts)
    out = out.flatten(1)
    out = out.sign() * out.abs().sqrt()
    return torch.nn.functional.normalize(out, dim=1).numpy()


def retrieval_pairs(names: list[str], global_descriptors: np.ndarray, k: int) -> list[tuple[str, str]]:
    """Each image with its ``k`` most similar others (cosine), as unique pairs in name order.

    Args:
        names: (M,) image names; global_descriptors: (M, G) L2-normalised.
    """
    if k < 1:
        raise ConfigError(f"retrieval needs K >= 1 neighbours, got {k}")
    sim = global_descriptors @ global_descriptors.T
    np.fill_diagonal(sim, -np.inf)
    order = {n: i for i, n in enumerate(names)}
    pairs = set()
    for i in range(len(names)):
        for j in np.argsort(-sim[i], kind="stable")[: min(k, len(names) - 1)]:
            a, b = sorted((i, int(j)))
            pairs.add((names[a], names[b]))
    return sorted(pairs, key=lambda p: (order[p[0]], order[p[1]]))


def select_pairs(names: list[str], mode: str, n: int | None = None, features=None,
                 seed: int = 0) -> list[tuple[str, str]]:
    """Pairs of ``names`` for ``mode``: 'exhaustive', 'sequential' (each image and its ``n`` successors in name
    order) or 'retrieval' (each image and its ``n`` nearest by VLAD of the descriptors in ``features``)."""
    if mode == "exhaustive":
        return exhaustive_pairs(names)
    if mode not in PAIR_MODES:
        raise ConfigError(f"--pairs must be one of exhaustive | sequential N | retrieval K, got '{mode}'")
    if n is None or n < 1:
        raise ConfigError(f"--pairs {mode} needs a positive number, e.g. --pairs {mode} 5")
    if mode == "sequential":
        return sequential_pairs(names, n)
    from ..io.h5 import read_features

    desc = [read_features(features, name)["descriptors"] for name in names]
    return retrieval_pairs(names, vlad_descriptors(desc, seed=seed), n)
