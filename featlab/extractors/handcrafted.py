"""Handcrafted extractors from OpenCV: SIFT, RootSIFT (optionally upright), ORB.

OpenCV keypoints use the (0, 0)-centred convention; they are converted to featlab pixels here, once.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from ..conf import checked
from ..io.image import rgb_to_gray
from ..pixels import from_opencv, to_opencv
from .base import Extractor, register_extractor, stack_padded, top_k_keypoints


def to_gray_uint8(image: torch.Tensor) -> list[np.ndarray]:
    gray = rgb_to_gray(image.float())
    return [(g[0].clamp(0, 1) * 255).round().byte().cpu().numpy() for g in gray]


def rootsift(desc: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """RootSIFT (Arandjelovic & Zisserman 2012): L1-normalise, then element-wise square root (unit L2 norm)."""
    desc = np.maximum(desc, 0)
    desc = desc / (desc.sum(1, keepdims=True) + eps)
    return np.sqrt(desc)


def _best_described(kps: tuple, desc: np.ndarray, k: int | None) -> tuple[list, np.ndarray]:
    """The k keypoints of highest response (all if k < 0), by decreasing response, with their descriptor rows,
    from OpenCV SIFT's ``detectAndCompute``.

    OpenCV's own top-k (``nfeatures``) keeps every tie with the k-th response and returns its keypoints in no
    defined order, so ties are broken here by the order ``detect`` gives (x, y ascending, size descending, angle
    ascending: OpenCV's de-duplication sort, unique per keypoint). The result is the two-pass ``detect`` ->
    best k -> ``compute``'s, keypoint for keypoint.
    """
    x, y, size, angle, response = np.array([(p.pt[0], p.pt[1], p.size, p.angle, p.response) for p in kps],
                                            dtype=np.float32).T
    detection_order = np.lexsort((angle, -size, y, x))
    order = detection_order[np.argsort(-response[detection_order], kind="stable")]
    if k is not None and k >= 0:
        order = order[:k]
    return [kps[i] for i in order], desc[order]


def dominant_orientations(gray: np.ndarray, keypoints: np.ndarray, size: float, bins: int = 36) -> np.ndarray:
    """SIFT's orientation assignment at given points and one scale: the peak of a histogram of gradient directions.

    As OpenCV's SIFT (``calcOrientationHist``) at ``kp.size = size``: scale ``s = size / 2``, the image blurred by
    ``s`` (the scale's Gaussian layer, approximately), gradients by central differences, directions measured with
    y up, weighted by magnitude and a Gaussian of sigma ``1.5 s`` inside radius ``round(4.5 s)``; ``bins`` bins,
    smoothed ([1, 4, 6, 4, 1] / 16, circular), the highest peak refined by a parabola. One orientation per point.

    Args:
        gray: (H, W) uint8 or float image; keypoints: (N, 2) featlab pixels; size: OpenCV keypoint size (px).
    Returns:
        (N,) float32 ``kp.angle`` values in degrees, OpenCV's convention (``360 - direction``, in [0, 360)), ready
        for :meth:`SIFT.describe`.
    """
    keypoints = np.asarray(keypoints, np.float64).reshape(-1, 2)
    if len(keypoints) == 0:
        return np.zeros(0, np.float32)
    scale = 0.5 * float(size)
    img = cv2.GaussianBlur(np.asarray(gray, np.float32), (0, 0), max(scale, 0.5))
    h, w = img.shape
    padded = np.pad(img, 1, mode="edge")
    dx = padded[1:-1, 2:] - padded[1:-1, :-2]
    dy = padded[:-2, 1:-1] - padded[2:, 1:-1]  # y up, as OpenCV
    mag, ori = np.hypot(dx, dy), np.degrees(np.arctan2(dy, dx)) % 360.0
    radius = max(int(round(4.5 * scale)), 1)
    off = np.arange(-radius, radius + 1)
    oy, ox = np.meshgrid(off, off, indexing="ij")
    weight = np.exp(-(ox ** 2 + oy ** 2) / (2 * (1.5 * scale) ** 2)).ravel()
    centre = np.round(to_opencv(keypoints)).astype(np.int64)  # the nearest pixel (array indices)
    cols = centre[:, :1] + ox.ravel()[None]
    rows = centre[:, 1:] + oy.ravel()[None]
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    cols, rows = cols.clip(0, w - 1), rows.clip(0, h - 1)
    votes = mag[rows, cols] * weight[None] * inside
    which = (ori[rows, cols] * bins / 360.0).astype(np.int64) % bins
    hist = np.zeros((len(keypoints), bins))
    np.add.at(hist, (np.arange(len(keypoints))[:, None].repeat(which.shape[1], 1), which), votes)
    kernel = np.array([1, 4, 6, 4, 1], np.float64) / 16.0
    hist = sum(kernel[k] * np.roll(hist, k - 2, axis=1) for k in range(5))
    peak = hist.argmax(1)
    n = np.arange(len(hist))
    left, mid, right = hist[n, (peak - 1) % bins], hist[n, peak], hist[n, (peak + 1) % bins]
    denom = left - 2 * mid + right
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (left - right) / np.where(denom == 0, 1, denom), 0.0)
    direction = ((peak + shift) * 360.0 / bins) % 360.0
    angle = (360.0 - direction) % 360.0
    return angle.astype(np.float32)


class OpenCVExtractor(Extractor):
    """Shared batch loop of the OpenCV extractors: subclasses implement ``detect_and_describe(gray uint8)`` ->
    (keypoints (N, 2) featlab px, scores (N,), descriptors (N, D), scales (N,), orientations (N,) degrees)."""

    def _forward(self, data):
        items = []
        for gray in to_gray_uint8(data["image"]):
            pts, scores, desc, scales, angles = self.detect_and_describe(gray)
            kp, sc, de, sz, an = top_k_keypoints(torch.from_numpy(pts), torch.from_numpy(scores),
                                                 torch.from_numpy(desc), torch.from_numpy(scales),
                                                 torch.from_numpy(angles), k=self.conf.max_keypoints)
            items.append({"keypoints": kp, "keypoint_scores": sc, "descriptors": de, "scales": sz,
                          "oris": an})
        return {k: v.to(data["image"].device) for k, v in stack_padded(items).items()}


@register_extractor("sift", summary="OpenCV SIFT, 128-d (L2-normalised)")
@register_extractor("rootsift", preset={"root": True}, summary="OpenCV SIFT keypoints, RootSIFT descriptors")
@register_extractor("rootsift-upright", preset={"root": True, "upright": True},
                    summary="RootSIFT with all orientations set to 0 (upright)")
class SIFT(OpenCVExtractor):
    """SIFT keypoints and descriptors (OpenCV).

    Pixel convention: OpenCV SIFT detects on a 2x-upsampled image and reports ``kp.pt = 0.5 * u`` for a position
    ``u`` in upsampled-pixel indices. By default that upsampling is pixel-centre aligned, so index ``u`` lies at
    OpenCV coordinate ``u / 2 - 0.25``: ``kp.pt`` is 0.25 px right of and below the true location, at every
    octave. Measured on Gaussian blobs at known sub-pixel centres (octaves -1..1): ``kp.pt + 0.5`` is off by
    +0.25 px, ``kp.pt + 0.25`` by < 0.01 px. With ``precise_upscale`` (index x -> 2x) the bias is gone and
    :func:`pixels.from_opencv` applies as is. To hand featlab keypoints back to this OpenCV SIFT (``compute``),
    use ``to_opencv(p) + opencv_bias``.
    """

    default_conf = {
        "root": False,  # RootSIFT descriptors
        "upright": False,  # drop orientation (one descriptor per location, angle 0)
        "n_octave_layers": checked(3, ge=1),  # OpenCV nOctaveLayers (0 crashes inside OpenCV)
        "contrast_threshold": checked(0.04, ge=0),  # OpenCV contrastThreshold (lower -> more keypoints)
        # OpenCV edgeThreshold r: rejects tr(H)^2/det(H) >= (r+1)^2/r, which is >= 4 for every point when r = 1
        "edge_threshold": checked(10.0, gt=1),
        "sigma": checked(1.6, gt=0),  # OpenCV sigma of the first octave
        "precise_upscale": False,  # OpenCV enable_precise_upscale: doubled image maps index x to 2x (see class doc)
    }

    def _init(self, conf):
        k = conf.max_keypoints
        # nfeatures=k: OpenCV keeps the best k (and any ties with the k-th response) before describing, so that
        # one detectAndCompute pass builds the pyramid once and describes only what is kept. Upright SIFT
        # describes in a second pass (angle 0 and one keypoint per location are set between the two), so it
        # must see every detection
        nfeatures = int(k) if k is not None and k > 0 and not conf.upright else 0
        self._sift = cv2.SIFT_create(nfeatures=nfeatures, nOctaveLayers=conf.n_octave_layers,
                                     contrastThreshold=conf.contrast_threshold, edgeThreshold=conf.edge_threshold,
                                     sigma=conf.sigma, enable_precise_upscale=bool(conf.precise_upscale))
        #: how far OpenCV's kp.pt lies right of / below the true location, in OpenCV's own pixels (class doc)
        self.opencv_bias = 0.0 if conf.precise_upscale else 0.25

    @property
    def descriptor_dim(self) -> int:
        return 128

    def _normalise(self, desc: np.ndarray) -> np.ndarray:
        desc = desc.astype(np.float32)
        if self.conf.root:
            return rootsift(desc)
        return desc / (np.linalg.norm(desc, axis=1, keepdims=True) + 1e-8)

    def describe(self, gray: np.ndarray, keypoints: np.ndarray, size: float, angles: np.ndarray | None = None):
        """(Root)SIFT descriptors of this extractor at given points, one size, given orientations.

        For keypoints that did not come from SIFT's detector (a learned detector's). Args: ``gray`` (H, W) uint8;
        ``keypoints`` (N, 2) featlab pixels; ``size`` the OpenCV keypoint size (px) of all points; ``angles``
        (N,) OpenCV ``kp.angle`` degrees (None: :func:`dominant_orientations`; 0 when the extractor is upright).
        Returns (N, 128) float32, the normalisation of this extractor (RootSIFT or L2), in the input order.

        The points are handed to OpenCV in octave 0 (no 2x upsampling), where ``kp.pt`` is
        :func:`pixels.to_opencv` exactly (the 0.25 px bias of the class doc belongs to the upsampled octave -1).
        """
        keypoints = np.asarray(keypoints, np.float32).reshape(-1, 2)
        if len(keypoints) == 0:
            return np.zeros((0, 128), np.float32)
        if angles is None:
            angles = np.zeros(len(keypoints), np.float32) if self.conf.upright else \
                dominant_orientations(gray, keypoints, size)
        pts = to_opencv(keypoints)
        kps = [cv2.KeyPoint(float(x), float(y), float(size), float(a), 0.0, 0)
               for (x, y), a in zip(pts, np.asarray(angles, np.float32))]
        out, desc = self._sift.compute(gray, kps)
        if desc is None or len(out) != len(kps):
            raise RuntimeError(f"OpenCV SIFT described {0 if desc is None else len(out)} of {len(kps)} points")
        return self._normalise(desc)

    def detect_and_describe(self, gray: np.ndarray):
        """One uint8 gray image -> (keypoints (N, 2) featlab px, scores (N,), descriptors (N, 128), scales (N,),
        orientations (N,) in degrees)."""
        k = self.conf.max_keypoints
        if self.conf.upright:
            kps = self._sift.detect(gray, None)
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
            if k is not None and k >= 0 and len(kps) > k:
                kps = sorted(kps, key=lambda p: -p.response)[:k]
            if kps:
                kps, desc = self._sift.compute(gray, kps)
        else:
            kps, desc = self._sift.detectAndCompute(gray, None)
            if kps:
                kps, desc = _best_described(kps, desc, k)
        if not kps:
            return (np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 128), np.float32),
                    np.zeros(0, np.float32), np.zeros(0, np.float32))
        pts = from_opencv(np.array([kp.pt for kp in kps], dtype=np.float32) - np.float32(self.opencv_bias))
        scores = np.array([kp.response for kp in kps], dtype=np.float32)
        scales = np.array([kp.size for kp in kps], dtype=np.float32)
        angles = np.array([kp.angle for kp in kps], dtype=np.float32)
        return pts, scores, self._normalise(desc), scales, angles



@register_extractor("orb", summary="OpenCV ORB, 256-bit binary descriptors (Hamming distance)")
class ORB(OpenCVExtractor):
    """ORB keypoints (oriented FAST, Harris-ranked) and rBRIEF binary descriptors (OpenCV).

    Descriptors are packed bits: uint8 (B, N, 32) for 256 bits, matched with the Hamming distance
    (``descriptor_type == "binary"``); they are not L2-normalised float vectors.

    Pixel convention: OpenCV reports a keypoint found on pyramid level ``o`` at ``p * s`` with ``p`` its integer
    pixel index in the level image and ``s = scale_factor ** o``. The level image is a pixel-centre-aligned resize
    of the image to ``round(W / s) x round(H / s)``, so the centre of its pixel ``p`` lies at
    ``(p + 0.5) * (W / round(W / s), H / round(H / s))`` in featlab pixels, not at ``kp.pt + 0.5`` (up to ~1.5 px
    apart on level 7). Checked on an image and its mirror image: per level, x + x_mirror - W has median 0 with this
    mapping and grows with the level (to -2.5 px) with ``kp.pt + 0.5``. Level 0 reduces to
    :func:`pixels.from_opencv`.
    """

    descriptor_type = "binary"
    default_conf = {
        "scale_factor": checked(1.2, gt=1),  # OpenCV scaleFactor: ratio between pyramid levels
        "n_levels": checked(8, ge=1),  # OpenCV nlevels: number of pyramid levels
        # OpenCV fastThreshold: FAST intensity threshold on 8-bit images (lower -> more keypoints)
        "fast_threshold": checked(20, ge=0, le=255),
        "edge_threshold": checked(31, ge=0),  # OpenCV edgeThreshold: border (px) without keypoints; keep >= patch_size
        "patch_size": checked(31, ge=2),  # OpenCV patchSize: side of the oriented BRIEF patch at level 0 (1 asserts)
        # OpenCV nfeatures: detection budget spread over the levels (Harris-ranked per level) before the global top
        # max_keypoints by Harris response are described
        "n_features": checked(100000, ge=1),
    }

    def _init(self, conf):
        self._orb = cv2.ORB_create(nfeatures=int(conf.n_features), scaleFactor=float(conf.scale_factor),
                                   nlevels=int(conf.n_levels), edgeThreshold=int(conf.edge_threshold),
                                   firstLevel=0, WTA_K=2, scoreType=cv2.ORB_HARRIS_SCORE,
                                   patchSize=int(conf.patch_size), fastThreshold=int(conf.fast_threshold))

    @property
    def descriptor_dim(self) -> int:
        """Number of bits (the descriptors hold ``descriptor_dim // 8`` bytes)."""
        return 256

    def detect_and_describe(self, gray: np.ndarray):
        """One uint8 gray image -> (keypoints (N, 2) featlab px, scores (N,), descriptors uint8 (N, 32),
        scales (N,) (OpenCV ``kp.size``: patch diameter in image pixels, as SIFT), orientations (N,) in degrees)."""
        empty = (np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros((0, 32), np.uint8),
                 np.zeros(0, np.float32), np.zeros(0, np.float32))
        kps = self._orb.detect(gray, None)
        # top-k before describing (as SIFT): ORB's own budget is split per level, the ranking here is global
        k = self.conf.max_keypoints
        if k is not None and k >= 0 and len(kps) > k:
            kps = sorted(kps, key=lambda p: -p.response)[:k]
        if kps:
            kps, desc = self._orb.compute(gray, kps)
        if not kps or desc is None:
            return empty
        octaves = np.array([kp.octave for kp in kps], dtype=np.float64)
        scales = np.power(float(self.conf.scale_factor), octaves)
        pts_cv = np.array([kp.pt for kp in kps], dtype=np.float64)
        # OpenCV gives p * s for the integer index p in level o, whose size is round((W, H) / s): convert in the
        # level's own pixels, then scale by the level's true size ratio (both span the image, pixels.scale_points)
        h, w = gray.shape[:2]
        level_wh = np.rint(np.array([w, h], dtype=np.float64)[None] / scales[:, None])
        pts = from_opencv(np.rint(pts_cv / scales[:, None])) * (np.array([w, h])[None] / level_wh)
        pts = pts.astype(np.float32)
        sizes = np.array([kp.size for kp in kps], dtype=np.float32)
        scores = np.array([kp.response for kp in kps], dtype=np.float32)
        angles = np.array([kp.angle for kp in kps], dtype=np.float32)
        return pts, scores, np.ascontiguousarray(desc, dtype=np.uint8), sizes, angles

