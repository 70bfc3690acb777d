"""Training task ``pose`` (``featlab train pose``): a residual descriptor on RootSIFT learned from camera poses.

The model is that of the residual descriptor v2 (:class:`featlab.extractors.patch_residual.PatchResidualNet`: g =
RootSIFT, h = PatchNet on oriented, scale-normalised patches, fusion ``L2norm([cos(phi) g, sin(phi) h])``), shipped
as ``pose-sift`` (:mod:`featlab.extractors.pose_sift`). No correspondences are used: only the intrinsics and
relative poses of image pairs.

**Data: posed collections, split.** ``data.collections`` lists any posed collections featlab reads
(:func:`open_collection`: a COLMAP model, an RGB-D sequence in 7-Scenes / TUM layout, a pose log). Each is split
into train / select / held-out views (:func:`featlab.datasets.splits.split_views`): contiguous runs in frame order
(``split: frame``) or by viewing direction (``split: viewpoint``, :func:`featlab.datasets.splits.viewpoint_order`),
with ``buffer`` views between parts, or explicit frame ranges (``split: ranges``, e.g. 7-Scenes' 0-349 / 360-399).
Pairs are made inside a part only (both views in it) at the entry's ``gaps`` (collection order), with
``PairSampler``'s covisibility test (depth or SfM tracks, when the collection has them) and rotation bound, so a
held-out view never enters training or selection. ``featlab train pose --data DIR`` replaces the list by one
collection. Every run checks the parts with the split guard (no training or selection on evaluation-only data).

**Step** (sample i = step * pairs_per_step + b, randomness from ``role_rng(seed, "train", i)``, the pair from a
per-epoch permutation): both views resized (``image_size``, K scaled), colour jitter, g's keypoints (at most
``handcrafted.max_keypoints``) with their descriptors and patches; h on all patches of the step (one pass), the
fused descriptor at the fixed angle ``fusion.train_angle`` (h learns what g misses), then the sparse epipolar loss
(:mod:`featlab.losses.epipolar_sparse`: soft matches among g's keypoints, epipolar + expected-distance + cycle
terms, inverse-uncertainty weighting, CAPS masks).

**Selection** (select parts only): every validation describes the selection pairs' keypoints (``val.max_keypoints``,
the benchmarks' 2048) with h, then fits the fusion angle on a grid of ``val.fusion_steps`` angles in [0, 90] deg by
``val.criterion``: the epipolar precision (``epi_precision``: the share of mutual nearest-neighbour matches within
``val.epipolar_threshold`` px of their ground-truth epipolar lines, per pair, averaged; no RANSAC, so it varies far
less than pose AUC on a few dozen pairs), the number of such matches, or pose AUC (the relpose benchmark's scoring,
:func:`featlab.eval.relpose.score_pair`). Only angles that keep MMA@3 (and, with ``val.min_correct`` > 0, the number
of correct matches) on synthetic warps of ``val.photos`` (the homography guard: the photo split's selection folder,
moderate preset) at least at g's qualify; phi = 0 (RootSIFT alone) always qualifies, so the fitted model starts at
RootSIFT's quality. Metrics: ``auc@5/10/20``, ``auc_mean``, ``epi_precision``, ``epi_correct`` (at the fitted
angle), ``g_...`` (RootSIFT), ``h_...`` (h alone), ``fusion_b``, ``phi<deg>/...``, ``mma@3``, ``g_mma@3``.

**Held-out report** (:func:`after_training`, called by ``featlab train`` at the end): AUC@5/10/20 on the pairs of
each collection's held-out part before training (the initial model: RootSIFT alone, or ``--init`` weights) and
after (the best weights), written to ``RUN_DIR/heldout.json`` and ``heldout.md``.
"""
from __future__ import annotations

import copy
import logging
import math
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..conf import checked, deep_update, none_or, resolve_conf, to_container
from ..datasets import homographies, splits
from ..errors import ConfigError, InputError
from ..extractors.patch_residual import (PatchResidualNet, extract_patches, fusion_from_angle,
                                         load_patch_residual_weights, save_patch_residual_weights)
from ..io.weights import SHIPPED_WEIGHTS_DIR, file_sha256, resolve_weights_path
from ..losses.epipolar_sparse import EpipolarSparseLoss
from ..losses.epipolar_sparse import default_conf as loss_default_conf
from ..rng import role_rng
from . import hooks, loop
from . import patch_residual
from .patch_residual import build_g, describe

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "pose.yaml"
WEIGHTS_DIR = SHIPPED_WEIGHTS_DIR
SUMMARY = "pose-sift: RootSIFT + oriented-patch residual trained from camera poses only (sparse epipolar loss)"
KINDS = ("auto", "colmap", "rgbd", "poselog")
SPLITS = ("frame", "viewpoint", "ranges")
AUC_THRESHOLDS = (5, 10, 20)
CRITERIA = ("auc@5", "auc@10", "auc@20", "auc_mean", "epi_precision", "epi_correct")

#: one posed collection of data.collections (checked by :func:`collection_conf`)
collection_default_conf = {
    "root": none_or(str, Path),  # collection folder (COLMAP project or model, RGB-D sequence) or pose-log CSV
    "kind": "auto",  # auto | colmap | rgbd | poselog
    "intrinsics": none_or(str, Path),  # poselog: the intrinsics file (default: intrinsics.json beside the CSV)
    "rgbd": {"focal": none_or(float)},  # rgbd: colour focal length (7-Scenes: 525; null: the reader's default)
    "split": "frame",  # frame | viewpoint | ranges (featlab.datasets.splits.split_views)
    "fractions": [0.6, 0.2, 0.2],  # frame / viewpoint: train, select, held-out shares of the views
    "buffer": 1,  # frame / viewpoint: views left out between two parts
    "ranges": {"train": none_or(list), "select": none_or(list), "heldout": none_or(list)},  # ranges: [start, stop)
    "gaps": [1, 2, 3],  # index gaps of the pairs (collection order) in every part
    "max_rotation": 80.0,  # deg: largest relative rotation of a pair
    "covisibility": "auto",  # auto | depth | tracks | none (auto: SfM tracks if any image has some, else depth
    #                          if the collection has it, else none: every pair at the gaps)
    "min_covisibility": 0.3,  # smallest covisibility of a pair (depth or tracks)
    "max_pairs": none_or(int),  # per part and gap: at most this many pairs (evenly spaced); null: all
    "image_size": none_or(int, list),  # [H, W] or longest side (K scaled); null: native
}

default_conf = {
    "model": PatchResidualNet.default_conf,  # patch geometry and h (featlab.extractors.patch_residual)
    "init": none_or(str, Path),  # start from these weights (a name in featlab/weights/ or a path): fine-tuning
    "handcrafted": {
        "name": "rootsift",  # g: a registered OpenCV SIFT-family extractor (gives scales and orientations)
        "max_keypoints": 1024,  # keypoints per training image
        "conf": none_or(dict),  # other keys of g's own config
    },
    "data": {
        "collections": [],  # posed collections (entries: collection_default_conf); CLI --data replaces the list
        "allow_eval_data": False,  # true: allow training/selecting on evaluation-only data (featlab.datasets.splits)
        "pairs_per_step": 2,  # image pairs per optimiser step
        "photometric": deep_update(homographies.photometric_default_conf, {"noise": {"prob": 0.0}}),
        "num_workers": 0,  # DataLoader worker processes (0: in the training process)
    },
    "fusion": {
        "train_angle": 45.0,  # deg: the loss sees L2norm([cos g, sin h]) at this angle
    },
    "val": {
        "max_pairs": checked(none_or(int), ge=1),  # selection pairs per collection and gap (evenly spaced over
        #   its select pairs); null: all
        "max_keypoints": 2048,  # g's keypoints per image in validation and the held-out report (the benchmarks')
        "estimator": "superglue",  # relative-pose estimator (featlab.geometry.robust)
        "ransac_threshold": 1.0,  # px
        "fusion_steps": 10,  # fusion angles tried in [0, 90] deg
        "criterion": "auc_mean",  # what the fusion fit maximises: auc@5 | auc@10 | auc@20 | auc_mean (pose AUC,
        #   RANSAC) | epi_precision (mean share of mutual matches within epipolar_threshold of their epipolar lines)
        #   | epi_correct (mean number of those matches per pair)
        "epipolar_threshold": checked(2.0, gt=0),  # px at the selection pairs' resolution
        "photos": none_or(str, Path),  # homography guard: selection photos (configs/pose.yaml: bsds500/val)
        "num_photos": 10,  # warped pairs of the guard (first photos by name, centre crops)
        "preset": "moderate",  # warp preset of the guard
        "photo_size": [480, 640],  # [H, W] of the guard pairs
        "photo_keypoints": 1000,  # g's keypoints per guard image (the benchmark setting)
        "seed": 1234,  # seed of the guard's warps (role "select")
        "mma_tolerance": 0.0,  # a fusion qualifies if its guard MMA@3 >= g's - this
        "min_correct": 1.0,  # ... and its correct matches >= this x g's
    },
    "loss": loss_default_conf,  # featlab.losses.epipolar_sparse
    "train": deep_update(loop.default_conf, {"best_metric": "auc_mean", "lr": 1e-3, "max_steps": 4000,
                                             "val_every": 250, "checkpoint_every": 250}),
}


# --------------------------------------------------------------------------------------------- collections
def collection_conf(entry, k: int = 0):
    """Resolve and check one entry of ``data.collections``."""
    c = resolve_conf(collection_default_conf, entry, f"data.collections[{k}]")
    if not c.root:
        raise ConfigError(f"data.collections[{k}].root is not set")
    if c.kind not in KINDS or c.split not in SPLITS:
        raise ConfigError(f"data.collections[{k}]: kind must be one of {', '.join(KINDS)} and split one of "
                          f"{', '.join(SPLITS)}, got {c.kind!r}, {c.split!r}")
    if not c.gaps or min(int(g) for g in c.gaps) < 1:
        raise ConfigError(f"data.collections[{k}].gaps must be positive index gaps, got {list(c.gaps)}")
    if c.split == "ranges":
        for part in splits.VIEW_PARTS:
            r = c.ranges[part]
            if r is not None and (len(r) != 2 or int(r[0]) < 0 or int(r[1]) <= int(r[0])):
                raise ConfigError(f"data.collections[{k}].ranges.{part} must be [start, stop), got {list(r)}")
    return c


def _colmap_model_dir(path: Path) -> Path | None:
    for candidate in (path / "sparse" / "0", path / "sparse", path):
        if any((candidate / f"images{ext}").is_file() for ext in (".bin", ".txt")):
            return candidate
    return None


def open_collection(c):
    """The :class:`featlab.datasets.posed.PosedCollection` of a resolved collection entry.

    ``kind: auto``: a ``.csv`` file is a pose log; a folder with a COLMAP model (itself, ``sparse`` or
    ``sparse/0``) is a COLMAP project; a folder of ``frame-*.color.*`` files or with ``rgb.txt`` is an RGB-D
    sequence.

    Raises:
        InputError: a missing path or one of no known layout.
    """
    from ..datasets.posed import from_rgbd

    root = Path(c.root)
    if not root.exists():
        raise InputError(f"posed collection not found: {root}")
    kind = c.kind
    if kind == "auto":
        if root.is_file() and root.suffix.lower() == ".csv":
            kind = "poselog"
        elif root.is_dir() and _colmap_model_dir(root) is not None:
            kind = "colmap"
        elif root.is_dir() and (any(root.glob("frame-*.color.*")) or (root / "rgb.txt").is_file()):
            kind = "rgbd"
        else:
            raise InputError(f"{root} is no posed collection featlab reads (a COLMAP model, an RGB-D sequence in "
                             "7-Scenes or TUM layout, or a pose-log CSV); set kind in the collection's entry")
    if kind == "colmap":
        from ..datasets.colmap import read_colmap

        model = _colmap_model_dir(root)
        if model is None:
            raise InputError(f"no COLMAP model (images.txt or images.bin) in {root}, {root / 'sparse'} or "
                             f"{root / 'sparse' / '0'}")
        collection = read_colmap(model)
        if collection.root is None:
            raise InputError(f"no image folder found for the COLMAP model in {root} (expected images/ beside sparse/)")
        return collection
    if kind == "rgbd":
        from ..datasets.rgbd import RGBDSequence

        rgbd_conf = {"focal": float(c.rgbd.focal)} if c.rgbd.focal is not None else {}
        return from_rgbd(RGBDSequence(root, rgbd_conf))
    from ..datasets.poselog import read_pose_log

    intrinsics = Path(c.intrinsics) if c.intrinsics else root.parent / "intrinsics.json"
    return read_pose_log(root, intrinsics)


def view_parts(collection, c) -> dict[str, list[int]]:
    """Train / select / held-out view indices of a collection under the entry's split (posed views only)."""
    posed = [int(i) for i in np.flatnonzero(collection.pose_valid)]
    if c.split == "ranges":
        return {part: ([i for i in posed if int(c.ranges[part][0]) <= i < int(c.ranges[part][1])]
                       if c.ranges[part] is not None else []) for part in splits.VIEW_PARTS}
    order = posed if c.split == "frame" else [i for i in splits.viewpoint_order(collection.T_w2c) if i in set(posed)]
    return splits.split_views(order, tuple(c.fractions), int(c.buffer))


def part_pairs(collection, views: list[int], c, max_pairs: int | None = None) -> list[tuple[int, int]]:
    """Pairs (i, j) with both views in ``views`` at the entry's gaps (collection order), covisibility-checked where
    the collection can (depth, SfM tracks), rotation-bounded; at most ``max_pairs`` per gap (evenly spaced)."""
    from ..datasets.posed import PairSampler

    if len(views) < 2:
        return []
    members = set(views)
    source = c.covisibility
    if source == "auto" and collection.has_tracks and not any(len(p) for p in collection.point_ids):
        # a model of ground-truth poses has no 3D points (Strecha): shared tracks would reject every pair
        source = "depth" if collection.has_depth else "none"
    out = []
    for gap in c.gaps:
        sampler = PairSampler({"index_range": [min(views), max(views) + 1], "min_gap": int(gap),
                               "max_gap": int(gap), "max_rotation": float(c.max_rotation),
                               "covisibility": source, "min_covisibility": float(c.min_covisibility)})
        pairs = [p for p in sampler.sample(collection) if p[0] in members and p[1] in members]
        if max_pairs is not None and len(pairs) > max_pairs:
            pairs = [pairs[int(k)] for k in np.linspace(0, len(pairs) - 1, int(max_pairs)).round()]
        out += pairs
    return out


class SplitCollection:
    """A collection, its view parts and the pairs of each part (the split is checked against the split rule)."""

    def __init__(self, entry, k: int, val_pairs: int | None, allow_eval_data: bool):
        from ..datasets.posed import PosedPairs

        self.conf = c = collection_conf(entry, k)
        self.collection = open_collection(c)
        self.parts = view_parts(self.collection, c)
        # the parts as the split guard sees them: frame ranges of the views each role reads
        splits.check_sources([splits.Source(role, c.root, (min(v), max(v) + 1), f"data.collections[{k}]")
                              for role, v in self.parts.items() if role in splits.ROLES and v], allow_eval_data)
        self.pairs = {"train": part_pairs(self.collection, self.parts["train"], c),
                      "select": part_pairs(self.collection, self.parts["select"], c, val_pairs),
                      "heldout": part_pairs(self.collection, self.parts["heldout"], c)}
        size = to_container(c.image_size)
        self.views = PosedPairs(self.collection, [], {"resize": size, "depth": False})
        self.name = self.collection.name
        logger.info("%s: %s views, pairs %s", self.name, {p: len(v) for p, v in self.parts.items()},
                    {p: len(v) for p, v in self.pairs.items()})

    def item(self, i: int, j: int) -> dict:
        return self.views.pair(int(i), int(j))

    def summary(self) -> dict:
        return {"name": self.name, "root": str(self.conf.root), "split": self.conf.split,
                "views": {p: [self.collection.names[i] for i in v] for p, v in self.parts.items()},
                "pairs": {p: len(v) for p, v in self.pairs.items()}}


# --------------------------------------------------------------------------------------------------- dataset
def _pad(array: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, *array.shape[1:]), dtype=array.dtype)
    out[: min(n, len(array))] = array[:n]
    return out


class PosePairStream(Dataset):
    """Training samples by global index (unbounded): one posed pair with g's keypoints, descriptors and patches.

    Item (numpy, fixed shapes; K = handcrafted.max_keypoints, P = patch size)::

        patches0, patches1        float32 (K, 1, P, P)
        keypoints0, keypoints1    float32 (K, 2) featlab pixels of the resized images
        gdesc0, gdesc1            float32 (K, G) g's descriptors
        masks0, masks1            bool (K,): False for padding
        K0, K1                    float32 (3, 3); T_0to1 float32 (4, 4)
        image_size0, image_size1  int64 (2,) (H, W)
    """

    def __init__(self, sources: list[SplitCollection], conf, seed: int):
        self.pairs = [(s, i, j) for s in range(len(sources)) for i, j in sources[s].pairs["train"]]
        if not self.pairs:
            raise InputError("no training pairs in the train parts of data.collections (more views, smaller gaps, "
                             "a lower min_covisibility or a larger train fraction)")
        self.sources = sources
        self.conf = conf
        self.seed = int(seed)
        self.k = int(conf.handcrafted.max_keypoints)
        self.photometric = to_container(conf.data.photometric)
        self._g = None
        self._shuffle = loop.EpochShuffle(self.seed)

    def __getstate__(self):
        return {**self.__dict__, "_g": None}

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def g(self):
        if self._g is None:
            if self.conf.train.num_threads:
                cv2.setNumThreads(int(self.conf.train.num_threads))
            self._g = build_g(self.conf.handcrafted, self.k)
        return self._g

    def __getitem__(self, index: int) -> dict:
        rng = role_rng(self.seed, "train", int(index))
        s, i, j = self.pairs[self._shuffle(int(index), len(self.pairs))]
        item = self.sources[s].item(i, j)
        p = self.conf.model.patch
        out = {"T_0to1": np.asarray(item["T_0to1"], np.float32)}
        for v in ("0", "1"):
            image = homographies.photometric_augment(rng, item[f"image{v}"], self.photometric)
            f = describe(self.g, image)
            patches = extract_patches(f["gray"], f["keypoints"], f["scales"], f["oris"], int(p.size),
                                      float(p.window), int(p.levels)).numpy()
            out[f"patches{v}"] = _pad(patches, self.k)
            out[f"keypoints{v}"] = _pad(f["keypoints"].numpy().astype(np.float32), self.k)
            out[f"gdesc{v}"] = _pad(f["descriptors"].numpy().astype(np.float32), self.k)
            out[f"masks{v}"] = np.arange(self.k) < len(f["keypoints"])
            out[f"K{v}"] = np.asarray(item[f"K{v}"], np.float32)
            out[f"image_size{v}"] = np.array(image.shape[:2], np.int64)
        return out


# ------------------------------------------------------------------------------------------------------ task
class PoseTask(loop.TrainingTask):
    """Data, loss, validation (fusion fit) and held-out report of ``featlab train pose`` for :func:`loop.train`."""

    def __init__(self, conf):
        self.conf = conf = resolve_conf(default_conf, conf, "")
        d, v = conf.data, conf.val
        if int(d.pairs_per_step) < 1 or int(d.num_workers) < 0 or int(conf.handcrafted.max_keypoints) < 2:
            raise ConfigError("data.pairs_per_step must be >= 1, data.num_workers >= 0, "
                              "handcrafted.max_keypoints >= 2")
        if not 0.0 < float(conf.fusion.train_angle) <= 90.0:
            raise ConfigError(f"fusion.train_angle must be in (0, 90] degrees, got {conf.fusion.train_angle}")
        if int(v.fusion_steps) < 2 or v.criterion not in CRITERIA:
            raise ConfigError(f"val.fusion_steps must be >= 2 and val.criterion one of {', '.join(CRITERIA)}, "
                              f"got {v.fusion_steps}, {v.criterion!r}")
        if v.preset not in homographies.PRESETS:
            raise ConfigError(f"val.preset: unknown preset {v.preset!r}; choose from {', '.join(homographies.PRESETS)}")
        if not d.collections:
            raise ConfigError("no posed collections: pass --data DIR (or set data.collections)")
        if conf.train.num_threads:
            cv2.setNumThreads(int(conf.train.num_threads))
        self.loss_fn = EpipolarSparseLoss(conf.loss)
        self.model = PatchResidualNet(conf.model)
        self.init_info = self._load_init(conf.init) if conf.init else None
        self.initial_state = copy.deepcopy(self.model.state_dict())
        self.sources = [SplitCollection(e, k, None if v.max_pairs is None else int(v.max_pairs),
                                        bool(d.allow_eval_data))
                        for k, e in enumerate(d.collections)]
        self.dataset = PosePairStream(self.sources, conf, seed=int(conf.train.seed))
        if self.dataset.g.descriptor_dim != int(conf.model.g_dim):
            raise ConfigError(f"handcrafted '{conf.handcrafted.name}' gives {self.dataset.g.descriptor_dim}-d "
                              f"descriptors but model.g_dim is {conf.model.g_dim}")
        self._val_g = None
        self.val_pairs = self._posed_views("select")
        self.guard_pairs = self._guard_pairs() if v.photos else []

    # ---------------------------------------------------------------------------------------------- init
    def _load_init(self, name) -> dict:
        """Load ``--init`` weights (patch-residual format: pose-sift, residual-sift) into the model, exactly."""
        path = resolve_weights_path(name, WEIGHTS_DIR)
        net, meta = load_patch_residual_weights(path)
        g = (meta.get("handcrafted") or {}).get("name")
        if g != self.conf.handcrafted.name:
            raise ConfigError(f"--init {name}: the weights were trained with handcrafted={g!r}, this run uses "
                              f"{self.conf.handcrafted.name!r}")
        if to_container(net.conf) != to_container(self.model.conf):
            raise ConfigError(f"--init {name}: the weights' model config {to_container(net.conf)} differs from this "
                              f"run's model section; set model.* to match")
        self.model.load_state_dict(net.state_dict(), strict=True)
        return {"path": str(path), "sha256": file_sha256(path)}

    # ------------------------------------------------------------------------------------------------ data
    def batches(self, start_step: int) -> Iterator[dict]:
        return loop.iterate_batches(self.dataset, self.conf.data.pairs_per_step, self.conf.data.num_workers,
                                    start_step, multiprocessing_context="spawn")

    @property
    def val_g(self):
        if self._val_g is None:
            self._val_g = build_g(self.conf.handcrafted, int(self.conf.val.max_keypoints))
        return self._val_g

    def _posed_views(self, part: str) -> list[dict]:
        """g's features of every pair of a part of every collection (grey images kept as uint8 for the patches)."""
        out = []
        for src in self.sources:
            for i, j in src.pairs[part]:
                item = src.item(i, j)
                views = []
                for v in ("0", "1"):
                    f = describe(self.val_g, item[f"image{v}"])
                    f["gray"] = (f["gray"] * 255).round().to(torch.uint8)
                    views.append(f)
                out.append({"collection": src.name, "pair": (src.collection.names[i], src.collection.names[j]),
                            "views": views, "K0": np.asarray(item["K0"], np.float64),
                            "K1": np.asarray(item["K1"], np.float64),
                            "T_0to1": np.asarray(item["T_0to1"], np.float64)})
        return out

    def _guard_pairs(self) -> list[dict]:
        from ..datasets.synthetic import SyntheticHomographyPairs, preset_conf

        v = self.conf.val
        g = build_g(self.conf.handcrafted, int(v.photo_keypoints))
        pairs = SyntheticHomographyPairs(v.photos, {"seed": int(v.seed), "role": "select",
                                                    "max_images": int(v.num_photos), "crop": "center",
                                                    "resize": list(v.photo_size), **preset_conf(v.preset)})
        out = []
        for item in pairs:
            views = [describe(g, item["image0"]), describe(g, item["image1"])]
            for f in views:
                f["gray"] = (f["gray"] * 255).round().to(torch.uint8)
            out.append({"views": views, "H_0to1": item["H_0to1"]})
        return out

    # ------------------------------------------------------------------------------------------------ steps
    def set_compute(self, dtype: str, channels_last: bool) -> None:
        self.model.h.set_channels_last(channels_last)

    def training_step(self, batch: dict, step: int):
        a, b = fusion_from_angle(math.radians(float(self.conf.fusion.train_angle)))
        groups = [("patches0", "gdesc0", batch["masks0"]), ("patches1", "gdesc1", batch["masks1"])]
        h = self.model.h(torch.cat([batch[p][m] for p, _, m in groups]))  # one pass: one BatchNorm statistic
        g = torch.cat([batch[gd][m].float() for _, gd, m in groups])
        fused = F.normalize(torch.cat([a * g, b * h], -1), dim=-1)
        pred, start = {}, 0
        for v, (_, _, m) in zip(("0", "1"), groups):
            n = int(m.sum())
            padded = fused.new_zeros((*m.shape, fused.shape[-1]))
            padded[m] = fused[start:start + n]
            pred[f"descriptors{v}"] = padded
            start += n
        losses, metrics = self.loss_fn(pred, batch)
        metrics = {**{f"loss_{k}": x.detach() for k, x in losses.items() if k != "total"}, **metrics}
        metrics["keypoints_per_image"] = (batch["masks0"].sum(1).float().mean() + batch["masks1"].sum(1).float()
                                          .mean()) / 2
        return losses["total"], metrics

    # ------------------------------------------------------------------------------------------- validation
    def _describe(self, view: dict) -> torch.Tensor:
        dev = self.model.fusion.device
        patches = self.model.patches(view["gray"].to(dev).float() / 255.0, view["keypoints"].to(dev),
                                     view["scales"].to(dev), view["oris"].to(dev))
        return self.model.h(patches).float().cpu()

    def _relpose_conf(self):
        from ..eval import relpose

        v = self.conf.val
        return resolve_conf(relpose.default_conf, {"estimator": v.estimator, "ransac_threshold": v.ransac_threshold,
                                                   "max_keypoints": int(v.max_keypoints)}, "relpose")

    def pose_errors(self, pairs: list[dict], phis) -> np.ndarray:
        """(pairs, fusions) pose errors (deg, inf on failure) of each pair under each fusion angle (radians)."""
        return self.pair_scores(pairs, phis, epipolar=False)["pose_error"]

    def pair_scores(self, pairs: list[dict], phis, epipolar: bool = True) -> dict[str, np.ndarray]:
        """(pairs, fusions) scores of each pair under each fusion angle (radians): ``pose_error`` (deg, inf on
        failure; the relpose benchmark's scoring) and, with ``epipolar``, ``matches`` (mutual nearest neighbours),
        ``correct`` (those within ``val.epipolar_threshold`` px of their ground-truth epipolar lines, symmetric
        distance) and ``precision`` (correct / matches; 0 without matches): the epipolar precision, which needs no
        RANSAC and so varies far less than pose AUC."""
        from ..eval.cache import match_features
        from ..eval.relpose import score_pair
        from ..geometry.epipolar import epipolar_distance, fundamental_from_pose

        rconf = self._relpose_conf()
        out = {"pose_error": np.full((len(pairs), len(phis)), np.inf)}
        if epipolar:
            out.update(matches=np.zeros((len(pairs), len(phis))), correct=np.zeros((len(pairs), len(phis))))
        for k, pair in enumerate(pairs):
            f0, f1 = pair["views"]
            if len(f0["keypoints"]) == 0 or len(f1["keypoints"]) == 0:
                continue
            h0, h1 = self._describe(f0), self._describe(f1)
            F01 = fundamental_from_pose(pair["K0"], pair["K1"], pair["T_0to1"]) if epipolar else None
            for j, phi in enumerate(phis):
                a, b = fusion_from_angle(float(phi))
                feats = [{"keypoints": f["keypoints"].numpy(),
                          "descriptors": F.normalize(torch.cat([a * f["descriptors"], b * h], -1), dim=-1).numpy()}
                         for f, h in ((f0, h0), (f1, h1))]
                m0 = match_features(feats[0], feats[1], False)
                cv2.setRNGSeed(k)  # the same RANSAC draws for every fusion and every validation
                rec = score_pair(feats[0], feats[1], pair["K0"], pair["K1"], pair["T_0to1"], rconf, False, m0)
                out["pose_error"][k, j] = rec["pose_error"]
                if epipolar:
                    i0 = np.flatnonzero(m0 >= 0)
                    d = epipolar_distance(feats[0]["keypoints"][i0].astype(np.float64),
                                          feats[1]["keypoints"][m0[i0]].astype(np.float64), F01)
                    out["matches"][k, j] = len(i0)
                    out["correct"][k, j] = float((np.asarray(d) <= float(self.conf.val.epipolar_threshold)).sum())
        if epipolar:
            out["precision"] = out["correct"] / np.maximum(out["matches"], 1)  # correct <= matches: 0 when none
        return out

    def _guard(self, phis) -> tuple[np.ndarray, np.ndarray]:
        """(fusions,) mean MMA@3 and mean correct matches on the guard's warps under each fusion angle."""
        from ..eval.metrics import mma
        from ..matching import match_descriptors

        scores = np.zeros((len(self.guard_pairs), len(phis)))
        correct = np.zeros_like(scores)
        for k, pair in enumerate(self.guard_pairs):
            f0, f1 = pair["views"]
            if len(f0["keypoints"]) == 0 or len(f1["keypoints"]) == 0:
                continue
            h0, h1 = self._describe(f0), self._describe(f1)
            for j, phi in enumerate(phis):
                a, b = fusion_from_angle(float(phi))
                m0, _ = match_descriptors(F.normalize(torch.cat([a * f0["descriptors"], b * h0], -1), dim=-1),
                                          F.normalize(torch.cat([a * f1["descriptors"], b * h1], -1), dim=-1),
                                          mutual=True)
                scores[k, j] = mma(f0["keypoints"].numpy(), f1["keypoints"].numpy(), m0.numpy(), pair["H_0to1"],
                                   thresholds=(3.0,))[0]
                correct[k, j] = scores[k, j] * float((m0 >= 0).sum())
        return scores.mean(0), correct.mean(0)

    @staticmethod
    def aucs(errors) -> dict[str, float]:
        from ..geometry.pose import pose_auc

        out = {f"auc@{t}": float(a) for t, a in zip(AUC_THRESHOLDS, pose_auc(list(errors), AUC_THRESHOLDS))}
        out["auc_mean"] = float(np.mean([out[f"auc@{t}"] for t in AUC_THRESHOLDS]))
        return out

    def validate(self) -> dict[str, float]:
        if not self.val_pairs:
            return {}
        v = self.conf.val
        phis = np.linspace(0.0, math.pi / 2, int(v.fusion_steps))
        scores = self.pair_scores(self.val_pairs, phis)
        per_phi = [self.aucs(scores["pose_error"][:, j]) for j in range(len(phis))]
        precision = scores["precision"].mean(0)
        for j in range(len(phis)):
            per_phi[j].update(epi_precision=float(precision[j]), epi_correct=float(scores["correct"][:, j].mean()))
        crit = np.array([p[v.criterion] for p in per_phi])
        ok = np.ones(len(phis), bool)
        out = {}
        if self.guard_pairs:
            mma3, correct = self._guard(phis)
            ok = (mma3 >= mma3[0] - float(v.mma_tolerance) - 1e-9) & (correct >= float(v.min_correct) * correct[0]
                                                                       - 1e-9)
            ok[0] = True
        best = int(np.argmax(np.where(ok, crit, -np.inf)))  # ties: the smallest angle (towards g)
        a, b = fusion_from_angle(float(phis[best]))
        self.model.set_fusion(a, b)
        out.update({**per_phi[best], "fusion_b": b})
        out.update({f"g_{k}": x for k, x in per_phi[0].items()})
        out.update({f"h_{k}": x for k, x in per_phi[-1].items()})
        if self.guard_pairs:
            out.update({"mma@3": float(mma3[best]), "g_mma@3": float(mma3[0]), "correct@3": float(correct[best]),
                        "g_correct@3": float(correct[0])})
        for j, phi in enumerate(phis):
            out[f"phi{math.degrees(phi):.0f}/{v.criterion}"] = float(crit[j])
            for key in ("auc_mean", "epi_precision"):
                if key != v.criterion:
                    out[f"phi{math.degrees(phi):.0f}/{key}"] = per_phi[j][key]
            if self.guard_pairs:
                out[f"phi{math.degrees(phi):.0f}/mma@3"] = float(mma3[j])
        return out

    def save_weights(self, path: Path, info: dict) -> Path:
        h = self.conf.handcrafted
        g = {"name": h.name, "conf": {**(to_container(h.conf) or {}), "max_keypoints": int(h.max_keypoints)}}
        extra = {"training": {**info, "task": "pose", "init": self.init_info,
                              "collections": [s.summary() for s in self.sources]}}
        return save_patch_residual_weights(self.model, path, g, extra=extra)

    # ---------------------------------------------------------------------------------------- held-out report
    def heldout_report(self, state_before: dict, state_after: dict) -> dict:
        """AUC@5/10/20 per collection on its held-out pairs for RootSIFT alone, the model with ``state_before`` and
        with ``state_after`` (each with its own fusion)."""
        pairs = self._posed_views("heldout")
        saved = copy.deepcopy(self.model.state_dict())
        out = {"pairs": {}, "before": {}, "after": {}, "rootsift": {}}
        try:
            for name, state in (("before", state_before), ("after", state_after)):
                self.model.load_state_dict(state)
                self.model.eval()
                with torch.no_grad():
                    phi = math.atan2(float(self.model.fusion[1]), float(self.model.fusion[0]))
                    errs = self.pose_errors(pairs, [phi, 0.0]) if pairs else np.zeros((0, 2))
                for src in self.sources:
                    rows = np.array([p["collection"] == src.name for p in pairs], bool)
                    out["pairs"][src.name] = int(rows.sum())
                    if rows.any():
                        out[name][src.name] = {**self.aucs(errs[rows, 0]), "fusion_b": float(self.model.fusion[1])}
                        out["rootsift"][src.name] = self.aucs(errs[rows, 1])
        finally:
            self.model.load_state_dict(saved)
        return out


# ------------------------------------------------------------------------------------------------ CLI hooks
def add_arguments(parser) -> None:
    """Data arguments of ``featlab train pose`` (the common ones are added by featlab.commands.train)."""
    parser.add_argument("--data", type=Path, action="append", default=None, metavar="COLLECTION",
                        help="posed collection (COLMAP project or model, RGB-D sequence, pose-log CSV); repeat for "
                             "more; replaces data.collections (each split by --split)")
    parser.add_argument("--split", choices=("frame", "viewpoint"), default=None,
                        help="how --data collections are split into train / select / held-out views (default frame)")
    parser.add_argument("--gaps", type=int, nargs="+", default=None, metavar="D",
                        help="index gaps of the pairs of --data collections (default 1 2 3)")
    parser.add_argument("--image-size", type=int, default=None, metavar="SIDE",
                        help="resize the views of --data collections to this longest side, K scaled (default: native)")
    parser.add_argument("--init", default=None, metavar="NAME",
                        help="start from these weights: a name in featlab/weights/ (pose-sift) or a .safetensors path")


def apply_arguments(user: dict, args) -> dict:
    """Write the data arguments into the user config (before resolution)."""
    data = user.setdefault("data", {})
    if args.data:
        entry = {"split": args.split, "gaps": args.gaps, "image_size": args.image_size}
        data["collections"] = [{"root": str(p), **{k: v for k, v in entry.items() if v is not None}}
                               for p in args.data]
    elif args.split or args.gaps or args.image_size:
        raise ConfigError("--split, --gaps and --image-size apply to the collections given with --data")
    if args.init:
        user["init"] = str(args.init)
    return user


def check_conf(conf) -> None:
    if not conf.data.collections:
        raise ConfigError("no training data: pass --data COLLECTION (or set data.collections in the config)")


def build_task(conf) -> PoseTask:
    return PoseTask(conf)


check_export = hooks.export_name_check("pose-sift", handcrafted="rootsift")


export_weights = hooks.weights_exporter(load_patch_residual_weights, "pose-sift",
                                        patch_residual.requires_rootsift("pose-sift"))


def heldout_markdown(report: dict) -> str:
    from ..eval.report import markdown_table

    lines = ["# Held-out pose AUC before and after training", "",
             "Pairs of each collection's held-out views only (never trained or selected on); mutual nearest "
             "neighbours, relative pose as in `featlab eval relpose`; AUC in percent.", ""]
    for name, n in report["pairs"].items():
        if not n:
            continue
        rows = [[label] + [100 * report[key][name][f"auc@{t}"] for t in AUC_THRESHOLDS]
                for label, key in (("rootsift", "rootsift"), ("before", "before"), ("after", "after"))]
        lines += [f"## {name}: {n} held-out pairs", "",
                  markdown_table(["model", *(f"AUC@{t}" for t in AUC_THRESHOLDS)], rows, [0, 1, 1, 1]), ""]
    return "\n".join(lines)


def after_training(task: PoseTask, run_dir: str | Path) -> dict:
    """Held-out AUC before (the initial model) and after (best weights) training: ``heldout.json``/``.md``."""
    import json

    from ..io.atomic import atomic_write_text

    run_dir = Path(run_dir)
    best = run_dir / "best.safetensors"
    if not best.is_file():
        best = run_dir / "final.safetensors"
    net, _ = load_patch_residual_weights(best)
    report = task.heldout_report(task.initial_state, net.state_dict())
    report["after_weights"] = best.name
    atomic_write_text(run_dir / "heldout.json", json.dumps(report, indent=2))
    md = heldout_markdown(report)
    atomic_write_text(run_dir / "heldout.md", md + "\n")
    print(md)
    return report


__all__ = ["default_conf", "collection_default_conf", "PoseTask", "PosePairStream", "SplitCollection",
           "open_collection", "view_parts", "part_pairs", "after_training", "export_weights"]
