"""Regenerate featlab/assets/demo: a synthetic homography pair made from scikit-image's `rocket` photo
(NASA, public domain). The pair is a synthetic warp (known H_0to1, featlab pixel convention), not a real capture.

    .venv/bin/python scripts/make_demo_assets.py
"""
from pathlib import Path

import cv2
import numpy as np
import skimage.data

from featlab.pixels import homography_to_opencv

out = Path(__file__).resolve().parents[1] / "featlab" / "assets" / "demo"
out.mkdir(parents=True, exist_ok=True)
img0 = skimage.data.rocket()  # (427, 640, 3) RGB
h, w = img0.shape[:2]
# a fixed viewpoint change: rotation ~12 deg, zoom 1.15, perspective tilt, shift (featlab pixels)
c = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1.0]])
a = np.deg2rad(12)
R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1.0]])
S = np.diag([1.15, 1.15, 1.0])
P = np.array([[1, 0, 0], [0, 1, 0], [3e-4, -2e-4, 1.0]])
T = np.array([[1, 0, w / 2 + 15], [0, 1, h / 2 - 10], [0, 0, 1.0]])
H = T @ P @ S @ R @ c
H /= H[2, 2]
img1 = cv2.warpPerspective(img0, homography_to_opencv(H), (w, h), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT)
# photometric change: darker, more contrast, a little noise
rng = np.random.default_rng(0)
img1 = np.clip(img1.astype(np.float32) * 0.8 + 10 + rng.normal(0, 3, img1.shape), 0, 255).astype(np.uint8)
cv2.imwrite(str(out / "image0.jpg"), cv2.cvtColor(img0, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
cv2.imwrite(str(out / "image1.jpg"), cv2.cvtColor(img1, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
np.savetxt(out / "H_0to1.txt", H, fmt="%.10e")
(out / "README.md").write_text(
    "# Demo pair (synthetic warp)\n\n"
    "`image0.jpg` is scikit-image's `rocket` photo (NASA, public domain). `image1.jpg` is a **synthetic warp** of it\n"
    "by the homography in `H_0to1.txt` (featlab pixel convention: centre of the top-left pixel at (0.5, 0.5)), plus a\n"
    "brightness/contrast change and Gaussian noise. Regenerate with `.venv/bin/python scripts/make_demo_assets.py`.\n")
print("wrote", out)
