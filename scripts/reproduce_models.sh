#!/bin/bash
# Retrain every model shipped in featlab/weights/ with the recipes of docs/MODELS.md and export them there.
# usage: bash scripts/reproduce_models.sh [DATA_DIR] [RUNS_DIR] [extra key=value overrides, e.g. train.device=cuda]
# DATA_DIR defaults to ../shared/data (photos/{bsds500,sun_hays80}, rgbd/7scenes_redkitchen). The runs are
# sequential; on a 2-core CPU expect days (about 4 s per residual step, 6.6 s per CAPS step), on a GPU about an hour.
# Data follow the split rule (docs/DATASETS.md), through the default configs: residual models train on
# bsds500/train + sun_hays80 and are selected on bsds500/val; CAPS trains on 7-Scenes frames 0-349 and is selected
# on frames 360-399. bsds500/test and frames 400-499 are never read here: they are for reporting only.
set -euo pipefail
DATA=${1:-../shared/data}; RUNS=${2:-runs/reproduce}; shift $(( $# < 2 ? $# : 2 ))
FL=${FEATLAB:-featlab}
export FEATLAB_DATA=$DATA  # the data root that configs/residual.yaml's photo folders live in
COMMON=(model.batchnorm=true data.num_workers=2 train.val_every=250 train.checkpoint_every=250)
EXTRA=("$@")  # last, so that they override the recipes' values (e.g. train.max_steps=2 for a smoke test)
res() { local name=$1; shift; $FL train residual "${COMMON[@]}" -o "$RUNS/$name" "$@" "${EXTRA[@]}" --export "$name"; }
res residual-sift-joint train.max_steps=2500
res residual-sift-nofusion model.fusion=none train.max_steps=2500
res residual-sift-small model.backbone=small train.max_steps=2691
res residual-rootsift-upright handcrafted.name=rootsift-upright train.max_steps=2750
res residual-surf handcrafted.name=surf train.max_steps=1700
# residual-sift: f = identity (SIFT itself), h from the without-fusion run, each part L2-normalised; no optimiser step
res residual-sift model.part_norm=true init.f=identity init.h_from="$RUNS/residual-sift-nofusion/best.safetensors" \
    train.max_steps=0 train.best_metric=mma@3
$FL train caps --data "$DATA/rgbd/7scenes_redkitchen" -o "$RUNS/caps-resnet18" data.batch_size=6 data.num_workers=3 \
    train.lr=1e-3 train.lr_decay_every=2500 train.val_every=250 train.checkpoint_every=250 val.num_pairs=30 \
    train.max_steps=500 "${EXTRA[@]}" --export caps-resnet18
# scfeat (not shipped yet, docs/MODELS.md): opt in with SCFEAT=1. Two stages, each resumable; posed pairs of
# 7-Scenes frames 0-349 and Strecha castle-P30, selected on 7-Scenes frames 360-399.
if [ "${SCFEAT:-0}" = 1 ]; then
    SC=(--data "$DATA/rgbd/7scenes_redkitchen" --colmap "$DATA/posed/strecha/castle-P30")
    $FL train scfeat "${SC[@]}" -o "$RUNS/scfeat-desc" train.max_steps=100000 "${EXTRA[@]}"
    $FL train scfeat "${SC[@]}" -o "$RUNS/scfeat-det" stage=detector init="$RUNS/scfeat-desc/best.safetensors" \
        train.lr=1e-3 train.max_steps=1000 "${EXTRA[@]}" --export scfeat
fi
# pose-sift (not shipped yet, docs/MODELS.md; docs/POSE_TRAINING.md): opt in with POSESIFT=1. RootSIFT +
# oriented-patch residual trained from camera poses only; configs/pose.yaml: 7-Scenes frames 0-349 (select 360-399)
# and castle-P30's train/select views (its held-out views 0024-0028 are never read). Cost per step and per
# validation not measured on an idle machine (the one run so far shared 2 cores at a load of 12-24);
# train.max_minutes bounds one invocation, --resume continues.
if [ "${POSESIFT:-0}" = 1 ]; then
    $FL train pose -o "$RUNS/pose-sift" "${EXTRA[@]}" --export pose-sift
fi
