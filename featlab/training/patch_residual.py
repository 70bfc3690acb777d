"""Training task of the residual descriptor v2 (:mod:`featlab.extractors.patch_residual`): ``featlab train
residual-v2``.

Self-supervised, on a CPU. Sample ``i`` (step s, pair b: i = s * pairs_per_step + b) draws all its randomness from
``featlab.rng.role_rng(seed, "train", i)`` and its photo from a per-epoch permutation (:class:`loop.EpochShuffle`):

1. a crop of the photo (``data.image_size``) and its warp by a random homography: the sampler's ``overlap`` mode
   (:mod:`featlab.datasets.homographies`; scale on both sides of 1, perspective, centre shift) composed with an
   in-plane rotation about the image centre uniform in +-``data.rotation`` degrees (the sampler allows < 90; the
   benchmarks' hard preset reaches 60 and real views any angle), then independent photometric changes; image 1's
   empty border stays black (as the synthetic-warp benchmark);
2. g (RootSIFT) on both images; positives: keypoint pairs whose ground-truth reprojection is within
   ``data.match_radius`` px and that are mutual nearest under it
   (:func:`featlab.training.residual.homography_correspondences`). Each keypoint keeps its own detected frame, so
   h learns the detector's real noise in position, scale and orientation;
3. the oriented patches of at most ``data.max_positives`` positives per pair, cut once here
   (:func:`featlab.extractors.patch_residual.extract_patches`).

Loss: hardest-in-batch triplet in both directions over all positives of the step
(:func:`featlab.losses.hardnet.hardest_in_batch_loss`, margin 1): a margin relaxation of "each positive is a
mutual nearest neighbour", the condition mutual-NN matching needs. Negatives from the same pair within
``loss.negative_radius`` px of the positive (in either image) are excluded: they are correct matches for MMA@3.

Validation and fusion (the selection split only, role "select"): fixed synthetic warps of ``val.photos`` under
each benchmark preset of ``val.presets`` at ``val.image_size`` with ``val.max_keypoints`` keypoints (the benchmark
setting, 480x640 / 1000). Each validation describes them with h, then fits the fusion weights (a, b) = (cos phi,
sin phi) on a grid of ``val.fusion_steps`` angles in [0, 90] deg by maximising the mean MMA@3 of mutual nearest
neighbour matches among the fusions that keep at least ``val.min_correct`` times g's mean number of correct
matches (MMA is a precision: without that guard a near-constant h wins by matching less), and stores them in the
model (so every saved weights file carries its fitted fusion; ties go to the smaller b, i.e. towards g).
Metrics: ``mma@3`` (fused, fitted), ``g_mma@3`` (RootSIFT alone), ``h_mma@3`` (h alone), ``fusion_b`` (b with
a^2 + b^2 = 1), the same per preset (``mma@3/hard``...), and the mean number of mutual matches and of correct
ones of each (``matches``, ``correct@3``, ``g_matches``...). ``phi<deg>/mma@3`` and ``phi<deg>/correct@3``:
every fusion tried. The best weights are selected by ``mma@3``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..conf import none_or, resolve_conf, to_container
from ..datasets import homographies
from ..datasets.synthetic import SyntheticHomographyPairs, preset_conf, resize_and_crop, warp_image
from ..errors import ConfigError
from ..extractors.patch_residual import (PatchResidualNet, extract_patches, fusion_from_angle, select_keypoints,
                                         load_patch_residual_weights, save_patch_residual_weights)
from ..io.image import image_to_tensor, list_images, read_image, rgb_to_gray
from ..losses.hardnet import hardest_in_batch_loss, infonce_loss
from ..losses.selector import selector_loss
from ..nn.selector import selector_features
from ..rng import role_rng
from . import hooks, loop
from .residual import add_arguments, apply_arguments, check_conf, homography_correspondences  # noqa: F401

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "residual-v2.yaml"
SUMMARY = "residual descriptor v2: RootSIFT + learned oriented-patch descriptor, fitted fusion"

default_conf = {
    "model": PatchResidualNet.default_conf,  # patch geometry and h, see featlab.extractors.patch_residual
    "handcrafted": {
        "name": "rootsift",  # g: a registered OpenCV SIFT-family extractor (gives scales and orientations)
        "max_keypoints": 1000,  # keypoints per training image
        "conf": none_or(dict),  # other keys of g's own config
    },
    "data": {
        "photos": [],  # training photo folders (CLI --photos; configs/residual-v2.yaml: the split rule's)
        "allow_eval_data": False,  # true: allow training/selecting on evaluation-only data (featlab.datasets.splits)
        "image_size": [480, 640],  # [H, W] of both images of a pair (the benchmark setting)
        "pairs_per_step": 3,  # image pairs per optimiser step (their positives form one batch)
        "max_positives": 320,  # positives kept per pair (random subset): up to 3 x 320 per step
        # other detected keypoints per image used as negatives only (mutual-NN matching meets all of them): first
        # those g confuses with a kept positive (g's nearest neighbour of its partner), then random ones
        "max_distractors": 0,
        "match_radius": 2.0,  # px: ground-truth reprojection radius of a positive (mutual nearest under it)
        "rotation": 180.0,  # deg: extra in-plane rotation about the image centre, uniform in +-rotation
        "homography": {**homographies.default_conf, "mode": "overlap", "rotation": 0.0, "scale": [0.5, 2.0],
                       "perspective": 0.3, "translation": 0.2},  # featlab.datasets.homographies
        "photometric": homographies.photometric_default_conf,  # applied independently to both images
        "num_workers": 0,  # DataLoader worker processes (0: in the training process, one core)
        "max_candidates": 4096,  # selector: detections per image it learns from (random subset beyond)
        "selector_radius": 3.0,  # px: a detection is matchable when it has a partner this close (MMA@3's radius)
    },
    "val": {
        "photos": none_or(str, Path),  # selection photos (CLI --val-photos; configs/residual-v2.yaml: bsds500/val)
        "presets": ["moderate", "hard"],  # benchmark warp presets (featlab.datasets.homographies.PRESETS)
        "num_pairs": 25,  # pairs per preset (first photos by path, centre crops)
        "seed": 1234,  # seed of the validation warps (preset k uses seed + k), role "select"
        "image_size": [480, 640],  # [H, W]: the benchmark setting
        "max_keypoints": 1000,  # g's keypoints per validation image (the benchmark setting)
        "threshold": 3.0,  # px: MMA threshold of the fit and of the reported metric
        "fusion_steps": 16,  # angles phi in [0, 90] deg tried for (a, b) = (cos phi, sin phi)
        # a fusion qualifies only if its mean number of correct matches is at least this fraction of g's: MMA is a
        # precision, and a near-constant h (the untrained net) scores a high MMA@3 on fewer matches (measured
        # 0.887 on 415 correct vs RootSIFT's 0.844 on 456); b = 0 always qualifies
        "min_correct": 1.0,
    },
    "loss": {
        # hardest: hardest-in-batch hinge (featlab.losses.hardnet.hardest_in_batch_loss); infonce: softmax over all
        # candidates (infonce_loss)
        "kind": "hardest",
        "margin": 1.0,  # hinge margin (hardest)
        "temperature": 0.05,  # softmax temperature on cosine similarities (infonce)
        # deg: the loss sees the fused descriptor L2norm([cos(phi) g, sin(phi) h]) with this fixed phi, so h learns
        # what g misses; null: h alone
        "fusion_angle": none_or(float),
        "negative_radius": 3.0,  # px: same-pair keypoints this close to the positive are never negatives
    },
    "train": loop.default_conf,  # optimiser, steps, checkpoints, threads, time budget: featlab.training.loop
}


def rotation_about_centre(degrees: float, image_size) -> np.ndarray:
    """(3, 3) homography rotating featlab pixels by ``degrees`` (x towards y) about the centre of an (H, W) image."""
    h, w = (float(v) for v in image_size)
    t = math.radians(degrees)
    c, s = math.cos(t), math.sin(t)
    cx, cy = w / 2.0, h / 2.0
    return np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy], [0.0, 0.0, 1.0]])


def fit_fusion(mma: np.ndarray, matches: np.ndarray, min_correct: float = 1.0) -> int:
    """Index of the fusion to keep: the highest mean MMA among those whose mean number of correct matches is at
    least ``min_correct`` times that of fusion 0 (g alone, always allowed); the first one on ties.

    Args:
        mma: (pairs, fusions) MMA of each validation pair under each fusion (column 0: b = 0).
        matches: (pairs, fusions) number of mutual matches it was measured on.
    """
    correct = (mma * matches).mean(0)
    admissible = correct >= min_correct * correct[0] - 1e-9
    admissible[0] = True
    return int(np.argmax(np.where(admissible, mma.mean(0), -np.inf)))


def _pad(array: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array[:n]
    return out


# --------------------------------------------------------------------------------------------------- dataset
class PatchPairStream(Dataset):
    """Training samples by global index (unbounded): the positives of one warped pair, as patches.

    Item (numpy, fixed shapes so that the default collate stacks them; K = data.max_positives, P = patch size)::

        patches0, patches1      float32 (K, 1, P, P) grey patches of the positives in image 0 / image 1
        keypoints0, keypoints1  float32 (K, 2) featlab pixels of those keypoints
        gdesc0, gdesc1          float32 (K, G) g's descriptors of those keypoints
        masks                   bool (K,): False for padding
        extra_*0, extra_*1      the same for E = data.max_distractors other keypoints per image (patches,
                                keypoints, gdesc), extra_masks0, extra_masks1 bool (E,)
        num_keypoints           int64 (2,) g's keypoints in image 0 and image 1
    """

    def __init__(self, photos: list[Path], conf, seed: int):
        if not photos:
            raise ConfigError("no training photos: pass --photos DIR (or set data.photos)")
        self.photos = list(photos)
        self.conf = conf
        self.seed = int(seed)
        self.size = tuple(int(v) for v in conf.data.image_size)
        self.k = int(conf.data.max_positives)
        self._homography_conf = to_container(conf.data.homography)
        self._photometric_conf = to_container(conf.data.photometric)
        homographies._resolve("homography", self._homography_conf)  # bad values fail now, not in a worker
        self._g = None  # OpenCV objects are built in the process that uses them
        self._shuffle = loop.EpochShuffle(self.seed)

    def __getstate__(self):
        return {**self.__dict__, "_g": None}

    def __len__(self) -> int:  # nominal: indices are global sample numbers
        return len(self.photos)

    @property
    def g(self):
        if self._g is None:
            if self.conf.train.num_threads:  # also in a (spawned) DataLoader worker: one core per process
                cv2.setNumThreads(int(self.conf.train.num_threads))
            # the selector learns to rank all of g's detections; h trains on g's own top max_keypoints of them
            k = -1 if self.conf.model.selector_hidden else int(self.conf.handcrafted.max_keypoints)
            self._g = build_g(self.conf.handcrafted, k)
        return self._g

    def warped_pair(self, rng: np.random.Generator, photo: np.ndarray):
        """-> (image0, image1 uint8 (H, W, 3), H_0to1 (3, 3)), image 1's empty border black."""
        image0 = resize_and_crop(photo, self.size, rng)
        H = homographies.sample_homography(rng, self.size, self._homography_conf)
        H = rotation_about_centre(float(self.conf.data.rotation) * rng.uniform(-1.0, 1.0), self.size) @ H
        H = H / H[2, 2]
        image1 = warp_image(image0, H, self.size, "constant")
        image0 = homographies.photometric_augment(rng, image0, self._photometric_conf)
        image1 = homographies.photometric_augment(rng, image1, self._photometric_conf)
        seen = warp_image(np.ones(self.size, np.uint8), H, self.size, "constant")
        image1[seen == 0] = 0
        return image0, image1, H

    def __getitem__(self, index: int) -> dict:
        rng = role_rng(self.seed, "train", int(index))
        photo = read_image(self.photos[self._shuffle(int(index), len(self.photos))])
        image0, image1, H = self.warped_pair(rng, photo)
        f0, f1 = describe(self.g, image0), describe(self.g, image1)
        out = {}
        if self.conf.model.selector_hidden:
            out.update(self.selector_sample(f0, f1, H, rng))
            f0, f1 = (top_by_response(f, int(self.conf.handcrafted.max_keypoints)) for f in (f0, f1))
        matches0 = homography_correspondences(f0["keypoints"].numpy(), f1["keypoints"].numpy(), H,
                                              float(self.conf.data.match_radius), f0["descriptors"].numpy(),
                                              f1["descriptors"].numpy())
        idx0 = np.nonzero(matches0 >= 0)[0]
        if len(idx0) > self.k:
            idx0 = np.sort(rng.permutation(idx0)[: self.k])
        idx1 = matches0[idx0]
        e = int(self.conf.data.max_distractors)
        extra0 = distractors(f0["descriptors"].numpy(), f1["descriptors"].numpy()[idx1], idx0, e, rng)
        extra1 = distractors(f1["descriptors"].numpy(), f0["descriptors"].numpy()[idx0], idx1, e, rng)
        p = self.conf.model.patch
        for name, f, idx, extra in (("0", f0, idx0, extra0), ("1", f1, idx1, extra1)):
            t = torch.from_numpy(np.concatenate([idx, extra]))
            patches = extract_patches(f["gray"], f["keypoints"][t], f["scales"][t], f["oris"][t], int(p.size),
                                      float(p.window), int(p.levels)).numpy()
            n = len(idx)
            for prefix, rows, size in (("", slice(0, n), self.k), ("extra_", slice(n, None), e)):
                out[prefix + "patches" + name] = _pad(patches[rows], size)
                out[prefix + "keypoints" + name] = _pad(f["keypoints"][t[rows]].numpy(), size)
                out[prefix + "gdesc" + name] = _pad(f["descriptors"][t[rows]].numpy(), size)
            out["extra_masks" + name] = np.arange(e) < len(extra)
        out["masks"] = np.arange(self.k) < len(idx0)
        out["num_keypoints"] = np.array([len(f0["keypoints"]), len(f1["keypoints"])], dtype=np.int64)
        return out


    def selector_sample(self, f0: dict, f1: dict, H: np.ndarray, rng: np.random.Generator) -> dict:
        """Selector inputs and labels of all detections of both images (at most ``data.max_candidates`` each, a
        random subset beyond): ``selector_features{0,1}`` (C, 3 + D), ``selector_labels{0,1}`` (C,) 1 when the
        detection has a ground-truth partner among the other image's detections (mutually closest within
        ``data.selector_radius`` px), ``selector_masks{0,1}`` (C,)."""
        c, r = int(self.conf.data.max_candidates), float(self.conf.data.selector_radius)
        out = {}
        for name, fa, fb, Hab in (("0", f0, f1, H), ("1", f1, f0, np.linalg.inv(H))):
            partner = homography_correspondences(fa["keypoints"].numpy(), fb["keypoints"].numpy(), Hab, r,
                                                 fa["descriptors"].numpy(), fb["descriptors"].numpy())
            rows = np.arange(len(partner))
            if len(rows) > c:
                rows = np.sort(rng.permutation(rows)[:c])
            feats = selector_features(fa["keypoints"], fa["responses"], fa["scales"], fa["descriptors"],
                                      fa["image_size"])
            out["selector_features" + name] = _pad(feats.numpy()[rows], c)
            out["selector_labels" + name] = _pad((partner[rows] >= 0).astype(np.float32), c)
            out["selector_masks" + name] = np.arange(c) < len(rows)
        return out


def top_by_response(f: dict, k: int) -> dict:
    """g's own top-k of a :func:`describe` result (its rows are sorted by decreasing response)."""
    if k < 0:
        return f
    return {key: (v if key in ("gray", "image_size") else v[:k]) for key, v in f.items()}


def distractors(desc: np.ndarray, partner_desc: np.ndarray, positives: np.ndarray, n: int,
                rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``n`` keypoints of an image that are not among ``positives``: first those that are g's
    nearest neighbour of some positive's partner (the wrong matches g would make), then random others.

    Args:
        desc: (N, G) g's descriptors of the image's keypoints; partner_desc: (M, G) of the positives' partners in
            the other image; positives: (M,) indices of the positives in this image.
    Returns:
        (<= n,) int64 indices, sorted.
    """
    free = np.ones(len(desc), bool)
    free[positives] = False
    if n <= 0 or not free.any():
        return np.zeros(0, np.int64)
    confused = np.zeros(0, np.int64)
    if len(partner_desc):
        nearest = (partner_desc @ desc.T).argmax(1)  # unit rows: largest dot product = nearest
        confused = np.unique(nearest[free[nearest]])
    confused = rng.permutation(confused)[:n]
    free[confused] = False
    rest = rng.permutation(np.nonzero(free)[0])[: n - len(confused)]
    return np.sort(np.concatenate([confused, rest])).astype(np.int64)


def build_g(handcrafted, max_keypoints: int):
    """g from a ``handcrafted`` config section with ``max_keypoints``."""
    from ..extractors import build_extractor

    return build_extractor(handcrafted.name, {**(to_container(handcrafted.conf) or {}),
                                              "max_keypoints": int(max_keypoints)})


@torch.no_grad()
def describe(g, image: np.ndarray) -> dict:
    """g on one uint8 RGB image -> keypoints (N, 2), descriptors (N, D), responses (N,), scales (N,), oris (N,)
    (rows by decreasing response), gray (1, 1, H, W) float, image_size (W, H)."""
    t = image_to_tensor(image)
    pred = g({"image": t})
    if "scales" not in pred or "oris" not in pred:
        raise ConfigError(f"handcrafted {g.name!r} gives no keypoint scales and orientations")
    return {"keypoints": pred["keypoints"][0], "descriptors": pred["descriptors"][0].float(),
            "responses": pred["keypoint_scores"][0], "scales": pred["scales"][0], "oris": pred["oris"][0],
            "gray": rgb_to_gray(t), "image_size": (image.shape[1], image.shape[0])}


# ------------------------------------------------------------------------------------------------------ task
class PatchResidualTask(loop.TrainingTask):
    """Data, loss, validation and fusion fit of the residual descriptor v2 for :func:`loop.train`."""

    def __init__(self, conf):
        self.conf = conf = resolve_conf(default_conf, conf, "")
        d = conf.data
        if len(d.image_size) != 2 or min(int(v) for v in d.image_size) < 32:
            raise ConfigError(f"data.image_size must be [H, W] with sides >= 32, got {list(d.image_size)}")
        if int(d.pairs_per_step) < 1 or int(d.max_positives) < 2 or int(d.num_workers) < 0:
            raise ConfigError("data.pairs_per_step must be >= 1, data.max_positives >= 2, data.num_workers >= 0")
        if not 0.0 <= float(d.rotation) <= 180.0:
            raise ConfigError(f"data.rotation must be in [0, 180] degrees, got {d.rotation}")
        if int(conf.val.fusion_steps) < 2:
            raise ConfigError(f"val.fusion_steps must be >= 2, got {conf.val.fusion_steps}")
        if conf.loss.fusion_angle is not None and not 0.0 < float(conf.loss.fusion_angle) <= 90.0:
            raise ConfigError(f"loss.fusion_angle must be in (0, 90] degrees or null, got {conf.loss.fusion_angle}")
        if conf.loss.kind not in ("hardest", "infonce") or float(conf.loss.temperature) <= 0:
            raise ConfigError(f"loss.kind must be hardest or infonce and loss.temperature > 0, got "
                              f"{conf.loss.kind!r} and {conf.loss.temperature}")
        if int(d.max_distractors) < 0:
            raise ConfigError(f"data.max_distractors must be >= 0, got {d.max_distractors}")
        if float(conf.val.min_correct) < 0:
            raise ConfigError(f"val.min_correct must be >= 0, got {conf.val.min_correct}")
        unknown = [p for p in conf.val.presets if p not in homographies.PRESETS]
        if unknown:
            raise ConfigError(f"val.presets: unknown preset(s) {unknown}; choose from "
                              f"{', '.join(homographies.PRESETS)}")
        if conf.train.num_threads:  # OpenCV's pool too: "one thread" means one core for the whole run
            cv2.setNumThreads(int(conf.train.num_threads))
        self.model = PatchResidualNet(conf.model)
        photos = [p for folder in d.photos for p in list_images(folder)]
        self.dataset = PatchPairStream(photos, conf, seed=int(conf.train.seed))
        if self.dataset.g.descriptor_dim != int(conf.model.g_dim):
            raise ConfigError(f"handcrafted '{conf.handcrafted.name}' gives {self.dataset.g.descriptor_dim}-d "
                              f"descriptors but model.g_dim is {conf.model.g_dim}")
        self.val_pairs = self._make_val_pairs() if conf.val.photos else []
        self._g_metrics = None

    # ------------------------------------------------------------------------------------------------ data
    def batches(self, start_step: int) -> Iterator[dict]:
        # spawn: workers run OpenCV (see loop.iterate_batches)
        return loop.iterate_batches(self.dataset, self.conf.data.pairs_per_step, self.conf.data.num_workers,
                                    start_step, multiprocessing_context="spawn")

    def _make_val_pairs(self) -> list[dict]:
        c = self.conf.val
        # with a selector, all detections are kept: each validation selects val.max_keypoints of them
        g = build_g(self.conf.handcrafted, -1 if self.model.selector is not None else int(c.max_keypoints))
        out = []
        for k, preset in enumerate(c.presets):
            pairs = SyntheticHomographyPairs(c.photos, {
                "seed": int(c.seed) + k, "role": "select", "max_images": int(c.num_pairs), "crop": "center",
                "resize": list(c.image_size), **preset_conf(preset)})
            for item in pairs:
                f0, f1 = describe(g, item["image0"]), describe(g, item["image1"])
                for f in (f0, f1):  # grey images as uint8: a quarter of the memory, patches cut at each validation
                    f["gray"] = (f["gray"] * 255).round().to(torch.uint8)
                out.append({"preset": preset, "views": (f0, f1), "H_0to1": item["H_0to1"]})
        return out

    # ------------------------------------------------------------------------------------------------ steps
    def set_compute(self, dtype: str, channels_last: bool) -> None:
        self.model.h.set_channels_last(channels_last)

    def training_step(self, batch: dict, step: int):
        masks = batch["masks"]
        r = float(self.conf.loss.negative_radius)
        # positives of image 0, of image 1, then distractors of image 0, of image 1: (patches, keypoints, g, mask)
        groups = [("patches0", "keypoints0", "gdesc0", masks), ("patches1", "keypoints1", "gdesc1", masks)]
        if "extra_masks0" in batch and batch["extra_masks0"].shape[1]:
            groups += [("extra_patches0", "extra_keypoints0", "extra_gdesc0", batch["extra_masks0"]),
                       ("extra_patches1", "extra_keypoints1", "extra_gdesc1", batch["extra_masks1"])]
        sizes = [int(m.sum()) for *_, m in groups]
        d = self.model.h(torch.cat([batch[p][m] for p, _, _, m in groups]))  # one pass: one BatchNorm statistic
        phi = self.conf.loss.fusion_angle
        if phi is not None:  # the loss sees the fused descriptor: h learns what g misses
            a, b = fusion_from_angle(math.radians(float(phi)))
            gd = torch.cat([batch[g][m].float() for _, _, g, m in groups])
            d = F.normalize(torch.cat([a * gd, b * d], -1), dim=-1)
        descs = list(torch.split(d, sizes))
        kpts = [batch[k][m].float() for _, k, _, m in groups]
        pids = [torch.arange(m.shape[0], device=m.device)[:, None].expand_as(m)[m] for *_, m in groups]

        def blocked(i: int, j: int) -> torch.Tensor:  # same pair and within r px in the image of groups i and j
            near = torch.cdist(kpts[i], kpts[j], compute_mode="donot_use_mm_for_euclid_dist") < r
            return near & (pids[i][:, None] == pids[j][None, :])

        extra = {}
        if len(groups) == 4:
            extra = {"extra0": descs[2], "extra1": descs[3], "exclude_extra0": blocked(0, 2),
                     "exclude_extra1": blocked(1, 3)}
        exclude = blocked(0, 0) | blocked(1, 1)
        if self.conf.loss.kind == "infonce":
            loss, metrics = infonce_loss(descs[0], descs[1], exclude, float(self.conf.loss.temperature), **extra)
        else:
            loss, metrics = hardest_in_batch_loss(descs[0], descs[1], exclude, float(self.conf.loss.margin), **extra)
        metrics["positives_per_pair"] = masks.sum(1).float().mean()
        metrics["keypoints_per_image"] = batch["num_keypoints"].float().mean()
        if self.model.selector is not None:  # its own parameters: the sum trains both, independently
            feats = torch.cat([batch["selector_features0"], batch["selector_features1"]])
            s_masks = torch.cat([batch["selector_masks0"], batch["selector_masks1"]])
            logits = feats.new_zeros(feats.shape[:2], dtype=torch.float32)
            logits[s_masks] = self.model.selector(feats[s_masks].float())  # padding stays out of BatchNorm
            s_loss, s_metrics = selector_loss(
                {"selector_logits": logits},
                {"selector_labels": torch.cat([batch["selector_labels0"], batch["selector_labels1"]]),
                 "selector_masks": s_masks})
            metrics = {**metrics, "h_loss": loss.detach(), **s_metrics}
            loss = loss + s_loss
        return loss, metrics

    # ------------------------------------------------------------------------------------------- validation
    def _describe_val(self, view: dict) -> torch.Tensor:
        dev = self.model.fusion.device
        gray = view["gray"].to(dev).float() / 255.0
        patches = self.model.patches(gray, view["keypoints"].to(dev), view["scales"].to(dev), view["oris"].to(dev))
        return self.model.h(patches).float().cpu()

    def validate(self) -> dict[str, float]:
        from ..eval.metrics import mma
        from ..matching import match_descriptors

        if not self.val_pairs:
            return {}
        c = self.conf.val
        thr = float(c.threshold)
        phis = np.linspace(0.0, math.pi / 2, int(c.fusion_steps))
        scores = np.zeros((len(self.val_pairs), len(phis)))  # MMA@thr of pair i under angle j
        counts = np.zeros((len(self.val_pairs), len(phis)))  # its number of mutual matches
        k = int(c.max_keypoints)
        g_scores = np.zeros(len(self.val_pairs))  # g alone at g's own top-k: the reference (RootSIFT)
        g_counts = np.zeros(len(self.val_pairs))
        saved = self.model.fusion.clone()
        try:
            for i, pair in enumerate(self.val_pairs):
                f0, f1 = (top_by_response(f, k) for f in pair["views"])
                if len(f0["keypoints"]) == 0 or len(f1["keypoints"]) == 0:
                    continue  # no match: MMA 0 for every fusion
                m0, _ = match_descriptors(f0["descriptors"], f1["descriptors"], mutual=True)
                g_scores[i] = mma(f0["keypoints"].numpy(), f1["keypoints"].numpy(), m0.numpy(), pair["H_0to1"],
                                  thresholds=(thr,))[0]
                g_counts[i] = float((m0 >= 0).sum())
                if self.model.selector is not None:
                    f0, f1 = ({**f, **select_keypoints(self.model.selector, {
                        "keypoints": f["keypoints"], "keypoint_scores": f["responses"], "descriptors": f["descriptors"],
                        "scales": f["scales"], "oris": f["oris"]}, f["image_size"], k)} for f in pair["views"])
                h0, h1 = self._describe_val(f0), self._describe_val(f1)
                for j, phi in enumerate(phis):
                    self.model.set_fusion(*fusion_from_angle(phi))  # the extractor's own fusion code path
                    m0, _ = match_descriptors(self.model.fuse(f0["descriptors"], h0),
                                              self.model.fuse(f1["descriptors"], h1), mutual=True)
                    scores[i, j] = mma(f0["keypoints"].numpy(), f1["keypoints"].numpy(), m0.numpy(), pair["H_0to1"],
                                       thresholds=(thr,))[0]
                    counts[i, j] = float((m0 >= 0).sum())
        finally:
            self.model.fusion.copy_(saved)
        best = fit_fusion(scores, counts, float(c.min_correct))
        a, b = fusion_from_angle(phis[best])
        self.model.set_fusion(a, b)
        presets = [p["preset"] for p in self.val_pairs]
        out = {"fusion_b": b}
        for tag, rows in [("", slice(None))] + [(f"/{p}", np.array(presets) == p) for p in dict.fromkeys(presets)]:
            out[f"mma@3{tag}"] = float(scores[rows, best].mean())
            out[f"g_mma@3{tag}"] = float(g_scores[rows].mean())
            out[f"sel_mma@3{tag}"] = float(scores[rows, 0].mean())  # g's descriptor at the selected keypoints
            out[f"h_mma@3{tag}"] = float(scores[rows, -1].mean())
        # MMA is a precision: read it with the number of matches (and correct ones) it was measured on
        for name, j in (("", best), ("sel_", 0), ("h_", -1)):
            out[f"{name}matches"] = float(counts[:, j].mean())
            out[f"{name}correct@3"] = float((scores[:, j] * counts[:, j]).mean())
        out["g_matches"] = float(g_counts.mean())
        out["g_correct@3"] = float((g_scores * g_counts).mean())
        for j, phi in enumerate(phis):  # the whole fit: what each fusion gives (phi = atan(b / a) in degrees)
            out[f"phi{math.degrees(phi):.0f}/mma@3"] = float(scores[:, j].mean())
            out[f"phi{math.degrees(phi):.0f}/correct@3"] = float((scores[:, j] * counts[:, j]).mean())
        return out

    def save_weights(self, path: Path, info: dict) -> Path:
        h = self.conf.handcrafted
        g = {"name": h.name, "conf": {**(to_container(h.conf) or {}), "max_keypoints": int(h.max_keypoints)}}
        return save_patch_residual_weights(self.model, path, g, extra={"training": info})


# ------------------------------------------------------------------------------------------------ CLI hooks
# add_arguments, apply_arguments, check_conf: those of `featlab train residual` (--photos, --val-photos)


def build_task(conf) -> PatchResidualTask:
    return PatchResidualTask(conf)


check_export = hooks.export_name_check("residual-sift", handcrafted="rootsift")


def requires_rootsift(shipped: str) -> Callable:
    """Export check (:func:`featlab.training.hooks.weights_exporter`): weights exported as ``shipped``
    (``residual-sift``, or ``pose-sift`` for :mod:`featlab.training.pose`, whose weights have the same format) must
    have RootSIFT as g, as that registered model is defined."""
    def check(name: str, meta: dict) -> None:
        if name == shipped and meta["handcrafted"]["name"] != "rootsift":
            raise ConfigError(f"{shipped} uses handcrafted='rootsift', the weights use {meta['handcrafted']['name']!r}")
    return check


export_weights = hooks.weights_exporter(load_patch_residual_weights, "residual-sift", requires_rootsift("residual-sift"))


__all__ = ["default_conf", "PatchResidualTask", "PatchPairStream", "rotation_about_centre", "fit_fusion",
           "export_weights"]
