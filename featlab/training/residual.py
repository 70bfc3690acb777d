"""Training task of the residual descriptor (see :mod:`featlab.extractors.residual` and RECIPES section 1).

Self-supervised: each sample is a photo crop and its warp by a random homography, both photometrically augmented
(:mod:`featlab.datasets.homographies`, the same pipeline as :class:`featlab.datasets.synthetic.
SyntheticHomographyPairs`). The handcrafted extractor g runs on both images inside the data workers (numpy/OpenCV,
so its descriptors are constants: no gradient can reach g). Ground-truth correspondences
(:func:`homography_correspondences`): keypoints of image 0 whose H-warp lands within ``data.match_radius`` px of a
keypoint of image 1, mutual closest. The network (h + f) is trained with the triplet loss of
:mod:`featlab.losses.triplet`.

Sample ``i`` of the training stream (step s, batch b: i = s * batch_size + b) draws all its randomness from
``featlab.rng.role_rng(seed, "train", i)`` and its photo from a per-epoch permutation seeded by ``(seed, epoch)``,
so a resumed run sees the same batches as an uninterrupted one, with any number of data workers; and no training
pair repeats a warp of the benchmark (role "benchmark") or of the validation set (role "select").

Data (the split rule, :mod:`featlab.datasets.splits`): ``configs/residual.yaml`` trains on ``bsds500/train`` and
``sun_hays80`` and selects on ``bsds500/val`` of the data root when ``--photos`` / ``--val-photos`` are not given;
``bsds500/test`` (the synthetic-warp benchmark's photos) is refused for both unless ``data.allow_eval_data=true``.

Validation: a fixed, deterministic set of synthetic warps of held-out photos (``val.num_pairs`` pairs, centre
crops, seeded by ``val.seed``, role "select"); mutual nearest-neighbour matching; MMA@1/3/5, matching score@3
(:mod:`featlab.eval.metrics`) and the number of correct matches, plus the same numbers for g's own descriptors
(``g_mma@3``, ``g_ms@3``) as the baseline to beat.

Model selection (``train.best_metric``, set to ``ms@3`` in ``configs/residual.yaml``): the triplet loss trains the
keypoints that have a ground-truth match and says nothing about the others (most SIFT keypoints are not
repeated). Training raises the matching score (correct matches / keypoints) but also the number of mutual
matches between unmatched keypoints, so MMA@3 (precision of all mutual matches) *falls* at first, even when
over-fitting a single batch to zero loss (measured: MMA@3 0.60 -> 0.53, MS@3 0.35 -> 0.40). Selecting by MMA@3
would keep the untrained model; the paper's headline metric is the matching score.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from ..conf import none_or, resolve_conf, to_container
from ..datasets import homographies, splits
from ..datasets.synthetic import SyntheticHomographyPairs, resize_and_crop, warp_image
from ..errors import ConfigError, InputError
from ..extractors.residual import (ResidualDescriptorNet, load_residual_weights,
                                   save_residual_weights, variant_mismatch)
from ..io.image import image_to_tensor, list_images, read_image
from ..io.weights import check_export_name
from ..losses.triplet import TripletLoss
from ..rng import role_rng
from . import hooks, loop

logger = logging.getLogger(__name__)

#: the experiment config used when --config is not given
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "residual.yaml"
SUMMARY = "residual descriptor: handcrafted g + learned residual (h, f), synthetic homographies"

default_conf = {
    "model": ResidualDescriptorNet.default_conf,  # h/f/fusion, see featlab.extractors.residual
    "handcrafted": {
        "name": "sift",  # g: a registered handcrafted extractor (sift, rootsift, rootsift-upright, surf...)
        "max_keypoints": 512,  # keypoints per image (bounds memory: the loss is O(N^2) per pair)
        "conf": none_or(dict),  # other keys of g's own config (e.g. {contrast_threshold: 0.03})
    },
    "data": {
        "photos": [],  # training photo folders (CLI --photos, repeatable; configs/residual.yaml: the split rule's)
        "allow_eval_data": False,  # true: allow training/selecting on evaluation-only data (featlab.datasets.splits)
        "image_size": [240, 320],  # [H, W] of both images of a pair (scale to cover, then random crop)
        "batch_size": 4,  # pairs per step
        "num_workers": 1,  # DataLoader worker processes (0: load in the training process)
        "match_radius": 3.0,  # px: a warped keypoint of image 0 and a keypoint of image 1 closer than this match
        "homography": homographies.default_conf,  # random homographies, see featlab.datasets.homographies
        "photometric": homographies.photometric_default_conf,  # applied independently to both images
    },
    "val": {
        "photos": none_or(str, Path),  # held-out photo folder (CLI --val-photos; configs/residual.yaml: bsds500/val)
        "num_pairs": 30,  # pairs in the fixed validation set (one per photo, first photos by path)
        "seed": 1234,  # seed of the validation warps
        "threshold": 3.0,  # px, correctness threshold of the matching score
    },
    "init": {
        # residual weights (.safetensors) whose h initialises this model's h, e.g. the best weights of a
        # "without fusion" run. Same backbone and batchnorm needed; an output layer of another width (256 -> 128)
        # is projected onto the top principal directions of its outputs on `pca_photos` training photos
        "h_from": none_or(str, Path),
        "pca_photos": 16,
        "f": "default",  # default (PyTorch init) | identity: f starts as exactly f(g) = g (ReLU-safe [I; -I] layout)
    },
    "loss": TripletLoss.default_conf,  # margin, distance, mining, see featlab.losses.triplet
    "train": loop.default_conf,  # optimiser, steps, checkpoints, precision, see featlab.training.loop
}


# ----------------------------------------------------------------------------------------- correspondences
def homography_correspondences(kpts0: np.ndarray, kpts1: np.ndarray, H_0to1: np.ndarray, radius: float,
                               desc0: np.ndarray | None = None, desc1: np.ndarray | None = None) -> np.ndarray:
    """Ground-truth matches between two keypoint sets related by a homography.

    Keypoint i of image 0 matches keypoint j of image 1 when j is the closest keypoint to H(x0_i), i is the
    closest (warped) keypoint of image 0 to x1_j, and their distance is <= ``radius``. Exact ties (SIFT repeats a
    location once per dominant orientation) are broken by the handcrafted descriptor distance when descriptors
    are given: the cost is ``pixel distance + 1e-3 * descriptor distance`` (at most 0.002 px for unit vectors,
    so it only orders near-coincident candidates).

    Args:
        kpts0: (N0, 2), kpts1: (N1, 2) featlab pixels; H_0to1: (3, 3); radius: pixels.
        desc0: (N0, D), desc1: (N1, D) optional descriptors for tie breaking.
    Returns:
        matches0: (N0,) int64, index into kpts1 or -1.
    """
    from ..geometry.homography import warp_points_homography

    n0, n1 = len(kpts0), len(kpts1)
    matches0 = np.full(n0, -1, dtype=np.int64)
    if n0 == 0 or n1 == 0:
        return matches0
    warped = np.asarray(warp_points_homography(np.asarray(kpts0, np.float64), H_0to1))
    dist = np.linalg.norm(warped[:, None, :] - np.asarray(kpts1, np.float64)[None], axis=-1)
    dist = np.where(np.isfinite(dist), dist, np.inf)
    cost = dist
    if desc0 is not None and desc1 is not None:
        ddist = np.sqrt(np.maximum(2.0 - 2.0 * np.asarray(desc0, np.float64) @ np.asarray(desc1, np.float64).T,
                                   0.0))
        cost = dist + 1e-3 * ddist
    nn01 = cost.argmin(1)
    nn10 = cost.argmin(0)
    i = np.arange(n0)
    ok = (nn10[nn01] == i) & (dist[i, nn01] <= radius)
    matches0[ok] = nn01[ok]
    return matches0


def _pad_tensor(t: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([t, t.new_zeros((n - len(t), *t.shape[1:]))]) if len(t) < n else t


def _pad(array: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros((n, *array.shape[1:]), dtype=array.dtype)
    out[: len(array)] = array[:n]
    return out


# ------------------------------------------------------------------------------------------ initialisation
def identity_init_mlp(mlp) -> None:
    """Set an :class:`featlab.nn.MLP` to the exact identity: layer 1 = [I; -I], middle layers = I, last = [I, -I],
    biases 0, so that ReLU(x) - ReLU(-x) = x passes any input (SURF's signed values too).

    Raises:
        ConfigError: no f (fusion none), or widths that cannot hold it (hidden >= 2 x input, output == input).
    """
    if mlp is None:
        raise ConfigError("init.f=identity needs an f (model.fusion is none)")
    dims = mlp.dims
    d = dims[0]
    if dims[-1] != d or min(dims[1:-1], default=2 * d) < 2 * d:
        raise ConfigError(f"init.f=identity needs f_dims with hidden widths >= {2 * d} and output {d}, got {dims}")
    linears = [m for m in mlp.layers if isinstance(m, torch.nn.Linear)]
    eye = torch.eye(d)
    with torch.no_grad():
        for i, lin in enumerate(linears):
            lin.weight.zero_()
            lin.bias.zero_()
            if len(linears) == 1:
                lin.weight.copy_(eye)
            elif i == 0:
                lin.weight[:d] = eye
                lin.weight[d:2 * d] = -eye
            elif i == len(linears) - 1:
                lin.weight[:, :d] = eye
                lin.weight[:, d:2 * d] = -eye
            else:
                lin.weight[:2 * d, :2 * d] = torch.eye(2 * d)


def init_h_from(model: ResidualDescriptorNet, path, photos: list[Path], size) -> None:
    """Copy h from the residual weights at ``path`` into ``model.h``; an output layer of another width is
    projected onto the top principal directions (uncentred) of the source's dense outputs on ``photos``.

    Raises:
        InputError: unreadable weights; ConfigError: another backbone/batchnorm or fewer source channels.
    """
    src, meta = load_residual_weights(path)
    for key in ("backbone", "batchnorm"):
        if meta["model"].get(key) != model.conf[key]:
            raise ConfigError(f"init.h_from: the weights have model.{key}={meta['model'].get(key)!r}, this model "
                              f"{model.conf[key]!r}")
    src_state = src.h.state_dict()
    last = model.h.head[-1]
    src_last = src.h.head[-1]
    out, src_out = last.weight.shape[0], src_last.weight.shape[0]
    if src_out < out:
        raise ConfigError(f"init.h_from: the source h has {src_out} output channels, fewer than this h's {out}")
    with torch.no_grad():
        if src_out > out:
            if not photos:
                raise ConfigError("init.h_from: no training photos to fit the output projection on")
            feats = []
            for p in photos:
                image = resize_and_crop(read_image(p), size)
                feats.append(src.dense(image_to_tensor(image)).flatten(2)[0])  # (C, h*w)
            Y = torch.cat(feats, 1).double()
            vals, vecs = torch.linalg.eigh(Y @ Y.T / Y.shape[1])  # ascending eigenvalues
            V = vecs[:, -out:].flip(1).float()  # (src_out, out) top directions
            energy = float(vals[-out:].sum() / vals.sum())
            w = src_last.weight.flatten(1)  # (src_out, in)
            src_state = {**src_state}
            prefix = next(n for n, prm in src.h.named_parameters() if prm is src_last.weight)[: -len("weight")]
            src_state[prefix + "weight"] = (V.T @ w).reshape(out, *src_last.weight.shape[1:])
            src_state[prefix + "bias"] = V.T @ src_last.bias
        model.h.load_state_dict(src_state)
    logger.info("h initialised from %s%s", path, f" (output {src_out} -> {out} by PCA on {len(photos)} photos, "
                f"{100 * energy:.2f}% of the output energy kept)" if src_out > out else "")


# --------------------------------------------------------------------------------------------------- dataset
class HomographyPairStream(Dataset):
    """Training samples by global index ``i`` (unbounded): a warped photo pair with g's keypoints and descriptors.

    Item (numpy, fixed shapes so that the default collate stacks them; K = handcrafted.max_keypoints)::

        image0, image1                 float32 (3, H, W) in [0, 1]
        keypoints0, keypoints1         float32 (K, 2) featlab pixels (zero-padded)
        g_descriptors0, g_descriptors1 float32 (K, D) handcrafted descriptors (zero-padded)
        keypoint_masks0, keypoint_masks1 bool (K,)
        matches0                       int64 (K,) index into keypoints1, -1 unmatched/padded
        H_0to1                         float64 (3, 3)
    """

    def __init__(self, photos: list[Path], conf, seed: int):
        if not photos:
            raise ConfigError("no training photos: pass --photos DIR (or set data.photos)")
        self.photos = list(photos)
        self.data_conf = conf.data
        self.g_name = conf.handcrafted.name
        self.g_conf = {**(to_container(conf.handcrafted.conf) or {}), "max_keypoints": conf.handcrafted.max_keypoints}
        self.max_keypoints = int(conf.handcrafted.max_keypoints)
        self.seed = int(seed)
        self.size = tuple(int(v) for v in conf.data.image_size)
        self._homography_conf = to_container(conf.data.homography)
        self._photometric_conf = to_container(conf.data.photometric)
        self._g = None  # built lazily: OpenCV objects are built inside each worker process
        self._shuffle = loop.EpochShuffle(self.seed)

    def __getstate__(self):  # pickled into spawned workers: OpenCV objects are rebuilt there
        return {**self.__dict__, "_g": None}

    def __len__(self) -> int:  # nominal: the stream is unbounded, indices are global sample numbers
        return len(self.photos)

    @property
    def g(self):
        if self._g is None:
            from ..extractors import build_extractor

            self._g = build_extractor(self.g_name, self.g_conf)
        return self._g

    def photo_of(self, index: int) -> Path:
        return self.photos[self._shuffle(index, len(self.photos))]

    def describe(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """g on one uint8 RGB image -> keypoints (N, 2), descriptors (N, D), N <= max_keypoints."""
        with torch.no_grad():
            pred = self.g({"image": image_to_tensor(image)})
        return pred["keypoints"][0].numpy(), pred["descriptors"][0].float().numpy()

    def make_pair(self, image0: np.ndarray, image1: np.ndarray, H_0to1: np.ndarray) -> dict:
        k = self.max_keypoints
        kp0, d0 = self.describe(image0)
        kp1, d1 = self.describe(image1)
        matches0 = homography_correspondences(kp0, kp1, H_0to1, float(self.data_conf.match_radius), d0, d1)
        dim = self.g.descriptor_dim
        return {
            "image0": image_to_tensor(image0)[0], "image1": image_to_tensor(image1)[0],
            "keypoints0": _pad(kp0.astype(np.float32), k), "keypoints1": _pad(kp1.astype(np.float32), k),
            "g_descriptors0": _pad(d0.reshape(-1, dim).astype(np.float32), k),
            "g_descriptors1": _pad(d1.reshape(-1, dim).astype(np.float32), k),
            "keypoint_masks0": np.arange(k) < len(kp0), "keypoint_masks1": np.arange(k) < len(kp1),
            "matches0": np.concatenate([matches0, np.full(k - len(matches0), -1, np.int64)]),
            "H_0to1": np.asarray(H_0to1, np.float64),
        }

    def __getitem__(self, index: int) -> dict:
        rng = role_rng(self.seed, "train", int(index))
        photo = read_image(self.photo_of(int(index)))
        image0 = resize_and_crop(photo, self.size, rng)
        H_0to1 = homographies.sample_homography(rng, self.size, self._homography_conf)
        image1 = warp_image(image0, H_0to1, self.size)
        image0 = homographies.photometric_augment(rng, image0, self._photometric_conf)
        image1 = homographies.photometric_augment(rng, image1, self._photometric_conf)
        return self.make_pair(image0, image1, H_0to1)


# ------------------------------------------------------------------------------------------------------ task
class ResidualTask(loop.TrainingTask):
    """Data, loss and validation of the residual descriptor for :func:`featlab.training.loop.train`."""

    def __init__(self, conf):
        self.conf = conf = resolve_conf(default_conf, conf, "")
        if len(conf.data.image_size) != 2 or min(int(v) for v in conf.data.image_size) < 16:
            raise ConfigError(f"data.image_size must be [H, W] with sides >= 16, got {conf.data.image_size}")
        if int(conf.data.batch_size) < 1 or int(conf.handcrafted.max_keypoints) < 2:
            raise ConfigError("data.batch_size must be >= 1 and handcrafted.max_keypoints >= 2")
        if int(conf.data.num_workers) < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {conf.data.num_workers}")
        self.model = ResidualDescriptorNet(conf.model)
        self.loss_fn = TripletLoss(conf.loss)
        photos = [p for folder in conf.data.photos for p in list_images(folder)]
        self.dataset = HomographyPairStream(photos, conf, seed=int(conf.train.seed))
        if self.dataset.g.descriptor_dim != self.model.conf.g_dim:
            raise ConfigError(f"handcrafted '{conf.handcrafted.name}' gives {self.dataset.g.descriptor_dim}-d "
                              f"descriptors but model.g_dim is {self.model.conf.g_dim}")
        self.val_pairs = self._make_val_pairs() if conf.val.photos else []
        self._g_baseline = None
        if conf.init.f not in ("default", "identity"):
            raise ConfigError(f"init.f must be default or identity, got {conf.init.f!r}")
        if conf.init.f == "identity":
            identity_init_mlp(self.model.f)
        if conf.init.h_from:
            init_h_from(self.model, conf.init.h_from, photos[:: max(1, len(photos) // int(conf.init.pca_photos))]
                        [: int(conf.init.pca_photos)], self.dataset.size)

    # ------------------------------------------------------------------------------------------------ data
    def batches(self, start_step: int) -> Iterator[dict]:
        # spawn: the photos are read and warped with OpenCV in the workers (see loop.iterate_batches)
        return loop.iterate_batches(self.dataset, self.conf.data.batch_size, self.conf.data.num_workers, start_step,
                                    multiprocessing_context="spawn")

    def _make_val_pairs(self) -> list[dict]:
        c = self.conf
        pairs = SyntheticHomographyPairs(c.val.photos, {
            "seed": int(c.val.seed), "role": "select", "max_images": int(c.val.num_pairs), "crop": "center",
            "resize": list(c.data.image_size), "homography": to_container(c.data.homography),
            "photometric": to_container(c.data.photometric)})
        out = []
        for item in pairs:
            pair = self.dataset.make_pair(item["image0"], item["image1"], item["H_0to1"])
            n0, n1 = int(pair["keypoint_masks0"].sum()), int(pair["keypoint_masks1"].sum())
            out.append({
                "image": torch.stack([pair["image0"], pair["image1"]]),
                "keypoints0": torch.from_numpy(pair["keypoints0"][:n0]),
                "keypoints1": torch.from_numpy(pair["keypoints1"][:n1]),
                "g_descriptors0": torch.from_numpy(pair["g_descriptors0"][:n0]),
                "g_descriptors1": torch.from_numpy(pair["g_descriptors1"][:n1]),
                "H_0to1": pair["H_0to1"],
            })
        return out

    # ------------------------------------------------------------------------------------------------ steps
    def set_compute(self, dtype: str, channels_last: bool) -> None:
        self.model.set_compute(dtype, channels_last)

    def training_step(self, batch: dict, step: int):
        b = batch["image0"].shape[0]
        image = torch.cat([batch["image0"], batch["image1"]])
        keypoints = torch.cat([batch["keypoints0"], batch["keypoints1"]])
        g_desc = torch.cat([batch["g_descriptors0"], batch["g_descriptors1"]])
        desc = self.model(image, keypoints, g_desc)
        pred = {"descriptors0": desc[:b], "descriptors1": desc[b:]}
        gen = torch.Generator().manual_seed(int(self.conf.train.seed) * 1_000_003 + int(step))
        losses, metrics = self.loss_fn(pred, batch, generator=gen)
        metrics["match_fraction"] = (batch["matches0"] >= 0).sum() / batch["keypoint_masks0"].sum().clamp(min=1)
        return losses["total"], metrics

    @staticmethod
    def _pair_metrics(pair, desc0, desc1, threshold) -> dict:
        from ..eval.metrics import matching_score, mma
        from ..matching import match_descriptors

        kp0, kp1 = pair["keypoints0"].numpy(), pair["keypoints1"].numpy()
        if len(kp0) == 0 or len(kp1) == 0:
            return {"mma@1": 0.0, "mma@3": 0.0, "mma@5": 0.0, "ms@3": 0.0, "num_matches": 0.0, "num_correct@3": 0.0}
        matches0, _ = match_descriptors(desc0.float(), desc1.float(), mutual=True)
        matches0 = matches0.cpu().numpy() if isinstance(matches0, torch.Tensor) else np.asarray(matches0)
        h, w = pair["image"].shape[-2:]
        acc = mma(kp0, kp1, matches0, pair["H_0to1"], thresholds=(1, 3, 5))
        ms = matching_score(kp0, kp1, matches0, pair["H_0to1"], (h, w), (h, w), threshold=threshold)
        n = float((matches0 >= 0).sum())
        return {"mma@1": acc[0], "mma@3": acc[1], "mma@5": acc[2], "ms@3": ms, "num_matches": n,
                "num_correct@3": acc[1] * n}

    def validate(self) -> dict[str, float]:
        if not self.val_pairs:
            return {}
        thr = float(self.conf.val.threshold)
        if self._g_baseline is None:
            rows = [self._pair_metrics(p, p["g_descriptors0"], p["g_descriptors1"], thr) for p in self.val_pairs]
            self._g_baseline = {"g_mma@3": float(np.mean([r["mma@3"] for r in rows])),
                                "g_ms@3": float(np.mean([r["ms@3"] for r in rows]))}
        rows = []
        for p in self.val_pairs:
            n0, n1 = len(p["keypoints0"]), len(p["keypoints1"])
            n = max(n0, n1, 1)
            # both images in one batch, keypoint sets zero-padded to the same count
            kp = torch.stack([_pad_tensor(p["keypoints0"], n), _pad_tensor(p["keypoints1"], n)])
            gd = torch.stack([_pad_tensor(p["g_descriptors0"], n), _pad_tensor(p["g_descriptors1"], n)])
            dev = next(self.model.parameters()).device
            desc = self.model(p["image"].to(dev), kp.to(dev), gd.to(dev)).cpu()
            rows.append(self._pair_metrics(p, desc[0, :n0], desc[1, :n1], thr))
        out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        return {**out, **self._g_baseline}

    def save_weights(self, path: Path, info: dict) -> Path:
        c = self.conf.handcrafted
        g = {"name": c.name, "conf": {**(to_container(c.conf) or {}), "max_keypoints": int(c.max_keypoints)}}
        return save_residual_weights(self.model, path, g, extra={"training": info})


# ------------------------------------------------------------------------------------------------ CLI hooks
def add_arguments(parser) -> None:
    """Data arguments of ``featlab train residual`` (the common ones are added by featlab.commands.train)."""
    hooks.add_path_arguments(parser, ("photos", "val_photos"))


apply_arguments = hooks.apply_path_arguments


def check_conf(conf) -> None:
    if not conf.data.photos:
        raise ConfigError("no training photos: pass --photos DIR (or set data.photos in the config)")
    if not conf.val.photos:
        raise ConfigError("no validation photos: pass --val-photos DIR (or set val.photos in the config)")
    for key, folder in [*(("data.photos", f) for f in conf.data.photos), ("val.photos", conf.val.photos)]:
        if not Path(folder).is_dir():  # the default folders live in the data root: say how to point elsewhere
            raise InputError(f"{key} folder not found: {folder} (pass --photos/--val-photos DIR, or set "
                             f"{splits.DATA_ENV} to the data root)")


def build_task(conf) -> ResidualTask:
    return ResidualTask(conf)


def _check_export_name(name: str, g_name: str, model_conf: dict) -> None:
    check_export_name(name, "residual-sift-v1")
    if name == "residual-sift":  # the name of the v2 model (another weights format)
        raise ConfigError("cannot export as residual-sift: that is the v2 model (featlab train residual-v2); "
                          "export these weights as residual-sift-v1 or under another name")
    why = variant_mismatch(name, g_name, model_conf)
    if why:
        raise ConfigError(f"cannot export as {name}: {why}; export it under another name")


def check_export(conf, name: str) -> None:
    """Reject an export name before training (bad stem, or a registered name with another handcrafted g)."""
    _check_export_name(name, conf.handcrafted.name, to_container(conf.model))


def _check_exported(name: str, meta: dict) -> None:
    _check_export_name(name, meta["handcrafted"]["name"], meta["model"])


export_weights = hooks.weights_exporter(load_residual_weights, "residual-sift-v1", _check_exported)


__all__ = ["default_conf", "ResidualTask", "HomographyPairStream", "homography_correspondences", "export_weights"]
