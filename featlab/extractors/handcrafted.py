"""Handcrafted extractors from OpenCV: SIFT, RootSIFT (optionally upright), ORB.

OpenCV keypoints use the (0, 0)-centred convention; they are converted to featlab pixels here, once.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..io.image import rgb_to_gray
from ..pixels import from_opencv
from .base import Extractor, register_extractor, stack_padded, top_k_keypoints


def _to_gray_uint8(image: torch.Tensor) -> list[np.ndarray]:
    gray = rgb_to_gray(image.float())
    return [(g[0].clamp(0, 1) * 255).round().byte().cpu().numpy() for g in gray]


def rootsift(desc: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then element-wise square root (unit L2 norm)."""
    desc = np.maximum(desc, 0)
    desc = desc / (desc.sum(1, keepdims=True) + eps)
    return np.sqrt(desc)


@register_extractor("sift", summary="OpenCV SIFT, 128-d (L2-normalised)")
@register_extractor("rootsift", preset={"root": True}, summary="OpenCV SIFT keypoints, RootSIFT descriptors")
@register_extractor("rootsift-upright", preset={"root": True, "upright": True},
                    summary="RootSIFT with all orientations set to 0 (upright)")
class SIFT(Extractor):
    """SIFT keypoints and descriptors (OpenCV)."""

    default_conf = {
        "root": False,  # RootSIFT descriptors
        "upright": False,  # drop orientation (one descriptor per location, angle 0)
        "n_octave_layers": 3,  # OpenCV nOctaveLayers
        "contrast_threshold": 0.04,  # OpenCV contrastThreshold (lower -> more keypoints)
        "edge_threshold": 10.0,  # OpenCV edgeThreshold
        "sigma": 1.6,  # OpenCV sigma of the first octave
    }

    def _init(self, conf):
        self._sift = cv2.SIFT_create(nfeatures=0, nOctaveLayers=conf.n_octave_layers,
                                     contrastThreshold=conf.contrast_threshold, edgeThreshold=conf.edge_threshold,
                                     sigma=conf.sigma)

    @property
    def descriptor_dim(self) -> int:
        return 128

    def detect_and_describe(self, gray: np.ndarray):
        """One uint8 gray image -> (keypoints (N, 2) featlab px, scores (N,), descriptors (N, 128), scales (N,),
        orientations (N,) in degrees)."""
        kps = self._sift.detect(gray, None)
        if self.conf.upright:
            # one keypoint per location: OpenCV duplicates locations with several dominant orientations
            seen, unique = set(), []
            for kp in kps:
                key = (round(kp.pt[0], 2), round(kp.pt[1], 2), round(kp.size, 2))
                if key not in seen:
                    seen.add(key)
                    kp.angle = 0.0
                    unique.append(kp)
            kps = unique
        # top-k before describing: description is the expensive part
        k = self.conf.max_keypoints
        if k is not None and k >= 0 and len(kps) > k:
            kps = sorted(kps, key=lambda p: -p.response)[:k]
        if kps:
            kps, desc = self._sift.compute(gray, kps)
        if not kps:
            return (np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 128), np.float32),
                    np.zeros(0, np.float32), np.zeros(0, np.float32))
        pts = from_opencv(np.array([kp.pt for kp in kps], dtype=np.float32))
        scores = np.array([kp.response for kp in kps], dtype=np.float32)
        scales = np.array([kp.size for kp in kps], dtype=np.float32)
        angles = np.array([kp.angle for kp in kps], dtype=np.float32)
        desc = desc.astype(np.float32)
        if self.conf.root:
            desc = rootsift(desc)
        else:
            desc = desc / (np.linalg.norm(desc, axis=1, keepdims=True) + 1e-8)
        return pts, scores, desc, scales, angles

    def _forward(self, data):
        items = []
        for gray in _to_gray_uint8(data["image"]):
            pts, scores, desc, scales, angles = self.detect_and_describe(gray)
            kp, sc, de, sz, an = top_k_keypoints(torch.from_numpy(pts), torch.from_numpy(scores),
                                                 torch.from_numpy(desc), torch.from_numpy(scales),
                                                 torch.from_numpy(angles), k=self.conf.max_keypoints)
            items.append({"keypoints": kp, "keypoint_scores": sc, "descriptors": de, "scales": sz,
                          "oris": an})
        return {k: v.to(data["image"].device) for k, v in stack_padded(items).items()}
