"""Small text files of numbers (homographies, poses, intrinsics), read with errors that name the file."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError


def read_matrix_file(path: Path, shape: tuple[int, int], what: str) -> np.ndarray:
    """Read a whitespace-separated matrix of the given shape as float64; InputError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} file not found: {path}")
    try:
        M = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as e:
        raise InputError(f"malformed {what} file {path}: {e}") from None
    if M.shape != shape:
        raise InputError(f"malformed {what} file {path}: expected {shape[0]}x{shape[1]} numbers, got {M.shape}")
    return M
