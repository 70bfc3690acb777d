"""``featlab merge``: join the shard files of ``featlab extract|match --shard I/N`` into one hloc-layout file.

All N shards of one work list, made with one configuration, are required (checked from the record each shard
file carries); entries are copied as stored. The merged file is what one unsharded run would have written (same
record), so the unsharded command resumes from it and ``featlab match`` reads it. Resumable and crash-safe like
extract and match. A worked batch-scheduler example (one array job per shard): docs/SCALING.md.

Examples:
    featlab merge shards/features-*.h5 -o features.h5
    featlab merge shards/matches-*.h5 -o matches.h5
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub):
    p = sub.add_parser("merge", help="merge the shard files of extract/match --shard into one HDF5 file",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shards", type=Path, nargs="+", help="the shard files (features or matches), all N of them")
    p.add_argument("-o", "--output", type=Path, required=True, help="merged file to write (e.g. features.h5)")
    p.add_argument("--overwrite", action="store_true",
                   help="start from scratch instead of resuming (the old output is replaced at the end)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import InputError
    from ..io.shards import merge

    if args.output.exists() and args.output.is_dir():
        raise InputError(f"output {args.output} is a folder; give a file name such as features.h5")
    summary = merge(args.shards, args.output, overwrite=args.overwrite)
    print(f"{args.output}: {summary['entries']} {'images' if summary['kind'] == 'features' else 'pairs'} from "
          f"{summary['shards']} shards ({summary['new']} new, {summary['entries'] - summary['new']} already present)")
    return 0
