"""Training task of SCFeat: descriptors, then a detector, both supervised by camera poses only (RECIPES section 3).

Two stages, each its own resumable run of :func:`featlab.training.loop.train` (``stage`` in the config):

1. ``stage: descriptor``: the F2R network and the coupling bridge (:class:`featlab.nn.f2r.SCFeatNet`, detector
   untouched) learn with the line-to-window loss (:class:`featlab.losses.scfeat.LineToWindowLoss`) on queries at
   one random pixel per ``data.query_cell`` x ``data.query_cell`` cell of each image, both directions.
2. ``stage: detector``: ``init`` = the descriptor run's weights; only the detector trains (the rest is frozen:
   ``requires_grad`` off, so the optimiser never sees it). DISK-style policy gradient, per image: the score map is
   cut into ``detector.cell`` x ``detector.cell`` cells, one pixel is drawn per cell (categorical) and accepted
   (Bernoulli); accepted keypoints of the two images are matched by the dual softmax of their (frozen) descriptor
   cosines; rewards :func:`featlab.losses.scfeat.epipolar_rewards` (+1 / -0.25 at 2 px), or with
   ``detector.f_reward`` SCFeat's fundamental-matrix factor (:func:`fundamental_loss`); loss
   :func:`featlab.losses.scfeat.policy_gradient_loss`.

Choices against the reference's defects (each a config key; docs/MODELS.md, scfeat card):

- ``detector.accept``: ``ratio`` (featlab) draws the cell pixel with probability proportional to its score and
  accepts it with probability ``s / (1 + s)`` (logit ``log s``), which spans (0, 1); ``reference`` uses the
  non-negative softplus scores themselves as logits, so acceptance is always at least 0.5.
- the 8-point draws come from the training process's torch generator (seeded by the loop, restored on resume), so
  every step draws new subsets over all good matches (the reference re-seeds on every call and never picks the
  last match); the F error is measured in normalised camera coordinates (:func:`featlab.geometry.eight_point.
  fundamental_error`), not between pixel-coordinate matrices.
- descriptors are extracted from the map the loss trains (``model.extract_from: local``).
- devices are chosen by the loop (``train.device``), never hard-coded.

Data (posed pairs, no depth, no correspondences): a 7-Scenes / TUM sequence (``data.root``, frames
``data.frame_range``, depth-checked covisible pairs at ``data.gaps``) and any COLMAP models with posed images
(``data.colmap``, e.g. Strecha castle-P30; pairs of index gap ``data.colmap_pairs``). Both images of a pair are
resized to ``data.image_size`` with K scaled (an anisotropic resize is exact for pinhole intrinsics) and
colour-jittered. Sample ``i`` of the stream draws all its randomness from ``role_rng(seed, "train", i)``.

Validation (selection pairs, 7-Scenes frames 360-399 by default): relative-pose AUC on ``val.num_pairs`` pairs at
``data.image_size`` with mutual nearest neighbours and ``val.method``: ``auc@5/10/20`` of this stage's features
(descriptor stage: SIFT keypoints + SCFeat descriptors; detector stage: SCFeat keypoints + descriptors, and
``desc_auc@...`` with SIFT keypoints), and ``sift_auc@...`` (SIFT alone) as the baseline.

Decoupled detector: ``detector.descriptor: rootsift`` (or ``sift``) trains the detector for featlab's handcrafted
descriptor instead of SCFeat's map (the network's features stay the detector's input). Its keypoints are described
by (Root)SIFT at ``detector.keypoint_size`` with SIFT's dominant orientation, in the rewards, in validation
(``auc@...``) and in extraction; ``desc_auc@...`` is then that descriptor at SIFT's own keypoints (scales,
orientations): learned keypoints against SIFT's, one descriptor.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import Dataset

from ..conf import deep_update, none_or, resolve_conf, to_container
from ..datasets import homographies, splits
from ..datasets import rgbd as rgbd_module
from ..errors import ConfigError, InputError
from ..extractors.scfeat import (describe_handcrafted, detect_keypoints, handcrafted_describer,
                                 load_scfeat_weights, save_scfeat_weights)
from ..geometry.eight_point import eight_point, fundamental_error, random_subsets
from ..geometry.epipolar import fundamental_from_pose
from ..io.image import image_to_tensor
from ..losses import scfeat as scfeat_losses
from ..nn.f2r import SCFeatNet
from ..nn.f2r import default_conf as model_default_conf
from ..nn.resunet import map_extent
from ..pixels import from_grid_indices, sample_map
from ..rng import role_rng
from . import hooks, loop
from .caps import (COLMAP_DATA_CONF, RGBDPairs, check_posed_sources, prepare_posed_val_pairs,
                   resize_with_intrinsics, training_pairs)

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "scfeat.yaml"
SUMMARY = "SCFeat detector + descriptor, weakly supervised by poses"
STAGES = ("descriptor", "detector")
ACCEPT = ("ratio", "reference")

detector_default_conf = {
    "cell": 8,  # the score map is cut into cell x cell cells, one keypoint drawn per cell
    "accept": "ratio",  # ratio | reference: acceptance probability s / (1 + s) (featlab) or sigmoid(s) >= 0.5
    # with the softplus scores as logits (the reference's defect)
    "match_temperature": 1.0 / 60.0,  # dual softmax of cosines / temperature
    "threshold": 2.0,  # px at data.image_size: a match is good within this of the epipolar line in both images
    "good_reward": 1.0,  # reward of a good match (without the F factor)
    "bad_reward": -0.25,  # reward of a bad match (without the F factor)
    "keypoint_penalty": 0.001,  # cost of each accepted keypoint
    "f_reward": True,  # SCFeat: rewards 1 - L_F (good) and -L_F (bad), L_F = tanh(min F error of 8-point draws);
    # false: the PoSFeat / DISK rewards (good_reward / bad_reward)
    "f_draws": 100,  # random 8-match subsets per pair (fresh each step)
    "min_good_matches": 8,  # fewer good matches: no F estimate, the plain rewards are used for that pair
    "descriptor": "scfeat",  # what describes the keypoints (frozen) for the match rewards and validation: scfeat
    # (the network's map) | sift | rootsift (OpenCV (Root)SIFT at keypoint_size with SIFT's dominant orientation:
    # a detector for featlab's handcrafted-descriptor models; extraction uses the same, from the sidecar)
    "keypoint_size": 4.0,  # OpenCV keypoint size (px at data.image_size) of a handcrafted descriptor; SIFT's
    # detections on 7-Scenes / castle-P30 at 240x320 have a median size of 3.0 (quartiles 2.3 / 4.9)
}

default_conf = {
    "stage": "descriptor",  # descriptor | detector (see the module docstring)
    "init": none_or(str),  # weights (.safetensors with sidecar) to start from; required by the detector stage
    "model": model_default_conf,  # see featlab.nn.f2r
    "data": {
        "root": none_or(str, Path),  # RGB-D sequence (7-Scenes or TUM layout; CLI --data); null: none
        "rgbd": rgbd_module.default_conf,  # sequence reader settings (configs/scfeat.yaml: focal 525)
        "frame_range": list(splits.TRAIN_FRAMES),  # [start, stop) frames of the sequence's training pairs
        "allow_eval_data": False,  # true: allow training/selecting on evaluation-only data (featlab.datasets.splits)
        "gaps": [20],  # frame gaps of the sequence's pairs
        "min_covisibility": 0.3,  # depth-checked overlap of a sequence pair (used only to select pairs)
        "max_pairs_per_gap": none_or(int),  # cap on sequence pairs per gap; null: all that pass
        "max_rotation": 80.0,  # degrees; pairs with a larger relative rotation are dropped
        **COLMAP_DATA_CONF,  # --colmap projects (featlab.training.caps.ColmapPairs)
        "image_size": [240, 320],  # [H, W] both images are resized to (K scaled accordingly)
        "batch_size": 2,  # pairs per step
        "num_workers": 1,  # DataLoader worker processes (0: load in the training process)
        "query_cell": 16,  # descriptor stage: one random query pixel per query_cell x query_cell cell
        "photometric": deep_update(homographies.photometric_default_conf, {"noise": {"prob": 0.0}}),  # colour
        # jitter per image (featlab.datasets.homographies)
    },
    "val": {
        "root": none_or(str, Path),  # sequence of the validation pairs; null: data.root
        "frame_range": list(splits.SELECT_FRAMES),  # [start, stop) selection frames (400-499: report only)
        "gaps": [20],
        "min_covisibility": 0.3,
        "num_pairs": 10,  # pairs kept (evenly spaced over the candidates)
        "max_keypoints": 1024,  # keypoints per image (SIFT's and SCFeat's)
        "method": "superglue",  # relative-pose estimator: superglue | magsac | poselib (featlab.geometry.robust)
        "threshold": 1.0,  # px (at data.image_size), RANSAC inlier threshold
    },
    "loss": scfeat_losses.default_conf,  # descriptor stage, see featlab.losses.scfeat
    "detector": detector_default_conf,  # detector stage
    "train": deep_update(loop.default_conf, {"lr": 1e-4, "best_metric": "auc@10", "max_steps": 100000}),
}


# --------------------------------------------------------------------------------------------------- data
def cell_queries(rng: np.random.Generator, image_size, cell: int) -> np.ndarray:
    """One uniformly random point per ``cell`` x ``cell`` cell of an (H, W) image -> float32 (N, 2) featlab pixels."""
    h, w = image_size
    ys, xs = np.meshgrid(np.arange(0, h - cell + 1, cell), np.arange(0, w - cell + 1, cell), indexing="ij")
    corners = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float64)
    return (corners + rng.uniform(0.0, cell, size=corners.shape)).astype(np.float32)


class PosedPairStream(Dataset):
    """Training samples by global index ``i`` from a posed-pair dataset.

    Item::

        image0, image1    float32 (3, H, W) in [0, 1], colour-jittered
        K0, K1            float32 (3, 3) featlab pixels of the resized images
        T_0to1            float32 (4, 4)
        points0, points1  float32 (N, 2) one query per data.query_cell cell
    """

    def __init__(self, pairs, data_conf, seed: int):
        if len(pairs) == 0:
            raise InputError("the posed-pair training dataset is empty")
        self.pairs = pairs
        self.size = tuple(int(v) for v in data_conf.image_size)
        self.cell = int(data_conf.query_cell)
        self.photometric = to_container(data_conf.photometric)
        self.seed = int(seed)
        self._shuffle = loop.EpochShuffle(self.seed)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        rng = role_rng(self.seed, "train", int(index))
        item = self.pairs[self._shuffle(int(index), len(self.pairs))]
        out = {"T_0to1": np.asarray(item["T_0to1"], np.float32)}
        for k in ("0", "1"):
            image, K = resize_with_intrinsics(item[f"image{k}"], item[f"K{k}"], self.size)
            image = homographies.photometric_augment(rng, image, self.photometric)
            out[f"image{k}"] = image_to_tensor(image)[0]
            out[f"K{k}"] = K.astype(np.float32)
            out[f"points{k}"] = cell_queries(rng, self.size, self.cell)
        return out


# ------------------------------------------------------------------------------------------- detector policy
def sample_cell_keypoints(scores: torch.Tensor, cell: int = 8, accept: str = "ratio", eps: float = 1e-8):
    """Draw one pixel per cell of a score map and accept it; log-probabilities for REINFORCE.

    Args:
        scores: (H, W) >= 0, H and W multiples of ``cell``.
        accept: ``ratio``: pixel probability proportional to the score inside the cell, acceptance ``s / (1 + s)``;
            ``reference``: the scores as logits of both (acceptance sigmoid(s) >= 0.5).
    Returns:
        keypoints (M, 2) featlab pixels of the accepted draws, logp (M,) their log-probability (cell draw +
        acceptance, differentiable), accept_probs (Hc * Wc,) acceptance probability of every draw (detached).
    """
    h, w = scores.shape
    if h % cell or w % cell:
        raise ValueError(f"score map {h}x{w} is not a multiple of the cell size {cell}")
    hc, wc = h // cell, w // cell
    cells = scores.reshape(hc, cell, wc, cell).permute(0, 2, 1, 3).reshape(hc * wc, cell * cell)
    if accept == "ratio":
        logits = (cells + eps).log()
    elif accept == "reference":
        logits = cells
    else:
        raise ConfigError(f"detector.accept must be one of {', '.join(ACCEPT)}, got {accept!r}")
    dist = torch.distributions.Categorical(logits=logits)
    idx = dist.sample()
    logp_pick = dist.log_prob(idx)
    chosen = logits.gather(1, idx[:, None])[:, 0]  # the acceptance logit: log s (ratio) or s (reference)
    accept_dist = torch.distributions.Bernoulli(logits=chosen)
    accepted = accept_dist.sample().bool()
    logp = (logp_pick + accept_dist.log_prob(torch.ones_like(chosen)))[accepted]
    cell_ij = torch.stack(torch.meshgrid(torch.arange(hc, device=scores.device), torch.arange(wc, device=scores.device),
                                         indexing="ij"), -1).reshape(-1, 2)
    ij = cell_ij * cell + torch.stack([idx // cell, idx % cell], -1)
    return from_grid_indices(ij[accepted]), logp, torch.sigmoid(chosen).detach()


def fundamental_loss(points0: torch.Tensor, points1: torch.Tensor, F_gt: torch.Tensor, K0: torch.Tensor,
                     K1: torch.Tensor, draws: int = 100, generator: torch.Generator | None = None) -> torch.Tensor:
    """SCFeat's ``L_F = tanh(min over draws of the F error)`` of 8-point estimates on random 8-match subsets.

    Args:
        points0, points1: (M, 2) good matches (M >= 8); F_gt, K0, K1: (3, 3).
        generator: torch generator (None: the global one); it advances, so each call draws new subsets.
    Returns:
        scalar tensor in [0, 1).
    """
    sub = random_subsets(len(points0), int(draws), 8, generator=generator, device=points0.device)
    F_est = eight_point(points0[sub], points1[sub])
    return torch.tanh(fundamental_error(F_est, F_gt, K0, K1).min()).float()


# ------------------------------------------------------------------------------------------------------ task
class SCFeatTask(loop.TrainingTask):
    """Data, losses and validation of SCFeat for :func:`featlab.training.loop.train`.

    Args:
        conf: the experiment config (:data:`default_conf`).
        train_pairs: a posed-pair dataset; None: built from ``conf.data``.
        val_pairs: a posed-pair dataset for validation; None: built from ``conf.val`` when a sequence is given.
    """

    def __init__(self, conf, train_pairs=None, val_pairs=None):
        self.conf = conf = resolve_conf(default_conf, conf, "")
        d = conf.data
        if conf.stage not in STAGES:
            raise ConfigError(f"stage must be one of {', '.join(STAGES)}, got {conf.stage!r}")
        if conf.detector.accept not in ACCEPT:
            raise ConfigError(f"detector.accept must be one of {', '.join(ACCEPT)}, got {conf.detector.accept!r}")
        cell = int(conf.detector.cell)
        if len(d.image_size) != 2 or any(int(v) < 32 or int(v) % 16 or int(v) % cell for v in d.image_size):
            raise ConfigError(f"data.image_size must be [H, W], multiples of 16 and of detector.cell, >= 32, got "
                              f"{list(d.image_size)}")
        if int(d.batch_size) < 1 or int(d.query_cell) < 1 or int(d.num_workers) < 0 or cell < 1:
            raise ConfigError("data.batch_size, data.query_cell and detector.cell must be >= 1, data.num_workers >= 0")
        if int(conf.detector.f_draws) < 1 or int(conf.detector.min_good_matches) < 8:
            raise ConfigError("detector.f_draws must be >= 1 and detector.min_good_matches >= 8")
        if not float(conf.detector.keypoint_size) > 0:
            raise ConfigError(f"detector.keypoint_size must be > 0, got {conf.detector.keypoint_size}")
        self.describer = handcrafted_describer(str(conf.detector.descriptor))
        if self.describer is not None and conf.stage != "detector":
            raise ConfigError(f"detector.descriptor={conf.detector.descriptor} is for stage detector (the descriptor "
                              f"stage trains SCFeat's own descriptor)")
        self.model = SCFeatNet(conf.model)
        if conf.init:
            init_net, meta = load_scfeat_weights(conf.init)
            if meta["model"] != to_container(conf.model):
                raise ConfigError(f"init {conf.init} holds a network with another model config than this run's "
                                  f"(pass the same model.* keys)")
            self.model.load_state_dict(init_net.state_dict())
        elif conf.stage == "detector":
            raise ConfigError("stage detector needs init=<the descriptor run's best.safetensors>")
        trainable = self.model.detector.parameters() if conf.stage == "detector" else \
            self.model.description_parameters()
        keep = {id(p) for p in trainable}
        for p in self.model.parameters():
            p.requires_grad_(id(p) in keep)
        self.loss_fn = scfeat_losses.LineToWindowLoss(conf.loss)
        if train_pairs is None:
            train_pairs = training_pairs(conf)
        self.dataset = PosedPairStream(train_pairs, d, seed=int(conf.train.seed))
        if val_pairs is None and (conf.val.root or d.root) and int(conf.val.num_pairs) > 0:
            v = conf.val
            val_pairs = RGBDPairs(v.root or d.root, d.rgbd, v.frame_range, v.gaps, v.min_covisibility, None,
                                  d.max_rotation, num_pairs=int(v.num_pairs))
        self.val_pairs = self._prepare_val(val_pairs) if val_pairs is not None else []
        self._sift_baseline = None

    # ------------------------------------------------------------------------------------------------ data
    def batches(self, start_step: int) -> Iterator[dict]:
        return loop.iterate_batches(self.dataset, self.conf.data.batch_size, self.conf.data.num_workers, start_step)

    def _prepare_val(self, pairs) -> list[dict]:
        return prepare_posed_val_pairs(pairs, self.conf.data.image_size, int(self.conf.val.max_keypoints))

    # ------------------------------------------------------------------------------------------------ steps
    def training_step(self, batch: dict, step: int):
        if self.conf.stage == "descriptor":
            return self._descriptor_step(batch)
        return self._detector_step(batch)

    def _descriptor_step(self, batch: dict):
        b = batch["image0"].shape[0]
        maps = self.model.describe(torch.cat([batch["image0"], batch["image1"]]))
        pred = {"local_map0": maps["local_map"][:b], "local_map1": maps["local_map"][b:]}
        losses, metrics = self.loss_fn(pred, batch)
        w = self.model.bridge.weights.detach() if self.model.bridge is not None else None
        extra = {"bridge_pn": w[0] / w.sum()} if w is not None else {}
        terms = {f"loss_{k}": v.detach() for k, v in losses.items() if k != "total"}
        return losses["total"], {**terms, **metrics, **extra}

    def _detector_step(self, batch: dict):
        dc = self.conf.detector
        b = batch["image0"].shape[0]
        size = tuple(batch["image0"].shape[-2:])
        extent = map_extent(*size)
        images = torch.cat([batch["image0"], batch["image1"]])
        with torch.no_grad():
            maps = self.model.describe(images)
        scores = self.model.detect(maps, size)[:, 0].float()
        dmap = maps["local_map"].float()
        F01 = fundamental_from_pose(batch["K0"].float(), batch["K1"].float(), batch["T_0to1"].float())
        total, stats = 0.0, {"expected_reward": [], "keypoints": [], "accept_prob": [], "good_fraction": [],
                             "f_loss": []}
        for i in range(b):
            picks = []
            for v in (i, b + i):
                kp, logp, acc = sample_cell_keypoints(scores[v], int(dc.cell), str(dc.accept))
                desc = self._describe(images[v], dmap[v:v + 1], kp, extent)
                picks.append((kp, logp, desc))
                stats["keypoints"].append(float(len(kp)))
                stats["accept_prob"].append(float(acc.mean()))
            (kp0, logp0, d0), (kp1, logp1, d1) = picks
            if len(kp0) == 0 or len(kp1) == 0:
                loss = float(dc.keypoint_penalty) * (logp0.sum() + logp1.sum())
                total = total + loss
                continue
            P = scfeat_losses.match_probabilities(d0, d1, float(dc.match_temperature))
            rewards, good = scfeat_losses.epipolar_rewards(kp0, kp1, F01[i], float(dc.threshold),
                                                           float(dc.good_reward), float(dc.bad_reward))
            best = P.argmax(1)
            hit = good[torch.arange(len(kp0)), best]
            stats["good_fraction"].append(float(hit.float().mean()))
            if dc.f_reward and int(hit.sum()) >= int(dc.min_good_matches):
                lf = fundamental_loss(kp0[hit], kp1[best[hit]], F01[i], batch["K0"][i], batch["K1"][i],
                                      int(dc.f_draws))
                rewards = scfeat_losses.scfeat_rewards(good, lf)
                stats["f_loss"].append(float(lf))
            loss, expected = scfeat_losses.policy_gradient_loss(logp0, logp1, P, rewards, float(dc.keypoint_penalty))
            total = total + loss
            stats["expected_reward"].append(float(expected))
        metrics = {k: float(np.mean(v)) for k, v in stats.items() if v}
        return total / b, metrics

    def _describe(self, image: torch.Tensor, dmap: torch.Tensor, keypoints: torch.Tensor, extent) -> torch.Tensor:
        """Frozen descriptors of one image's keypoints: the (1, D, h, w) map's, or ``detector.descriptor``'s."""
        if self.describer is not None:
            return describe_handcrafted(self.describer, image, keypoints, float(self.conf.detector.keypoint_size))
        return sample_map(dmap, keypoints[None], extent, normalize=True)[0]

    # ----------------------------------------------------------------------------------------- validation
    def _pose_auc(self, features) -> list[float]:
        """AUC@5/10/20 over the validation pairs; ``features[k]`` = (kp0, d0, kp1, d1) tensors of pair k."""
        from ..geometry.pose import pose_auc, relative_pose_error
        from ..geometry.robust import estimate_relative_pose
        from ..matching import match_descriptors

        errors = []
        for p, (kp0, d0, kp1, d1) in zip(self.val_pairs, features):
            if len(kp0) < 5 or len(kp1) < 5:
                errors.append(float("inf"))
                continue
            m0, _ = match_descriptors(d0.float().cpu(), d1.float().cpu(), mutual=True)
            m0 = m0.numpy()
            ok = m0 >= 0
            R, t, _ = estimate_relative_pose(kp0.cpu().numpy()[ok].astype(np.float64),
                                             kp1.cpu().numpy()[m0[ok]].astype(np.float64), p["K0"], p["K1"],
                                             method=self.conf.val.method, threshold=float(self.conf.val.threshold))
            errors.append(max(relative_pose_error(p["T_0to1"], R, t)))
        return pose_auc(errors, (5, 10, 20))

    def validate(self) -> dict[str, float]:
        if not self.val_pairs:
            return {}
        th = (5, 10, 20)
        if self._sift_baseline is None:
            feats = [(p["keypoints0"], p["sift_descriptors0"], p["keypoints1"], p["sift_descriptors1"])
                     for p in self.val_pairs]
            self._sift_baseline = {f"sift_auc@{t}": a for t, a in zip(th, self._pose_auc(feats))}
        device = next(self.model.parameters()).device
        size = tuple(int(v) for v in self.conf.data.image_size)
        extent = map_extent(*size)
        desc_feats, own_feats, counts = [], [], []
        for p in self.val_pairs:
            out = self.model(p["image"].to(device))
            dmap = self.model.descriptor_map(out).float()
            row_d, row_o = [], []
            for s in (0, 1):
                kp = p[f"keypoints{s}"].to(device)
                if self.describer is None:
                    row_d += [kp, sample_map(dmap[s:s + 1], kp[None], extent, normalize=True)[0]]
                if self.conf.stage == "detector":
                    k2, _ = detect_keypoints(out["scores"][s, 0].float(), int(self.conf.val.max_keypoints), 1, 0.0, 4)
                    row_o += [k2, self._describe(p["image"][s].to(device), dmap[s:s + 1], k2, extent)]
                    counts.append(len(k2))
            if self.describer is not None:  # the descriptor at its own detector's keypoints, scales and orientations
                row_d = self._handcrafted_baseline(p)
            desc_feats.append(tuple(row_d))
            own_feats.append(tuple(row_o))
        desc_auc = self._pose_auc(desc_feats)
        if self.conf.stage == "descriptor":
            out = {f"auc@{t}": a for t, a in zip(th, desc_auc)}
        else:
            out = {f"auc@{t}": a for t, a in zip(th, self._pose_auc(own_feats))}
            out.update({f"desc_auc@{t}": a for t, a in zip(th, desc_auc)})
            out["keypoints"] = float(np.mean(counts))
        return {**out, **self._sift_baseline}

    def _handcrafted_baseline(self, pair: dict) -> tuple:
        """(kp0, d0, kp1, d1) of ``detector.descriptor`` with SIFT's own keypoints (val.max_keypoints), cached."""
        if "handcrafted" not in pair:
            from ..extractors import build_extractor

            baseline = build_extractor(str(self.conf.detector.descriptor),
                                       {"max_keypoints": int(self.conf.val.max_keypoints)})
            row = []
            with torch.no_grad():
                for s in (0, 1):
                    pred = baseline({"image": pair["image"][s:s + 1]})
                    row += [pred["keypoints"][0].float(), pred["descriptors"][0].float()]
            pair["handcrafted"] = tuple(row)
        return pair["handcrafted"]

    def save_weights(self, path: Path, info: dict) -> Path:
        return save_scfeat_weights(self.model, path, extra={"training": {**info, "stage": self.conf.stage},
                                                            "image_size": list(self.conf.data.image_size),
                                                            "detector": to_container(self.conf.detector)})


# ------------------------------------------------------------------------------------------------ CLI hooks
def add_arguments(parser) -> None:
    """Data arguments of ``featlab train scfeat``."""
    hooks.add_path_arguments(parser, ("data", "colmap", "val_data"))


apply_arguments = hooks.apply_path_arguments


def check_conf(conf) -> None:
    check_posed_sources(conf, bool(conf.data.root or conf.data.colmap),
                        "--data SEQUENCE_DIR and/or --colmap PROJECT_DIR")


check_export = hooks.export_name_check("scfeat")


def build_task(conf) -> SCFeatTask:
    return SCFeatTask(conf)


export_weights = hooks.weights_exporter(load_scfeat_weights, "scfeat")


__all__ = ["default_conf", "SCFeatTask", "PosedPairStream", "cell_queries",
           "sample_cell_keypoints", "fundamental_loss", "export_weights"]
