"""Random streams separated by role, so that no two uses of one seed ever draw the same numbers.

Every seeded stream in featlab is ``numpy.random.default_rng([seed, ROLE, k])`` for item ``k``: training samples,
model-selection (validation) samples and benchmark samples drawn with the same seed and the same index are
different, so a benchmark pair never repeats a warp the model was trained or selected on.
"""
from __future__ import annotations

import numpy as np

#: role codes: part of every seed sequence (never change a value: it would change every stream)
ROLES = {"train": 0, "select": 1, "benchmark": 2}


def role_rng(seed: int, role: str, *index: int) -> np.random.Generator:
    """The generator of item ``index`` of the stream ``(seed, role)``.

    Args:
        seed: base seed (>= 0).
        role: 'train' | 'select' | 'benchmark'.
        index: the item's index (and any further sub-indices, e.g. an epoch).
    Raises:
        ValueError: unknown role.
    """
    if role not in ROLES:
        raise ValueError(f"unknown random-stream role '{role}'; choose one of {', '.join(ROLES)}")
    return np.random.default_rng([int(seed), ROLES[role], *(int(i) for i in index)])


__all__ = ["ROLES", "role_rng"]
