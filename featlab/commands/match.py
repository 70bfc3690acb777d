"""``featlab match``: match the descriptors of image pairs from a features file into a matches file (hloc layout).

Pairs come from a pairs file (two image names per line, as stored in the features file), from all pairs of
images (``--exhaustive``) or from each image and its W successors in name order (``--sequential W``, a video).
Matching is nearest neighbour on the descriptors (Hamming distance for binary descriptors), mutual by default,
with optional ratio test and distance threshold, as hloc's ``NearestNeighbor`` matcher: the ratio test is hloc's
symmetric one by default (``--ratio-test one-way`` for image 0 -> 1 only), and ``matching_scores0`` holds hloc's
score ``(1 + cos) / 2`` in [0, 1] (binary descriptors: ``1 - hamming / bits``), so hloc's ``min_match_score``
means the same on featlab's files; the record says so (``matcher.scores``). Resumable like ``featlab extract``:
pairs already in the output, in either order, are skipped. The resolved configuration is written beside the
output as ``<output>.conf.yaml``.

Examples:
    featlab match features.h5 --exhaustive -o matches.h5
    featlab match features.h5 --sequential 5 --loop -o matches.h5 --ratio 0.9
    featlab match features.h5 --pairs pairs.txt -o matches.h5 --no-mutual --distance-threshold 0.7
"""
from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

from ..errors import ConfigError, InputError


#: features kept in memory while matching (an LRU cache: exhaustive matching revisits every image)
CACHE_SIZE = 256


def register(sub):
    p = sub.add_parser("match", help="match image pairs of a features file into an HDF5 matches file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("features", type=Path, help="features file written by `featlab extract` (or hloc)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--pairs", type=Path, help="pairs file: two image names per line, '#' comments")
    src.add_argument("--exhaustive", action="store_true", help="match all pairs of images")
    src.add_argument("--sequential", type=int, metavar="W", help="match each image with its W successors")
    p.add_argument("--loop", action="store_true", help="with --sequential: the sequence is closed")
    p.add_argument("-o", "--output", type=Path, required=True, help="matches file to write (e.g. matches.h5)")
    p.add_argument("--mutual", action=argparse.BooleanOptionalAction, default=True,
                   help="keep only mutual nearest neighbours (default: on)")
    p.add_argument("--ratio", type=float, default=None, help="Lowe's ratio test threshold (e.g. 0.8)")
    p.add_argument("--ratio-test", choices=("symmetric", "one-way"), default="symmetric",
                   help="with --ratio: symmetric (default, hloc's: both images' tests, through the mutual check) "
                        "or one-way (image 0 -> 1 only)")
    p.add_argument("--distance-threshold", type=float, default=None,
                   help="reject matches with a larger descriptor distance (L2 for float, bits for binary)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--save-pairs", type=Path, default=None, help="also write the pair list to this text file")
    p.add_argument("--as-half", action="store_true", help="store matching scores as float16 (as hloc)")
    p.add_argument("--overwrite", action="store_true",
                   help="start from scratch instead of resuming (the old output is replaced at the end)")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="match only shard I of N (0 <= I < N): "
                        "a block of the pair list; `featlab merge` joins the shard files (docs/SCALING.md)")
    p.set_defaults(func=run)


class _FeatureCache:
    """Descriptors of a features file, read on demand and kept in a small LRU cache."""

    def __init__(self, h5file, size: int = CACHE_SIZE):
        self.h5file, self.size, self.items = h5file, size, OrderedDict()

    def __getitem__(self, name: str) -> np.ndarray:
        from ..io.h5 import read_features

        if name in self.items:
            self.items.move_to_end(name)
            return self.items[name]
        feats = read_features(self.h5file, name)
        if "descriptors" not in feats:
            raise InputError(f"image '{name}' has no descriptors in {self.h5file.filename}")
        self.items[name] = feats["descriptors"]
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return self.items[name]


def _check_args(args):
    if args.ratio is not None and not 0 < args.ratio <= 1:
        raise ConfigError(f"--ratio must be in (0, 1], got {args.ratio}")
    if args.distance_threshold is not None and args.distance_threshold < 0:
        raise ConfigError(f"--distance-threshold must be >= 0, got {args.distance_threshold}")
    if args.loop and args.sequential is None:
        raise ConfigError("--loop only applies to --sequential")
    if not args.features.is_file():
        raise InputError(f"features file not found: {args.features}")
    if args.output.exists() and args.output.is_dir():
        raise InputError(f"output {args.output} is a folder; give a file name such as matches.h5")
    if args.output.resolve() == args.features.resolve():
        raise InputError("the matches output must be a different file from the features file")


def _match_pair(d0: np.ndarray, d1: np.ndarray, args, device, names) -> tuple[np.ndarray, np.ndarray]:
    """matches0 (N0,) int64 with -1 and scores0 (N0,) float32 for one pair of descriptor sets."""
    import torch

    from ..matching import match_descriptors

    binary0, binary1 = d0.dtype == np.uint8, d1.dtype == np.uint8
    if binary0 != binary1 or d0.shape[1] != d1.shape[1]:
        raise InputError(f"descriptors of {names[0]} ({d0.dtype}, dim {d0.shape[1]}) and {names[1]} "
                         f"({d1.dtype}, dim {d1.shape[1]}) cannot be matched: were they extracted by one model?")
    if len(d0) == 0 or len(d1) == 0:
        return np.full(len(d0), -1, np.int64), np.zeros(len(d0), np.float32)
    t0, t1 = torch.from_numpy(d0).to(device), torch.from_numpy(d1).to(device)
    m0, s0 = match_descriptors(t0, t1, mutual=args.mutual, ratio=args.ratio, ratio_test=args.ratio_test,
                               distance_threshold=args.distance_threshold, binary=binary0)
    return m0.cpu().numpy().astype(np.int64), s0.float().cpu().numpy()


def run(args) -> int:
    import h5py
    from tqdm import tqdm

    from ..conf import save_conf
    from ..io.h5 import (check_output_record, find_pair, list_feature_names, partial_path, read_record,
                         staged_h5, write_matches)
    from ..io.pairs import check_pairs, exhaustive_pairs, read_pairs, sequential_pairs, write_pairs
    from ..matching.nearest_neighbor import SCORE_SCALE
    from .extract import _device

    _check_args(args)
    device = _device(args.device)
    names = list_feature_names(args.features)
    if not names:
        raise InputError(f"no image features in {args.features}")
    if args.pairs is not None:
        pairs = read_pairs(args.pairs, known_names=names)
        source = str(args.pairs)
    elif args.exhaustive:
        pairs, source = exhaustive_pairs(names), "exhaustive"
    else:
        pairs, source = sequential_pairs(names, args.sequential, loop=args.loop), f"sequential {args.sequential}"
    check_pairs(pairs, names, source=source)
    if not pairs:
        raise InputError(f"no pairs to match in {args.features} ({len(names)} image(s), {source})")
    keys = {}
    for n in {n for p in pairs for n in p}:
        keys.setdefault(n.replace("/", "-"), []).append(n)
    clash = [v for v in keys.values() if len(v) > 1]
    if clash:  # hloc's pair keys replace '/' by '-': these names would share one entry
        raise InputError(f"image names {clash[0]} collide in the matches layout ('/' is stored as '-')")
    if args.save_pairs is not None:
        write_pairs(args.save_pairs, pairs)

    record = {"kind": "matches", "features": read_record(args.features) or {},
              "matcher": {"mutual": bool(args.mutual), "ratio": args.ratio,
                          "ratio_test": args.ratio_test if args.ratio is not None else None,
                          "distance_threshold": args.distance_threshold, "scores": SCORE_SCALE},
              "as_half": bool(args.as_half)}
    from ..io.shards import select_shard
    pairs, = select_shard(args.shard, record, pairs)  # --shard I/N: one block of the pair list

    if args.output.exists() and not args.overwrite and not partial_path(args.output).exists():
        check_output_record(args.output, record)
        with h5py.File(args.output, "r") as f:
            if all(find_pair(f, a, b) is not None for a, b in pairs):
                print(f"{args.output}: all {len(pairs)} pairs already matched, nothing to do")
                return 0

    n_matches = []
    with h5py.File(args.features, "r") as ff, staged_h5(args.output, record, kind="matches",
                                                          overwrite=args.overwrite) as f:
        cache = _FeatureCache(ff)
        todo = [p for p in pairs if find_pair(f, *p) is None]
        for name0, name1 in tqdm(todo, desc="match", unit="pair", disable=None, file=sys.stderr):
            m0, s0 = _match_pair(cache[name0], cache[name1], args, device, (name0, name1))
            write_matches(f, name0, name1, m0, s0, as_half=args.as_half)
            f.flush()
            n_matches.append(int((m0 >= 0).sum()))
        # inside the staged block: if this fails (disk full), the output is not renamed and the run can resume
        save_conf({**record, "features_file": str(args.features), "pairs": source},
                  args.output.with_name(args.output.name + ".conf.yaml"))

    nm = np.array(n_matches)
    stats = f"; matches per new pair: mean {nm.mean():.0f}, min {nm.min()}, max {nm.max()}" if nm.size else ""
    print(f"{args.output}: {len(pairs)} pairs ({len(todo)} new, {len(pairs) - len(todo)} already present){stats}")
    return 0
