"""Speed benchmark: extraction time per image and matching time per pair, per method and image size.

Timings are medians of ``repeats`` runs after one untimed warm-up run, measured with ``time.perf_counter``
around the extractor's forward pass on an already-resized image tensor (image decoding and resizing excluded)
and around mutual nearest-neighbour matching of the features of the image and of a rotated copy (so that the
matcher sees two different, realistic descriptor sets of the same size). CUDA work is synchronised before each
clock read. The torch thread count in force is recorded with the results.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Sequence

import cv2
import numpy as np
import torch

from ..io.image import image_to_tensor
from .cache import extractor_settings


def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rotated_copy(image: np.ndarray, angle: float = 10.0, scale: float = 0.9) -> np.ndarray:
    """The image rotated about its centre and zoomed out slightly (same size, replicated border)."""
    h, w = image.shape[:2]
    M = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    return cv2.warpAffine(image, M, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def time_call(fn, repeats: int, device: torch.device) -> tuple[float, list[float], Any]:
    """Median wall time (s) of ``fn()`` over ``repeats`` runs after one warm-up; also every time and the last
    output."""
    out = fn()  # warm-up: lazy init, allocator, kernel selection
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


@torch.no_grad()
def benchmark_method(extractor, image: np.ndarray, sizes: Sequence[tuple[int, int]], repeats: int) -> list[dict]:
    """Time one extractor at each size.

    Args:
        extractor: a built :class:`featlab.extractors.Extractor`.
        image: RGB uint8 (H, W, 3), resized to each size (exactly, aspect not kept).
        sizes: [(H, W)].
        repeats: timed runs per measurement.
    Returns:
        one dict per size: ``size``, ``extract_ms`` (median), ``extract_ms_all``, ``match_ms``, ``match_ms_all``,
        ``num_keypoints``, ``descriptor_dim``.
    """
    from ..matching import match_descriptors

    device = extractor.device
    binary = extractor.descriptor_type == "binary"
    rows = []
    for h, w in sizes:
        img0 = cv2.resize(image, (int(w), int(h)), interpolation=cv2.INTER_AREA)
        img1 = rotated_copy(img0)
        t0 = image_to_tensor(img0).to(device)
        t1 = image_to_tensor(img1).to(device)
        med_e, all_e, pred0 = time_call(lambda: extractor({"image": t0}), repeats, device)
        pred1 = extractor({"image": t1})
        d0, d1 = pred0["descriptors"][0], pred1["descriptors"][0]
        if len(d0) and len(d1):
            med_m, all_m, _ = time_call(lambda: match_descriptors(d0, d1, mutual=True, binary=binary), repeats,
                                        device)
        else:
            med_m, all_m = float("nan"), []
        rows.append({
            "size": [int(h), int(w)],
            "extract_ms": 1000 * med_e,
            "extract_ms_all": [1000 * t for t in all_e],
            "match_ms": 1000 * med_m,
            "match_ms_all": [1000 * t for t in all_m],
            "num_keypoints": int(pred0["keypoints"].shape[1]),
            "num_keypoints_match": int(pred1["keypoints"].shape[1]),
            "descriptor_dim": int(d0.shape[-1]) * (8 if binary else 1),  # bits for binary descriptors
        })
    return rows


def run_benchmark(methods: dict, image: np.ndarray, sizes: Sequence[tuple[int, int]], repeats: int) -> dict:
    """Time every method at every size; returns ``{"methods": {name: {"rows": [...], "extractor": ...}}}``."""
    results = {}
    for name, ext in methods.items():
        results[name] = {"rows": benchmark_method(ext, image, sizes, repeats), "extractor": extractor_settings(ext),
                         "device": str(ext.device)}
    return {"torch_threads": torch.get_num_threads(), "repeats": int(repeats),
            "sizes": [list(s) for s in sizes], "methods": results}


def markdown_report(result: dict, image_label: str) -> str:
    from .report import markdown_table

    header = ["method", "size (HxW)", "#kpts", "desc dim", "extract ms", "match ms"]
    rows = []
    for name, res in result["methods"].items():
        for r in res["rows"]:
            rows.append([name, f"{r['size'][0]}x{r['size'][1]}", r["num_keypoints"], r["descriptor_dim"],
                         r["extract_ms"], r["match_ms"]])
    return "\n".join([
        "# Speed", "",
        f"Image: {image_label}. Median of {result['repeats']} runs after a warm-up, torch threads: "
        f"{result['torch_threads']}. Extraction excludes decoding and resizing; matching is mutual nearest "
        "neighbour between the image and a rotated copy.", "",
        markdown_table(header, rows, digits=1), ""])
