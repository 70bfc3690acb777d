"""Shards: split the images of ``featlab extract`` or the pairs of ``featlab match`` across machines, and merge
the shard files back into one hloc-layout file.

``--shard I/N`` (0 <= I < N) keeps the I-th of N contiguous, near-equal blocks of the command's work list (the
images sorted by name, or the pair list in its order): block I is ``items[floor(I n / N) : floor((I + 1) n / N)]``.
The blocks are disjoint, cover the list, differ in size by at most one, and depend only on the list, so the N jobs
of a batch-scheduler array (one per shard) agree without talking to each other. Contiguous blocks keep the pairs of
one image together, which the matcher's feature cache likes.

A shard file records its shard in the output record (``featlab_record`` attribute, :mod:`featlab.io.h5`)::

    "shard": {"index": I, "count": N, "total": n, "digest": SHA-256 of the whole work list (16 hex)}

so that resuming a shard with another list (a folder that changed between jobs) is refused, and :func:`merge`
can check that its inputs are the N shards of one list made by one configuration. The merged file carries the
record without ``shard``: exactly what one unsharded run writes, so the unsharded command resumes from it (and
finds nothing to do) and ``featlab match`` reads it like any features file.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import sys
from pathlib import Path
from typing import Sequence

from ..errors import ConfigError, InputError

logger = logging.getLogger(__name__)

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(spec: str) -> tuple[int, int]:
    """``"I/N"`` -> (I, N) with 0 <= I < N (0-based, as ``--array=0-(N-1)`` of SLURM).

    Raises:
        ConfigError: not two integers ``I/N`` with 0 <= I < N.
    """
    m = _SPEC.match(str(spec))
    if not m:
        raise ConfigError(f"--shard takes I/N (shard I of N, 0 <= I < N), e.g. 0/4; got {spec!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or index >= count:
        raise ConfigError(f"--shard {spec}: need N >= 1 and 0 <= I < N (shards are numbered from 0)")
    return index, count


def shard_bounds(total: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of block ``index`` of ``count`` near-equal contiguous blocks of ``total`` items."""
    return index * total // count, (index + 1) * total // count


def list_digest(items: Sequence) -> str:
    """16 hex digits of the SHA-256 of a work list (names, or pairs of names), in its order."""
    text = json.dumps([list(i) if isinstance(i, tuple) else i for i in items])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def select_shard(spec: str | None, record: dict, items: Sequence, *others: Sequence) -> tuple[list, ...]:
    """Keep shard ``spec`` of a work list (and of lists parallel to it); record the shard in ``record``.

    Args:
        spec: ``"I/N"`` or None (no sharding: everything is returned and ``record`` is left as it is).
        record: the output's configuration record; gets ``record["shard"]`` (see the module docstring).
        items: the work list that defines the shards: image names (relative paths) or (name0, name1) pairs.
            Names, not absolute paths, so that machines that mount the data elsewhere agree.
        others: lists parallel to ``items`` (e.g. the image paths), cut the same way.
    Returns:
        ``(items_of_the_shard, *others_of_the_shard)``.
    """
    if spec is None:
        return (list(items), *(list(o) for o in others))
    index, count = parse_shard(spec)
    total = len(items)
    if any(len(o) != total for o in others):
        raise ValueError("lists parallel to the work list must have its length")
    start, stop = shard_bounds(total, index, count)
    record["shard"] = {"index": index, "count": count, "total": total, "digest": list_digest(items)}
    logger.info("shard %d/%d: %d of %d items (from number %d)", index, count, stop - start, total, start)
    return (list(items[start:stop]), *(list(o[start:stop]) for o in others))


# -------------------------------------------------------------------------------------------------- merge
def _entries(f, kind: str) -> list[str]:
    """HDF5 paths of the entries of a features file (image groups) or matches file (pair groups)."""
    from .h5 import list_feature_names, list_match_pairs

    if kind == "features":
        return list_feature_names(f)
    pairs = list_match_pairs(f)
    if any(k1 == "" for _, k1 in pairs):
        raise InputError(f"{f.filename} holds hloc < 1.4 flat pair keys, which featlab never writes")
    return [f"{k0}/{k1}" for k0, k1 in pairs]


def check_shards(paths: Sequence[str | Path]) -> tuple[dict, str]:
    """Check that ``paths`` are the N shard files of one work list made with one configuration.

    Returns:
        (record without ``shard``, kind: 'features' | 'matches').
    Raises:
        InputError: a file that is missing, not a featlab shard file, from another list or configuration, a
            shard twice or a shard missing.
    """
    from .h5 import read_record, record_differences

    if not paths:
        raise InputError("no shard files to merge")
    base, first, seen = None, None, {}
    for path in map(Path, paths):
        if not path.is_file():
            raise InputError(f"shard file not found: {path}")
        record = read_record(path)
        if record is None or "shard" not in record:
            raise InputError(f"{path} is not a shard file (no shard in its featlab record); shard files are "
                             "written by `featlab extract|match --shard I/N`")
        shard = record.pop("shard")
        if base is None:
            base, first = record, (path, shard)
        else:
            diff = record_differences(base, record)
            if diff:
                raise InputError(f"{path} was made with another configuration than {first[0]} "
                                 f"({'; '.join(diff[:3])})")
            if (shard["count"], shard["total"], shard["digest"]) != (first[1]["count"], first[1]["total"],
                                                                   first[1]["digest"]):
                raise InputError(f"{path} is shard {shard['index']}/{shard['count']} of another work list "
                                 f"({shard['total']} items) than {first[0]} (shard {first[1]['index']}/"
                                 f"{first[1]['count']} of {first[1]['total']}): were the inputs the same?")
        if shard["index"] in seen:
            raise InputError(f"{path} and {seen[shard['index']]} are both shard {shard['index']}/{shard['count']}")
        seen[shard["index"]] = path
    count = first[1]["count"]
    missing = sorted(set(range(count)) - set(seen))
    if missing:
        raise InputError(f"missing shard(s) {', '.join(f'{i}/{count}' for i in missing)} of {count}: merge needs "
                         "all of them (has the job of each shard finished?)")
    kind = base.get("kind")
    if kind not in ("features", "matches"):
        raise InputError(f"{first[0]}: record kind {kind!r} is neither features nor matches")
    return base, kind


def merge(paths: Sequence[str | Path], output: str | Path, overwrite: bool = False, progress: bool = True) -> dict:
    """Copy the entries of N shard files into one hloc-layout file (byte-identical datasets and attributes).

    Resumable and crash-safe like extract and match (:func:`featlab.io.h5.staged_h5`): entries already in the
    output are kept. An entry found in two shard files is an error (shards are disjoint by construction).

    Args:
        paths: the shard files (any order).
        output: the merged file; its record is the shards' record without ``shard``.
        overwrite: start from an empty output.
    Returns:
        ``{"kind", "entries", "new", "shards"}``.
    """
    import h5py
    from tqdm import tqdm

    from .h5 import staged_h5

    record, kind = check_shards(paths)
    output = Path(output)
    if any(Path(p).resolve() == output.resolve() for p in paths):
        raise InputError(f"the merged output {output} must not be one of the shard files")
    owner: dict[str, Path] = {}
    for path in map(Path, paths):
        with h5py.File(path, "r") as f:
            for name in _entries(f, kind):
                if name in owner:
                    raise InputError(f"entry {name!r} is in two shard files: {owner[name]} and {path}")
                owner[name] = path
    new = 0
    with staged_h5(output, record, kind=kind, overwrite=overwrite) as out:
        present = set(_entries(out, kind))
        todo = sorted(n for n in owner if n not in present)
        by_file: dict[Path, list[str]] = {}
        for name in todo:
            by_file.setdefault(owner[name], []).append(name)
        with tqdm(total=len(todo), desc=f"merge {kind}", unit="entry", disable=None if progress else True,
                  file=sys.stderr) as bar:
            for path, names in by_file.items():
                with h5py.File(path, "r") as src:
                    for name in names:
                        parent, _, leaf = name.rpartition("/")
                        dst = out.require_group(parent) if parent else out
                        src.copy(src[name], dst, name=leaf)  # datasets and attributes (uncertainty) as stored
                        new += 1
                        bar.update(1)
                out.flush()
        # beside the output, as extract and match write theirs (inside the staged block: a failure leaves it resumable)
        from ..conf import save_conf

        save_conf({**record, "merged_from": [str(p) for p in paths]}, output.with_name(output.name + ".conf.yaml"))
    return {"kind": kind, "entries": len(owner), "new": new, "shards": len(paths)}


__all__ = ["check_shards", "list_digest", "merge", "parse_shard", "select_shard", "shard_bounds"]
