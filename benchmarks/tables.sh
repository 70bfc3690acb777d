#!/bin/bash
# The held-out benchmarks every model is judged on (issue 8, docs/RESULTS.md), with one method list:
#   1. synthetic warps of bsds500/test, presets moderate and hard, 480x640, 1000 keypoints
#   2. HPatches v_graffiti, resized protocol at 240x320/300 and 480x640/1000
#   3. 7-Scenes redkitchen frames 400-499, relative pose, gaps 20/30/45, focal 525
#   4. Strecha Herz-Jesus-P25, wide-baseline relative pose, pairs (i, i+d) for d = 3..7, 768x512
# usage: bash benchmarks/tables.sh [OUT_DIR] [TABLE ...]   (tables: moderate hard graffiti 7scenes herzjesu; default all)
# environment: METHODS (names or LABEL=NAME), METHOD_CONF (LABEL.key=value ...), PAIRS, THREADS (default 2)
# Every run caches its features under OUT_DIR/<table>/cache (keyed on weights content + config): a rerun only scores.
set -euo pipefail
OUT=${1:-/tmp/featlab-tables}; shift $(( $# < 1 ? $# : 1 ))
TABLES=("$@"); [ ${#TABLES[@]} -gt 0 ] || TABLES=(moderate hard graffiti 7scenes herzjesu)
DATA=${FEATLAB_DATA:-../shared/data}
FL=${FEATLAB:-featlab}
METHODS=${METHODS:-"sift rootsift disk aliked xfeat residual-sift residual-sift-joint residual-rootsift-upright residual-sift-small caps-sift"}
PAIRS=${PAIRS:-100}  # synthetic pairs per preset (one per photo, the first PAIRS photos of bsds500/test by name)
# METHOD_CONF: per-method overrides, e.g. METHODS="scfeat posfeat=scfeat" METHOD_CONF="posfeat.weights=runs/x.safetensors"
MCONF=(); [ -z "${METHOD_CONF:-}" ] || MCONF=(--method-conf $METHOD_CONF)
COMMON=(--methods $METHODS "${MCONF[@]}" --no-progress --threads ${THREADS:-2})
for t in "${TABLES[@]}"; do
  case $t in
    moderate|hard) $FL eval hpatches "${COMMON[@]}" --synthetic "$DATA/photos/bsds500/test" --preset "$t" \
                     --max-images "$PAIRS" --setting 480x640_1000 -o "$OUT/warps_$t" ;;
    graffiti) for s in 240x320_300 480x640_1000; do
                $FL eval hpatches "${COMMON[@]}" --hpatches "$DATA/hpatches" --setting "$s" -o "$OUT/graffiti_$s"
              done ;;
    7scenes) $FL eval relpose "${COMMON[@]}" --rgbd "$DATA/rgbd/7scenes_redkitchen" --frames 400 499 \
               --gaps 20 30 45 --focal 525 -o "$OUT/7scenes_400_499" ;;
    herzjesu) $FL eval relpose "${COMMON[@]}" --colmap "$DATA/posed/strecha/Herz-Jesus-P25" --gaps 3 4 5 6 7 \
                -o "$OUT/herzjesu" ;;
    *) echo "unknown table '$t' (moderate hard graffiti 7scenes herzjesu)" >&2; exit 2 ;;
  esac
done
