"""Training task of ``depthkp``: keypoints and descriptors learned on depth maps from poses only (RECIPES section 4,
:mod:`featlab.losses.depthkp`, :mod:`featlab.nn.depthnet`).

Data: pairs of posed depth maps from two sources, mixed in one list of pairs:

- an RGB-D sequence (``data.root``, CLI ``--data``; 7-Scenes / TUM layout through
  :class:`featlab.datasets.rgbd.RGBDSequence`): frame pairs ``(i, i + gap)`` inside ``data.frame_range`` (7-Scenes:
  frames 0-349, the split rule) with depth-checked covisibility >= ``data.min_covisibility``. The depth maps are read
  at 640x480 and resized (nearest, pixel-centre aligned) to ``data.image_size``, K scaled to match. 7-Scenes depth
  intrinsics: fx = fy = 585 (the depth sensor's, configs/depthkp.yaml), not the 525 featlab uses for its colour;
- ``data.synthetic.scenes`` rendered rooms (:func:`featlab.datasets.render.render_collection`, **synthetic**, exact
  depth and poses; seeds ``data.synthetic.seed + s``), rendered at ``data.image_size`` once when the task is built,
  pairs ``(i, i + gap)`` of ``data.synthetic.gaps`` with the same covisibility bound. Kinect-like axial noise
  (sigma = ``data.synthetic.depth_noise`` x z^2 metres) and millimetre quantisation are added per sample, so the
  clean renders look more like sensor depth.

Sample ``i`` of the training stream (step s, slot b: i = s * batch_size + b) takes pair ``EpochShuffle(seed)(i)``
and draws its randomness (the swap of the two views, the noise) from ``role_rng(seed, "train", i)``: the batch of
step s is a function of (seed, s), so resumed runs see the same data.

Step: both depth maps of every pair through the network in one batch (Siamese, shared weights); the sampling
layer keeps ``data.num_proposals`` proposals per map; :func:`featlab.losses.depthkp.depthkp_loss` (both directions).

Validation (selection, 7-Scenes frames 360-399 by default; never 400-499): pairs at ``val.gaps``; top
``val.max_keypoints`` proposals per map at the training resolution; mutual nearest-neighbour matches; matched
keypoints lifted to 3D with their depth; ``inlier_ratio``: share of matches within ``val.inlier_distance`` m of
each other under the ground-truth pose (mean over pairs; the selection metric); ``match_count``; 3-point Kabsch
RANSAC with refinement (:func:`featlab.geometry.rigid.estimate_rigid_ransac`, the benchmark's solver), ``recall@5deg10cm`` and ``recall@2deg5cm`` (registration recall),
``rot_error_median``/``trans_error_median``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from ..conf import checked, deep_update, none_or, resolve_conf, to_container
from ..datasets import splits
from ..datasets import rgbd as rgbd_module
from ..datasets.posed import resize_depth_nearest
from ..errors import ConfigError, InputError
from ..extractors.depthkp import load_depthkp_weights, save_depthkp_weights
from ..geometry.depth import backproject, covisibility, sample_depth_nearest
from ..geometry.rigid import estimate_rigid_ransac, rigid_errors
from ..losses.depthkp import DepthKPLoss
from ..losses.depthkp import default_conf as loss_default_conf
from ..nn.depthnet import DepthKPNet, sample_proposals, valid_cells
from ..nn.depthnet import default_conf as model_default_conf
from ..rng import role_rng
from . import hooks, loop

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "depthkp.yaml"
SUMMARY = "keypoints + descriptors learned on depth maps (Georgakis et al. 2018) from poses only"

default_conf = {
    "model": model_default_conf,  # network, see featlab.nn.depthnet
    "data": {
        "root": none_or(str, Path),  # RGB-D sequence folder (7-Scenes or TUM layout; CLI --data); null: synthetic only
        "rgbd": rgbd_module.default_conf,  # sequence reader (configs/depthkp.yaml: focal 585, the depth sensor's)
        "frame_range": list(splits.TRAIN_FRAMES),  # [start, stop) frames of the training pairs
        "allow_eval_data": False,  # true: allow training/selecting on evaluation-only data (featlab.datasets.splits)
        "gaps": [10, 20, 30],  # frame gaps of the sequence pairs
        "min_covisibility": checked(0.3, ge=0, le=1),  # depth-checked overlap of a pair (both directions)
        "max_pairs_per_gap": none_or(int),  # cap on sequence pairs per gap; null: every candidate that passes
        "image_size": [240, 320],  # [H, W] of the training depth maps (multiples of 8); K scaled accordingly
        "batch_size": checked(2, ge=1),  # pairs per step
        "num_workers": checked(0, ge=0),  # DataLoader worker processes (0: in the training process)
        "num_proposals": checked(256, ge=8),  # proposals kept per map by the sampling layer during training
        "nms_radius": checked(1, ge=0),  # cells (stride 4) of the proposals' NMS
        "swap_views": True,  # exchange view 0 and view 1 of a pair at random (per sample)
        "synthetic": {
            "scenes": checked(2, ge=0),  # rendered rooms (featlab.datasets.render), labelled synthetic
            "frames": checked(60, ge=2),  # views per room (a smooth trajectory, 3 degrees a frame)
            "seed": checked(1000, ge=0),  # room s uses render seed seed + s
            "gaps": [4, 8, 12],  # frame gaps of the synthetic pairs
            "depth_noise": checked(0.0015, ge=0),  # Kinect-like axial noise: sigma = depth_noise * z^2 (m)
            "render": none_or(dict),  # more featlab.datasets.render settings (e.g. num_boxes, hfov); image_size is data's
        },
    },
    "val": {
        "root": none_or(str, Path),  # sequence of the validation pairs; null: data.root
        "frame_range": list(splits.SELECT_FRAMES),  # [start, stop) selection frames (400-499 only report)
        "gaps": [20, 30],  # frame gaps of the validation pairs
        "min_covisibility": checked(0.3, ge=0, le=1),
        "num_pairs": checked(12, ge=0),  # pairs kept (evenly spaced over the candidates); 0: no validation
        "max_keypoints": checked(1000, ge=1),  # proposals per map
        "inlier_distance": checked(0.1, gt=0),  # m: a match is an inlier when its 3D points agree this well (GT pose)
        "ransac_threshold": checked(0.05, gt=0),  # m: inlier threshold of the 3-point RANSAC
        "ransac_iterations": checked(2000, ge=1),
    },
    "loss": loss_default_conf,  # see featlab.losses.depthkp
    "train": deep_update(loop.default_conf, {"lr": 1e-3, "best_metric": "inlier_ratio", "max_steps": 2000,
                                             "val_every": 250, "checkpoint_every": 250}),
}


# --------------------------------------------------------------------------------------------------- data
def scale_intrinsics(K: np.ndarray, from_size, to_size) -> np.ndarray:
    """K of a map of (H, W) ``from_size`` resized to ``to_size``: ``diag(sx, sy, 1) K`` (exact in featlab pixels)."""
    (h, w), (h2, w2) = from_size, to_size
    return np.diag([w2 / w, h2 / h, 1.0]) @ np.asarray(K, np.float64)


class DepthPairList:
    """Posed depth pairs of one source. Items: ``{"name", "depth0", "depth1"`` float32 (H, W) metres at
    ``image_size``, ``"K0", "K1"`` (3, 3), ``"T_0to1"`` (4, 4), ``"synthetic"`` bool}.

    Args:
        load_depth: frame index -> (H, W) float32 metres at any size; K: (3, 3) of that size.
        relative_pose: (i, j) -> T_0to1 (4, 4).
        pairs: list of (i, j).
    """

    def __init__(self, name: str, load_depth, K, relative_pose, pairs, image_size, synthetic: bool):
        self.name, self._load, self.K, self._rel = name, load_depth, np.asarray(K, np.float64), relative_pose
        self.pairs, self.size, self.synthetic = list(pairs), tuple(int(v) for v in image_size), bool(synthetic)

    def __len__(self) -> int:
        return len(self.pairs)

    def _depth(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        d = self._load(i)
        return resize_depth_nearest(d, self.size), scale_intrinsics(self.K, d.shape, self.size)

    def __getitem__(self, k: int) -> dict:
        i, j = self.pairs[k]
        (d0, K0), (d1, K1) = self._depth(i), self._depth(j)
        return {"name": f"{self.name}/{i}_{j}", "depth0": d0, "depth1": d1, "K0": K0, "K1": K1,
                "T_0to1": np.asarray(self._rel(i, j), np.float64), "synthetic": self.synthetic}


def sequence_pairs(root, rgbd_conf, frame_range, gaps, min_covisibility, max_pairs_per_gap, image_size,
                   num_pairs: int | None = None, seed: int = 0) -> DepthPairList:
    """Depth pairs of an RGB-D sequence (see the module docstring); ``num_pairs`` keeps that many, evenly spaced."""
    seq = rgbd_module.RGBDSequence(root, rgbd_conf)
    pairs = seq.make_pairs(gaps=tuple(int(g) for g in gaps), min_covisibility=float(min_covisibility),
                           max_pairs_per_gap=max_pairs_per_gap, frame_range=tuple(frame_range), seed=seed)
    if num_pairs is not None and len(pairs) > num_pairs:
        pairs = [pairs[int(k)] for k in np.linspace(0, len(pairs) - 1, int(num_pairs)).round()]
    if not pairs:
        raise InputError(f"no depth pairs in {root} for frames {list(frame_range)}, gaps {list(gaps)} with "
                         f"covisibility >= {min_covisibility}")
    return DepthPairList(seq.name, seq.load_depth, seq.K, seq.relative_pose, pairs, image_size, synthetic=False)


def synthetic_pairs(syn_conf, image_size, min_covisibility: float) -> list[DepthPairList]:
    """Rendered rooms (labelled synthetic) and their covisible pairs, one :class:`DepthPairList` per room."""
    from ..datasets.render import render_collection

    out = []
    for s in range(int(syn_conf.scenes)):
        conf = deep_update(to_container(syn_conf.render) or {}, {"seed": int(syn_conf.seed) + s, "num_frames": int(syn_conf.frames),
                                                   "image_size": [int(v) for v in image_size]})
        coll = render_collection(conf)
        depths = [coll.load_depth(k) for k in range(len(coll))]
        pairs = []
        for gap in syn_conf.gaps:
            for i in range(len(coll) - int(gap)):
                j = i + int(gap)
                T = coll.relative_pose(i, j)
                c = min(covisibility(depths[i], depths[j], coll.K[i], coll.K[j], T),
                        covisibility(depths[j], depths[i], coll.K[j], coll.K[i], np.linalg.inv(T)))
                if c >= min_covisibility:
                    pairs.append((i, j))
        out.append(DepthPairList(coll.name, depths.__getitem__, coll.K[0], coll.relative_pose, pairs, image_size,
                                 synthetic=True))
    return out


class DepthPairStream(Dataset):
    """Training samples by global index (unbounded) from a list of :class:`DepthPairList` (module docstring).

    Item (fixed shapes, stacked by the default collate)::

        depth0, depth1  float32 (1, H, W) metres (0 invalid)
        K0, K1          float32 (3, 3) featlab pixels
        T_0to1          float32 (4, 4)
    """

    def __init__(self, sources: list[DepthPairList], data_conf, seed: int):
        self.index = [(s, k) for s, src in enumerate(sources) for k in range(len(src))]
        if not self.index:
            raise InputError("the depth-pair training set is empty")
        self.sources, self.seed = sources, int(seed)
        self.noise = float(data_conf.synthetic.depth_noise)
        self.swap = bool(data_conf.swap_views)
        self._shuffle = loop.EpochShuffle(self.seed)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict:
        rng = role_rng(self.seed, "train", int(index))
        s, k = self.index[self._shuffle(int(index), len(self.index))]
        item = self.sources[s][k]
        views = ("0", "1")
        T = item["T_0to1"]
        if self.swap and rng.random() < 0.5:
            views, T = ("1", "0"), np.linalg.inv(T)
        out = {"T_0to1": T.astype(np.float32)}
        for dst, src in zip(("0", "1"), views):
            d = item[f"depth{src}"].astype(np.float32)
            if item["synthetic"] and self.noise > 0:
                valid = d > 0
                d = d + rng.standard_normal(d.shape).astype(np.float32) * np.float32(self.noise) * d * d
                d = np.where(valid & (d > 0), np.round(d * 1000.0) / 1000.0, 0.0).astype(np.float32)
            out[f"depth{dst}"] = d[None]
            out[f"K{dst}"] = item[f"K{src}"].astype(np.float32)
        return out


# ------------------------------------------------------------------------------------------------------ task
def propose(net: DepthKPNet, depth: torch.Tensor, k: int, nms_radius: int) -> dict:
    """Network + sampling layer on (B, 1, H, W) depth -> :func:`featlab.nn.depthnet.sample_proposals` output plus
    ``descriptor_map`` (B, D, H/4, W/4)."""
    maps = net(depth)
    out = sample_proposals(maps["scores"], maps["descriptors"], valid_cells(depth), k, depth.shape[-2:], nms_radius)
    out["descriptor_map"] = maps["descriptors"]
    return out


class DepthKPTask(loop.TrainingTask):
    """Data, loss and validation of ``depthkp`` for :func:`featlab.training.loop.train`.

    Args:
        conf: the experiment config (:data:`default_conf`).
        train_sources: list of :class:`DepthPairList`; None: built from ``conf.data``.
        val_pairs: a :class:`DepthPairList` for validation; None: built from ``conf.val`` when a sequence is set.
    """

    def __init__(self, conf, train_sources=None, val_pairs=None):
        self.conf = conf = resolve_conf(default_conf, conf, "")
        d = conf.data
        if len(d.image_size) != 2 or any(int(v) < 16 or int(v) % 8 for v in d.image_size):
            raise ConfigError(f"data.image_size must be [H, W], multiples of 8 and >= 16, got {list(d.image_size)}")
        self.model = DepthKPNet(conf.model)
        self.loss_fn = DepthKPLoss(conf.loss)
        if train_sources is None:
            train_sources = []
            if d.root:
                train_sources.append(sequence_pairs(d.root, d.rgbd, d.frame_range, d.gaps, d.min_covisibility,
                                                    d.max_pairs_per_gap, d.image_size, seed=int(conf.train.seed)))
            train_sources += synthetic_pairs(d.synthetic, d.image_size, float(d.min_covisibility))
        self.sources = train_sources
        self.dataset = DepthPairStream(train_sources, d, seed=int(conf.train.seed))
        v = conf.val
        if val_pairs is None and (v.root or d.root) and int(v.num_pairs) > 0:
            val_pairs = sequence_pairs(v.root or d.root, d.rgbd, v.frame_range, v.gaps, v.min_covisibility, None,
                                       d.image_size, num_pairs=int(v.num_pairs))
        self.val_items = [val_pairs[k] for k in range(len(val_pairs))] if val_pairs is not None else []

    def describe_data(self) -> dict:
        """Pair counts per source (synthetic ones labelled), for the run's record."""
        return {src.name + (" (synthetic)" if src.synthetic else ""): len(src) for src in self.sources}

    def batches(self, start_step: int) -> Iterator[dict]:
        return loop.iterate_batches(self.dataset, self.conf.data.batch_size, self.conf.data.num_workers, start_step)

    def set_compute(self, dtype: str, channels_last: bool) -> None:
        self.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def training_step(self, batch: dict, step: int):
        b = batch["depth0"].shape[0]
        d = self.conf.data
        out = propose(self.model, torch.cat([batch["depth0"], batch["depth1"]]), int(d.num_proposals),
                      int(d.nms_radius))
        pred = {f"{key}{s}": v[sl] for key, v in out.items() if key != "keypoint_scores"
                for s, sl in (("0", slice(0, b)), ("1", slice(b, 2 * b)))}
        pred = {k: (v.float() if v.is_floating_point() else v) for k, v in pred.items()}
        losses, metrics = self.loss_fn(pred, {**batch, "seed": step})
        terms = {f"loss_{k}": v.detach() for k, v in losses.items() if k != "total"}
        return losses["total"], {**terms, **metrics}

    def validate(self) -> dict[str, float]:
        if not self.val_items:
            return {}
        v = self.conf.val
        device = next(self.model.parameters()).device
        rng = role_rng(int(self.conf.train.seed), "select", 0)
        ratios, counts, rot, trans = [], [], [], []
        for item in self.val_items:
            depth = torch.from_numpy(np.stack([item["depth0"], item["depth1"]]))[:, None].to(device)
            out = propose(self.model, depth, int(v.max_keypoints), int(self.conf.data.nms_radius))
            X = []
            for s in range(2):
                m = out["keypoint_masks"][s]
                kp = out["keypoints"][s][m][None].float()
                z = sample_depth_nearest(depth[s:s + 1, 0], kp)
                K = torch.as_tensor(item[f"K{s}"], dtype=torch.float32, device=device)
                X.append((backproject(kp, z, K)[0].cpu().numpy(), out["descriptors"][s][m].float()))
            from ..matching import match_descriptors

            m0, _ = match_descriptors(X[0][1].cpu(), X[1][1].cpu(), mutual=True)
            m0 = m0.numpy()
            ok = m0 >= 0
            P, Q = X[0][0][ok].astype(np.float64), X[1][0][m0[ok]].astype(np.float64)
            T = item["T_0to1"]
            counts.append(len(P))
            gt_res = np.linalg.norm(P @ T[:3, :3].T + T[:3, 3] - Q, axis=-1)
            ratios.append(float((gt_res < float(v.inlier_distance)).mean()) if len(P) else 0.0)
            R, t, _ = estimate_rigid_ransac(P, Q, float(v.ransac_threshold), max_iters=int(v.ransac_iterations),
                                            rng=rng) if len(P) >= 3 else (None, None, None)
            er, et = rigid_errors(T, R, t)  # inf when it fails
            rot.append(er)
            trans.append(et)
        rot, trans = np.array(rot), np.array(trans)
        return {"inlier_ratio": float(np.mean(ratios)), "match_count": float(np.mean(counts)),
                "recall@5deg10cm": float(np.mean((rot < 5) & (trans < 0.10))),
                "recall@2deg5cm": float(np.mean((rot < 2) & (trans < 0.05))),
                "rot_error_median": float(np.median(rot)), "trans_error_median": float(np.median(trans))}

    def save_weights(self, path: Path, info: dict) -> Path:
        return save_depthkp_weights(self.model, path, extra={
            "training": info, "image_size": [int(v) for v in self.conf.data.image_size],
            "data": self.describe_data(), "loss": to_container(self.conf.loss)})


# ------------------------------------------------------------------------------------------------ CLI hooks
def add_arguments(parser) -> None:
    """Data arguments of ``featlab train depthkp`` (the common ones are added by featlab.commands.train)."""
    hooks.add_path_arguments(parser, ("data", "val_data"),
                             {"data": "rendered synthetic rooms are added (data.synthetic.scenes)"})


apply_arguments = hooks.apply_path_arguments


def check_conf(conf) -> None:
    if not conf.data.root and int(conf.data.synthetic.scenes) == 0:
        raise ConfigError("no training data: pass --data SEQUENCE_DIR or set data.synthetic.scenes >= 1")


check_export = hooks.export_name_check("depthkp")


def build_task(conf) -> DepthKPTask:
    return DepthKPTask(conf)


export_weights = hooks.weights_exporter(load_depthkp_weights, "depthkp")


__all__ = ["default_conf", "DepthKPTask", "DepthPairStream", "DepthPairList", "sequence_pairs", "synthetic_pairs",
           "export_weights"]
