"""``featlab curves``: convergence plot of training runs (validation metrics vs steps and training time)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError


def register(sub):
    p = sub.add_parser("curves", help="plot validation metrics of training runs against steps and time",
                       description=__doc__ + "\n\nexample:\n  featlab curves residual=runs/residual-sift "
                       "nofusion=runs/residual-sift-nofusion --metrics mma@3 ms@3 -o docs/convergence",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="[LABEL=]RUN_DIR", help="training run folders")
    p.add_argument("--metrics", nargs="+", default=["mma@3", "ms@3"], help="validation metrics (without val/)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output stem: writes STEM.png and STEM.md")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..training.curves import convergence

    runs = {}
    for item in args.runs:
        label, _, path = item.rpartition("=")
        label = label or Path(path).name
        if label in runs:
            raise ConfigError(f"two runs are labelled '{label}': name them LABEL=RUN_DIR")
        runs[label] = path
    png, md = convergence(runs, list(args.metrics), args.output)
    print(f"convergence plot: {png}\ntable:            {md}")
    return 0
