"""Training task of CAPS: descriptors from camera poses only (see :mod:`featlab.losses.caps`, RECIPES section 2).

Data: any *posed-pair dataset*, an object with ``__len__`` and ``__getitem__(k) -> {"image0", "image1"`` uint8 RGB
(H, W, 3), ``"K0", "K1"`` (3, 3) featlab pixels, ``"T_0to1"`` (4, 4) with ``x_cam1 = T_0to1 x_cam0``}``; no
depth and no pixel correspondences are used. Pair selection (overlap, rotation) is the dataset's job;
:class:`RGBDPairs` adapts an RGB-D sequence (:class:`featlab.datasets.rgbd.RGBDSequence`, 7-Scenes / TUM layout)
with depth-checked covisible pairs of given frame gaps and a relative-rotation bound, and is what ``featlab train
caps --data DIR`` builds. Other collections plug in through :class:`CAPSTask` ``(conf, train_pairs, val_pairs)``.

Sample ``i`` of the training stream (step s, batch slot b: i = s * batch_size + b) takes its pair from a per-epoch
permutation seeded by ``(seed, epoch)`` and draws all its randomness from ``numpy.random.default_rng([seed, i])``,
so a resumed run sees the batches an uninterrupted one would, with any number of data workers. Each sample:

- both images resized to ``data.image_size`` ([H, W]); intrinsics scaled by the same factors
  (``K' = diag(sx, sy, 1) K``, exact in featlab's pixel convention);
- colour jitter, independently per image (:func:`featlab.datasets.homographies.photometric_augment`);
- ``data.num_queries`` query points per image: a fraction ``data.sift_fraction`` drawn among the keypoints of
  featlab's SIFT extractor (``sift``, all of them) on that image (distinct locations), the rest (and any shortfall)
  uniform over the image.

Step: both images of every pair go through the network in one batch; :class:`featlab.losses.caps.CAPSLoss` gives
the coarse/fine epipolar losses and the cycle terms (both directions: queries of image 0 and of image 1).

Validation (a fixed set of held-out posed pairs, resized like the training data): SIFT keypoints (OpenCV,
``val.max_keypoints``) described with CAPS (:func:`featlab.extractors.caps.sample_descriptors`), mutual nearest
neighbours, :func:`featlab.geometry.robust.estimate_relative_pose`; ``auc@5/10/20`` of max(rotation, translation
direction) error, the same for SIFT's own descriptors as a baseline (``sift_auc@...``, computed once), and the
epipolar error (pixels at the training resolution) of the coarse and fine predictions of the SIFT keypoints of image
0 (``coarse_error``/``fine_error``: mean, ``*_median``: median).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from ..conf import checked, deep_update, none_or, resolve_conf, to_container
from ..datasets import homographies, splits
from ..datasets import rgbd as rgbd_module
from ..datasets.posed import resize_view
from ..errors import ConfigError, InputError
from ..geometry.epipolar import fundamental_from_pose
from ..geometry.pose import rotation_angle
from ..extractors.caps import load_caps_weights, sample_descriptors, save_caps_weights
from ..io.image import image_to_tensor
from ..losses.caps import CAPSLoss, epipolar_errors, epipolar_line_valid, match_coarse_to_fine, normalize_maps
from ..losses.caps import default_conf as loss_default_conf
from ..nn.resunet import ResUNet, map_extent
from ..nn.resunet import default_conf as model_default_conf
from . import hooks, loop

#: the experiment config used when --config is not given
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "caps.yaml"
SUMMARY = "CAPS descriptors (ResNet U-Net) supervised by relative camera poses only (epipolar loss)"

#: data keys of the COLMAP projects of a pose-supervised task (CAPS, SCFeat; :class:`ColmapPairs`)
COLMAP_DATA_CONF = {
    "colmap": [],  # COLMAP project folders (images/ + sparse/) with posed images, e.g. Strecha castle-P30 (CLI
    # --colmap); Herz-Jesus-P25 is evaluation only
    "colmap_pairs": {"min_gap": 1, "max_gap": 2, "max_rotation": 40.0, "covisibility": "none"},  # pair sampler
    # of the COLMAP models (featlab.datasets.posed.PairSampler keys; Strecha: ~10 degrees per index step)
    "colmap_repeat": 3,  # each COLMAP pair appears this many times per epoch (few pairs next to a sequence's)
}

default_conf = {
    "model": model_default_conf,  # network, see featlab.nn.resunet
    "data": {
        "root": none_or(str, Path),  # RGB-D sequence folder (7-Scenes or TUM layout; CLI --data)
        "rgbd": rgbd_module.default_conf,  # sequence reader settings (intrinsics choice: configs/caps.yaml sets
        # focal 525, which fits 7-Scenes' colour images better than the file's 585, see featlab.datasets.rgbd)
        "frame_range": list(splits.TRAIN_FRAMES),  # [start, stop) frames of the training pairs (both frames)
        "allow_eval_data": False,  # true: allow training/selecting on evaluation-only data (featlab.datasets.splits)
        "gaps": [20],  # frame gaps of the training pairs
        "min_covisibility": 0.3,  # depth-checked overlap of a pair (used only to select pairs)
        "max_pairs_per_gap": none_or(int),  # cap on pairs per gap; null: every candidate that passes
        "max_rotation": 80.0,  # degrees; pairs with a larger relative rotation are dropped
        **COLMAP_DATA_CONF,  # --colmap projects (ColmapPairs)
        "synthetic": {  # rendered rooms with boxes (featlab.datasets.render): SYNTHETIC, exact poses
            "scenes": checked(0, ge=0),  # rooms; 0: none
            "frames": checked(60, ge=2),  # views per room (a smooth trajectory, 3 degrees a frame)
            "seed": checked(2000, ge=0),  # room s uses render seed seed + s (depthkp's rooms start at 1000)
            "min_gap": checked(3, ge=1),  # frame gaps of the pairs: min_gap..max_gap
            "max_gap": checked(10, ge=1),
            "max_rotation": checked(40.0, ge=0, le=180),  # degrees
            "min_covisibility": checked(0.3, ge=0, le=1),  # depth-checked, both directions
            "render": none_or(dict),  # more featlab.datasets.render settings; image_size is data's
        },
        "image_size": [240, 320],  # [H, W] both images are resized to (K scaled accordingly)
        "batch_size": 2,  # pairs per step
        "num_workers": 1,  # DataLoader worker processes (0: load in the training process)
        "num_queries": 500,  # query points per image
        "sift_fraction": 0.9,  # fraction of the queries drawn among SIFT keypoints (rest uniform)
        "photometric": deep_update(homographies.photometric_default_conf, {"noise": {"prob": 0.0}}),  # colour
        # jitter per image, see featlab.datasets.homographies (no pixel noise by default: CAPS uses colour jitter)
    },
    "val": {
        "root": none_or(str, Path),  # sequence of the validation pairs; null: data.root
        "frame_range": list(splits.SELECT_FRAMES),  # [start, stop) selection frames (a 10-frame buffer after
        # the training frames; frames 400-499 of 7-Scenes are for reporting only, featlab.datasets.splits)
        "gaps": [20],  # frame gaps of the validation pairs
        "min_covisibility": 0.3,
        "num_pairs": 10,  # pairs kept (evenly spaced over the candidates)
        "max_keypoints": 1024,  # SIFT keypoints per image
        "method": "superglue",  # relative-pose estimator: superglue | magsac | poselib (featlab.geometry.robust)
        "threshold": 1.0,  # px (at data.image_size), RANSAC inlier threshold
    },
    "loss": loss_default_conf,  # see featlab.losses.caps
    "train": deep_update(loop.default_conf, {"lr": 1e-4, "best_metric": "auc@10", "max_steps": 20000}),
}


# --------------------------------------------------------------------------------------------------- data
def resize_with_intrinsics(image: np.ndarray, K: np.ndarray, size) -> tuple[np.ndarray, np.ndarray]:
    """Resize an (H, W, 3) image to ``size`` = (h, w) and scale K to match (:func:`featlab.datasets.posed.resize_view`)."""
    image, K, _ = resize_view(image, np.asarray(K, np.float64), size)
    return image, K


def sift_locations(extractor, image: np.ndarray) -> np.ndarray:
    """Distinct keypoint locations (M, 2) in featlab pixels of a uint8 RGB (H, W, 3) image, strongest first.

    ``extractor``: featlab's SIFT (``build_extractor("sift", {"max_keypoints": -1})``), so that the queries get
    its pixel conversion, measured 0.25 px correction included (:class:`featlab.extractors.handcrafted.SIFT`).
    """
    with torch.no_grad():
        pts = extractor({"image": image_to_tensor(image)})["keypoints"][0].cpu().numpy()
    # OpenCV repeats a location for each of its dominant orientations
    _, first = np.unique(np.round(pts, 2), axis=0, return_index=True)
    return pts[np.sort(first)].astype(np.float32)


def sample_queries(rng: np.random.Generator, candidates: np.ndarray, num: int, fraction: float,
                   image_size) -> np.ndarray:
    """``num`` query points: up to ``round(fraction * num)`` drawn without replacement from ``candidates`` (M, 2),
    the rest uniform over the image of size (H, W). Returns float32 (num, 2) featlab pixels."""
    h, w = image_size
    k = min(len(candidates), int(round(fraction * num)))
    chosen = candidates[rng.choice(len(candidates), size=k, replace=False)] if k else np.zeros((0, 2), np.float32)
    uniform = rng.uniform(0.0, 1.0, size=(num - k, 2)) * np.array([w, h])
    return np.concatenate([chosen, uniform], 0).astype(np.float32)


class RGBDPairs:
    """Posed pairs of an RGB-D sequence: depth-checked covisible frame pairs at given gaps, rotation-bounded.

    Items: ``{"name", "image0", "image1", "K0", "K1", "T_0to1"}`` (depth is not passed on: CAPS trains on poses).
    """

    def __init__(self, root, rgbd_conf, frame_range, gaps, min_covisibility: float = 0.3,
                 max_pairs_per_gap: int | None = None, max_rotation: float = 180.0, num_pairs: int | None = None,
                 seed: int = 0):
        self.sequence = rgbd_module.RGBDSequence(root, rgbd_conf)
        pairs = self.sequence.make_pairs(gaps=tuple(gaps), min_covisibility=min_covisibility,
                                         max_pairs_per_gap=max_pairs_per_gap, frame_range=tuple(frame_range),
                                         seed=seed)
        pairs = [p for p in pairs if rotation_angle(self.sequence.relative_pose(*p)[:3, :3]) <= max_rotation]
        if num_pairs is not None and len(pairs) > num_pairs:
            pairs = [pairs[int(k)] for k in np.linspace(0, len(pairs) - 1, int(num_pairs)).round()]
        if not pairs:
            raise InputError(f"no image pairs in {root} for frames {list(frame_range)}, gaps {list(gaps)} with "
                             f"covisibility >= {min_covisibility} and rotation <= {max_rotation} deg")
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> dict:
        i, j = self.pairs[k]
        seq = self.sequence
        f0, f1 = seq.load_frame(i), seq.load_frame(j)
        return {"name": f"{seq.name}/{f0['name']}_{f1['name']}", "image0": f0["image"], "image1": f1["image"],
                "K0": f0["K"], "K1": f1["K"], "T_0to1": rgbd_module.relative_pose(f0["T_c2w"], f1["T_c2w"])}


class ColmapPairs:
    """Posed pairs of COLMAP models (:class:`featlab.datasets.posed.PosedPairs` over each model, concatenated)."""

    def __init__(self, folders, pair_conf, repeat: int = 1):
        from ..datasets.colmap import read_colmap
        from ..datasets.posed import PairSampler, PosedPairs

        self.parts = []
        for folder in folders:
            folder = Path(folder)
            model = folder / "sparse" if (folder / "sparse").is_dir() else folder
            collection = read_colmap(model)
            pairs = PairSampler(to_container(pair_conf)).sample(collection)
            if not pairs:
                raise InputError(f"no pairs in {folder} with data.colmap_pairs {to_container(pair_conf)}")
            self.parts.append(PosedPairs(collection, pairs))
        self.index = [(p, k) for _ in range(int(repeat)) for p, part in enumerate(self.parts) for k in range(len(part))]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, k: int) -> dict:
        p, j = self.index[k]
        return self.parts[p][j]


class ConcatPairs:
    """Items of several posed-pair datasets, one after the other."""

    def __init__(self, parts):
        self.parts = [p for p in parts if p is not None and len(p)]
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, k: int) -> dict:
        part = int(np.searchsorted(self.offsets, k, side="right") - 1)
        return self.parts[part][k - int(self.offsets[part])]


def synthetic_pairs(syn_conf, image_size) -> list:
    """Rendered rooms (:func:`featlab.datasets.render.render_collection`, labelled **synthetic**: exact poses and
    depth) as posed pairs: one :class:`featlab.datasets.posed.PosedPairs` per room, pairs of frame gaps
    ``syn_conf.min_gap``..``max_gap`` with depth-checked covisibility >= ``syn_conf.min_covisibility``. Room ``s`` uses
    render seed ``syn_conf.seed + s``; rendered once, at ``image_size``, when called."""
    from ..datasets.posed import PairSampler, PosedPairs
    from ..datasets.render import render_collection

    out = []
    for s in range(int(syn_conf.scenes)):
        conf = deep_update(to_container(syn_conf.render) or {}, {"seed": int(syn_conf.seed) + s,
                                                                "num_frames": int(syn_conf.frames),
                                                                "image_size": [int(v) for v in image_size]})
        coll = render_collection(conf)
        pairs = PairSampler({"min_gap": int(syn_conf.min_gap), "max_gap": int(syn_conf.max_gap),
                             "max_rotation": float(syn_conf.max_rotation), "covisibility": "depth",
                             "min_covisibility": float(syn_conf.min_covisibility)}).sample(coll)
        if not pairs:
            raise InputError(f"no covisible pairs in the rendered room {coll.name}")
        out.append(PosedPairs(coll, pairs))
    return out


class PosedPairStream(Dataset):
    """Training samples by global index ``i`` (unbounded) from a posed-pair dataset (see the module docstring).

    Item (fixed shapes, stacked by the default collate; N = data.num_queries)::

        image0, image1    float32 (3, H, W) in [0, 1], colour-jittered
        K0, K1            float32 (3, 3) featlab pixels of the resized images
        T_0to1            float32 (4, 4)
        points0, points1  float32 (N, 2) query points (featlab pixels) of image 0 / image 1
    """

    def __init__(self, pairs, data_conf, seed: int):
        if len(pairs) == 0:
            raise InputError("the posed-pair training dataset is empty")
        self.pairs = pairs
        self.size = tuple(int(v) for v in data_conf.image_size)
        self.num_queries = int(data_conf.num_queries)
        self.sift_fraction = float(data_conf.sift_fraction)
        self.photometric = to_container(data_conf.photometric)
        self.seed = int(seed)
        self._sift = None  # built inside each worker process (OpenCV objects do not pickle)
        self._shuffle = loop.EpochShuffle(self.seed)

    def __len__(self) -> int:  # nominal: indices are global sample numbers
        return len(self.pairs)

    @property
    def sift(self):
        """featlab's SIFT extractor, all keypoints (the query candidates)."""
        if self._sift is None:
            from ..extractors import build_extractor

            self._sift = build_extractor("sift", {"max_keypoints": -1})
        return self._sift

    def pair_of(self, index: int) -> int:
        return self._shuffle(index, len(self.pairs))

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index)])
        item = self.pairs[self.pair_of(int(index))]
        out = {"T_0to1": np.asarray(item["T_0to1"], np.float32)}
        for k in ("0", "1"):
            image, K = resize_with_intrinsics(item[f"image{k}"], item[f"K{k}"], self.size)
            image = homographies.photometric_augment(rng, image, self.photometric)
            out[f"image{k}"] = image_to_tensor(image)[0]
            out[f"K{k}"] = K.astype(np.float32)
            out[f"points{k}"] = sample_queries(rng, sift_locations(self.sift, image), self.num_queries,
                                               self.sift_fraction, self.size)
        return out


def training_pairs(conf) -> ConcatPairs:
    """The training pairs of ``conf.data`` (CAPS and SCFeat): the sequence's (``root``), the COLMAP models'
    (``colmap``, each pair ``colmap_repeat`` times) and the rendered rooms' (``synthetic``, when the config has it)."""
    d = conf.data
    parts = []
    if d.root:
        parts.append(RGBDPairs(d.root, d.rgbd, d.frame_range, d.gaps, d.min_covisibility, d.max_pairs_per_gap,
                               d.max_rotation, seed=int(conf.train.seed)))
    if d.colmap:
        parts.append(ColmapPairs(d.colmap, d.colmap_pairs, int(d.colmap_repeat)))
    if "synthetic" in d and int(d.synthetic.scenes) > 0:
        parts += synthetic_pairs(d.synthetic, d.image_size)
    return ConcatPairs(parts)


# ------------------------------------------------------------------------------------------------------ task
def prepare_posed_val_pairs(pairs, image_size, max_keypoints: int) -> list[dict]:
    """Validation pairs of a pose-supervised task, prepared once: each view resized to ``image_size`` (H, W) with
    its intrinsics, and featlab SIFT's keypoints and descriptors on it (the baseline and the query points).

    Returns one dict per pair: ``name``, ``T_0to1`` (4, 4) float64, ``image`` (2, C, H, W), ``K0``/``K1``,
    ``keypoints0``/``keypoints1`` (N, 2) featlab pixels, ``sift_descriptors0``/``sift_descriptors1`` (N, 128).
    """
    from ..extractors import build_extractor

    sift = build_extractor("sift", {"max_keypoints": int(max_keypoints)})
    size = tuple(int(v) for v in image_size)
    out = []
    for k in range(len(pairs)):
        item = pairs[k]
        entry = {"name": item.get("name", str(k)), "T_0to1": np.asarray(item["T_0to1"], np.float64)}
        images = []
        for s in ("0", "1"):
            image, K = resize_with_intrinsics(item[f"image{s}"], item[f"K{s}"], size)
            t = image_to_tensor(image)
            with torch.no_grad():
                pred = sift({"image": t})
            entry[f"K{s}"] = K
            entry[f"keypoints{s}"] = pred["keypoints"][0].float()
            entry[f"sift_descriptors{s}"] = pred["descriptors"][0].float()
            images.append(t[0])
        entry["image"] = torch.stack(images)
        out.append(entry)
    return out


class CAPSTask(loop.TrainingTask):
    """Data, loss and validation of CAPS for :func:`featlab.training.loop.train`.

    Args:
        conf: the experiment config (:data:`default_conf`).
        train_pairs: a posed-pair dataset for training; None: built from ``conf.data`` (:class:`RGBDPairs`).
        val_pairs: a posed-pair dataset for validation (all its items are used); None: built from ``conf.val``
            when a sequence is configured, else no validation.
    """

    def __init__(self, conf, train_pairs=None, val_pairs=None):
        self.conf = conf = resolve_conf(default_conf, conf, "")
        d = conf.data
        if len(d.image_size) != 2 or any(int(v) < 32 or int(v) % 16 for v in d.image_size):
            raise ConfigError(f"data.image_size must be [H, W], multiples of 16 and >= 32, got {list(d.image_size)}")
        if int(d.batch_size) < 1 or int(d.num_queries) < 1 or int(d.num_workers) < 0:
            raise ConfigError("data.batch_size and data.num_queries must be >= 1, data.num_workers >= 0")
        if not 0.0 <= float(d.sift_fraction) <= 1.0:
            raise ConfigError(f"data.sift_fraction must be in [0, 1], got {d.sift_fraction}")
        self.model = ResUNet(conf.model)
        self.loss_fn = CAPSLoss(conf.loss)
        if train_pairs is None:
            train_pairs = training_pairs(conf)
        self.dataset = PosedPairStream(train_pairs, d, seed=int(conf.train.seed))
        if val_pairs is None and (conf.val.root or d.root) and int(conf.val.num_pairs) > 0:
            v = conf.val
            val_pairs = RGBDPairs(v.root or d.root, d.rgbd, v.frame_range, v.gaps, v.min_covisibility, None,
                                  d.max_rotation, num_pairs=int(v.num_pairs))
        self.val_pairs = self._prepare_val(val_pairs) if val_pairs is not None else []
        self._sift_baseline = None
        self.channels_last = False

    # ------------------------------------------------------------------------------------------------ data
    def batches(self, start_step: int) -> Iterator[dict]:
        return loop.iterate_batches(self.dataset, self.conf.data.batch_size, self.conf.data.num_workers, start_step,
                                    multiprocessing_context=None)

    def _prepare_val(self, pairs) -> list[dict]:
        return prepare_posed_val_pairs(pairs, self.conf.data.image_size, int(self.conf.val.max_keypoints))

    # ------------------------------------------------------------------------------------------------ steps
    def set_compute(self, dtype: str, channels_last: bool) -> None:
        self.channels_last = bool(channels_last)
        self.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def _maps(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def training_step(self, batch: dict, step: int):
        b = batch["image0"].shape[0]
        maps = self._maps(torch.cat([batch["image0"], batch["image1"]]))
        pred = {"coarse0": maps["coarse"][:b], "coarse1": maps["coarse"][b:],
                "fine0": maps["fine"][:b], "fine1": maps["fine"][b:]}
        losses, metrics = self.loss_fn(pred, batch)
        terms = {f"loss_{k}": v.detach() for k, v in losses.items() if k != "total"}
        return losses["total"], {**terms, **metrics}

    def _pose_errors(self, desc_fn) -> list[float]:
        """max(rotation, translation-direction) error (deg) per validation pair; ``desc_fn(k, pair) -> (d0, d1)``."""
        from ..geometry.pose import relative_pose_error
        from ..geometry.robust import estimate_relative_pose
        from ..matching import match_descriptors

        errors = []
        for k, p in enumerate(self.val_pairs):
            d0, d1 = desc_fn(k, p)
            kp0, kp1 = p["keypoints0"].numpy(), p["keypoints1"].numpy()
            if len(kp0) == 0 or len(kp1) == 0:
                errors.append(float("inf"))
                continue
            m0, _ = match_descriptors(d0.float().cpu(), d1.float().cpu(), mutual=True)
            m0 = m0.numpy()
            ok = m0 >= 0
            R, t, _ = estimate_relative_pose(kp0[ok].astype(np.float64), kp1[m0[ok]].astype(np.float64), p["K0"],
                                             p["K1"], method=self.conf.val.method,
                                             threshold=float(self.conf.val.threshold))
            errors.append(max(relative_pose_error(p["T_0to1"], R, t)))
        return errors

    def validate(self) -> dict[str, float]:
        from ..geometry.pose import pose_auc

        if not self.val_pairs:
            return {}
        thresholds = (5, 10, 20)
        if self._sift_baseline is None:
            errs = self._pose_errors(lambda k, p: (p["sift_descriptors0"], p["sift_descriptors1"]))
            self._sift_baseline = {f"sift_auc@{t}": a for t, a in zip(thresholds, pose_auc(errs, thresholds))}
        size = tuple(int(v) for v in self.conf.data.image_size)
        extent = map_extent(*size)
        device = next(self.model.parameters()).device
        lc = self.loss_fn.conf
        cache, coarse_err, fine_err = {}, [], []
        for k, p in enumerate(self.val_pairs):
            maps = {key: v.float() for key, v in self._maps(p["image"].to(device)).items()}
            kp = [p["keypoints0"].to(device), p["keypoints1"].to(device)]
            cache[k] = [sample_descriptors({key: v[s:s + 1] for key, v in maps.items()}, kp[s][None], size)[0]
                        for s in (0, 1)]
            if len(kp[0]) == 0 or len(kp[1]) == 0:
                continue
            norm = normalize_maps(maps)
            res = match_coarse_to_fine(kp[0][None], {key: v[:1] for key, v in norm.items()},
                                       {key: v[1:] for key, v in norm.items()}, extent, extent,
                                       temperature=lc.temperature, window_size=lc.window_size,
                                       chunk_size=lc.chunk_size)
            K0, K1, T = (torch.as_tensor(p[key], dtype=torch.float32, device=device)[None]
                         for key in ("K0", "K1", "T_0to1"))
            F01 = fundamental_from_pose(K0, K1, T)
            valid = epipolar_line_valid(kp[0][None], F01, size)[0]
            coarse_err.append(epipolar_errors(kp[0][None], res["coarse_points"], F01)[0][valid].cpu())
            fine_err.append(epipolar_errors(kp[0][None], res["fine_points"], F01)[0][valid].cpu())
        errs = self._pose_errors(lambda k, p: cache[k])
        out = {f"auc@{t}": a for t, a in zip(thresholds, pose_auc(errs, thresholds))}
        ce = torch.cat(coarse_err) if coarse_err else torch.zeros(0)
        fe = torch.cat(fine_err) if fine_err else torch.zeros(0)
        for name, e in (("coarse_error", ce), ("fine_error", fe)):
            out[name] = float(e.mean()) if len(e) else float("nan")
            out[f"{name}_median"] = float(e.median()) if len(e) else float("nan")
        return {**out, **self._sift_baseline}

    def save_weights(self, path: Path, info: dict) -> Path:
        return save_caps_weights(self.model, path, extra={"training": info,
                                                          "image_size": list(self.conf.data.image_size)})


# ------------------------------------------------------------------------------------------------ CLI hooks
def add_arguments(parser) -> None:
    """Data arguments of ``featlab train caps`` (the common ones are added by featlab.commands.train)."""
    hooks.add_path_arguments(parser, ("data", "colmap", "val_data"))


apply_arguments = hooks.apply_path_arguments


def check_posed_sources(conf, has_data: bool, flags: str) -> None:
    """A pose-supervised task needs some training data (``has_data``, else "pass ``flags``"); its COLMAP folders
    pass the split guard too (Herz-Jesus-P25 is evaluation only)."""
    if not has_data:
        raise ConfigError(f"no training data: pass {flags}")
    splits.check_sources([splits.Source("train", str(f), None, "data.colmap") for f in conf.data.colmap],
                         allow_eval_data=bool(conf.data.allow_eval_data))


def check_conf(conf) -> None:
    d = conf.data
    check_posed_sources(conf, bool(d.root or d.colmap or int(d.synthetic.scenes)),
                        "--data SEQUENCE_DIR, --colmap PROJECT_DIR and/or data.synthetic.scenes=N")


check_export = hooks.export_name_check("caps-resnet18")


def build_task(conf) -> CAPSTask:
    return CAPSTask(conf)


export_weights = hooks.weights_exporter(load_caps_weights, "caps-resnet18")


__all__ = ["default_conf", "CAPSTask", "PosedPairStream", "RGBDPairs", "ColmapPairs", "ConcatPairs", "synthetic_pairs",
           "training_pairs", "check_posed_sources", "COLMAP_DATA_CONF", "prepare_posed_val_pairs",
           "resize_with_intrinsics", "sample_queries", "export_weights"]
