"""Pictures people would rather look at than read: match images (OpenCV drawing, no display needed)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from .io.atomic import atomic_path
from .pixels import to_opencv

GREEN, RED, BLUE = (40, 200, 40), (230, 40, 40), (60, 120, 255)


def draw_matches(image0: np.ndarray, image1: np.ndarray, keypoints0: np.ndarray, keypoints1: np.ndarray,
                 correct: np.ndarray | None = None, max_lines: int = 400, title: str | None = None,
                 all_keypoints0: np.ndarray | None = None, all_keypoints1: np.ndarray | None = None,
                 seed: int = 0) -> np.ndarray:
    """Side-by-side RGB picture of matches.

    Args:
        image0, image1: (H, W, 3) uint8 RGB.
        keypoints0, keypoints1: (M, 2) matched points in featlab pixels (row i of each is one match).
        correct: (M,) bool; green for True, red for False, blue when None.
        max_lines: draw at most this many matches (a random subset, fixed by ``seed``).
        all_keypoints0/1: optional (N, 2) keypoints drawn as small dots.
    Returns:
        (max(H0, H1) + title band, W0 + W1 + gap, 3) uint8 RGB.
    """
    h0, w0 = image0.shape[:2]
    h1, w1 = image1.shape[:2]
    gap = 8
    band = 28 if title else 0
    canvas = np.full((max(h0, h1) + band, w0 + w1 + gap, 3), 255, np.uint8)
    canvas[band:band + h0, :w0] = image0
    canvas[band:band + h1, w0 + gap:] = image1
    off1 = np.array([w0 + gap, band], np.float64)
    off0 = np.array([0, band], np.float64)
    scale = 16  # cv2 sub-pixel drawing with shift=4

    def pt(p, off):
        q = (to_opencv(np.asarray(p, np.float64)) + off) * scale
        return int(round(q[0])), int(round(q[1]))

    for pts, off in ((all_keypoints0, off0), (all_keypoints1, off1)):
        if pts is not None:
            for p in pts:
                cv2.circle(canvas, pt(p, off), 2 * scale, (255, 200, 0), -1, cv2.LINE_AA, shift=4)
    m = len(keypoints0)
    idx = np.arange(m)
    if m > max_lines:
        idx = np.sort(np.random.default_rng(seed).choice(m, max_lines, replace=False))
    for i in idx:
        color = BLUE if correct is None else (GREEN if correct[i] else RED)
        a, b = pt(keypoints0[i], off0), pt(keypoints1[i], off1)
        cv2.line(canvas, a, b, color, 1, cv2.LINE_AA, shift=4)
        cv2.circle(canvas, a, 3 * scale, color, 1, cv2.LINE_AA, shift=4)
        cv2.circle(canvas, b, 3 * scale, color, 1, cv2.LINE_AA, shift=4)
    if title:
        cv2.putText(canvas, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    return canvas


def save_image(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image atomically (format from the suffix)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        ok = cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        if not ok:
            raise OSError(f"could not write image {path}")
    return path
