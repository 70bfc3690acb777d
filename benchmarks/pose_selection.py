"""Score patch-residual weights on the pose task's selection pairs at every fusion angle (no training).

usage: .venv/bin/python benchmarks/pose_selection.py RUN_DIR/config.yaml LABEL=WEIGHTS [LABEL=WEIGHTS ...]

The config (a pose run's saved ``config.yaml``) gives the collections, their split and the homography guard; every
select pair is used (``val.max_pairs`` null), with 7 fusion angles. Per label and angle: pose AUC@5/10/20 and their
mean (the relpose benchmark's scoring), epipolar precision (share of mutual matches within
``val.epipolar_threshold`` px of the ground-truth epipolar line, averaged over pairs), correct and all matches per
pair, and the guard's MMA@3 and correct matches. Selection data only: never point it at held-out views.
"""
from __future__ import annotations

import math
import sys

import numpy as np
import torch

from featlab.conf import load_yaml
from featlab.errors import FeatlabError
from featlab.extractors.patch_residual import load_patch_residual_weights
from featlab.training.pose import PoseTask


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    nets = [(a.split("=", 1)[0], load_patch_residual_weights(a.split("=", 1)[1])[0].eval()) for a in argv[1:]]
    conf = load_yaml(argv[0])
    conf["init"] = None
    conf["val"].update(max_pairs=None, fusion_steps=7)
    task = PoseTask(conf)
    phis = np.linspace(0.0, math.pi / 2, 7)
    print(f"{len(task.val_pairs)} select pairs, {len(task.guard_pairs)} guard warps")
    print("| weights | phi | AUC@5 | AUC@10 | AUC@20 | AUC mean | epipolar precision | correct | matches | "
          "guard MMA@3 | guard correct |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, net in nets:
        task.model = net  # its own patch window and h
        with torch.no_grad():
            scores = task.pair_scores(task.val_pairs, phis)
            mma3, guard_correct = task._guard(phis)
        precision = scores["precision"].mean(0)
        for j, phi in enumerate(phis):
            a = task.aucs(scores["pose_error"][:, j])
            print(f"| {label} | {math.degrees(phi):.0f} | {100 * a['auc@5']:.1f} | {100 * a['auc@10']:.1f} | "
                  f"{100 * a['auc@20']:.1f} | {100 * a['auc_mean']:.1f} | {precision[j]:.4f} | "
                  f"{scores['correct'][:, j].mean():.1f} | {scores['matches'][:, j].mean():.1f} | {mma3[j]:.4f} | "
                  f"{guard_correct[j]:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except FeatlabError as e:  # missing or bad config or weights file: one line, exit 2
        print(f"pose_selection: error: {e}", file=sys.stderr)
        sys.exit(2)
