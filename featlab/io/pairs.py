"""Image pair lists: exhaustive, sequential (video), or read from a text file in hloc's format.

A pairs file holds one pair per line, two image names separated by whitespace (names as in the features file:
paths relative to the images folder with ``/``). Blank lines and ``#`` comments (whole line, or after whitespace
at the end of a line) are ignored. Duplicates, in either order, are dropped keeping the first occurrence.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from ..errors import ConfigError, InputError
from .atomic import atomic_write_text

Pair = tuple[str, str]


def exhaustive_pairs(names: Sequence[str]) -> list[Pair]:
    """All pairs (names[i], names[j]) with i < j: n (n - 1) / 2 pairs."""
    names = list(names)
    return [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]


def sequential_pairs(names: Sequence[str], window: int, loop: bool = False) -> list[Pair]:
    """Pairs of each image with its ``window`` successors in the given order (a video).

    Args:
        window: number of successors matched to each image (>= 1).
        loop: the sequence is closed (the last images are also matched to the first ones).
    Returns:
        (names[i], names[i + k]) for k = 1..window, without duplicates; with ``loop`` the index wraps around.
    """
    if int(window) != window or window < 1:
        raise ConfigError(f"sequential window must be a positive integer, got {window}")
    names = list(names)
    n = len(names)
    pairs: list[Pair] = []
    seen: set[frozenset] = set()
    for i in range(n):
        for k in range(1, int(window) + 1):
            j = i + k
            if j >= n:
                if not loop:
                    break
                j %= n
            key = frozenset((i, j))
            if i == j or key in seen:
                continue
            seen.add(key)
            pairs.append((names[i], names[j]))
    return pairs


def _strip_comment(line: str) -> str:
    if line.lstrip().startswith("#"):
        return ""
    for sep in (" #", "\t#"):
        if sep in line:
            line = line[: line.index(sep)]
    return line.strip()


def parse_pairs(lines: Iterable[str], source: str = "pairs") -> list[Pair]:
    """Parse pair lines (see the module docstring); InputError names the line of a malformed entry."""
    pairs: list[Pair] = []
    seen: set[frozenset] = set()
    for lineno, line in enumerate(lines, 1):
        text = _strip_comment(line)
        if not text:
            continue
        tokens = text.split()
        if len(tokens) != 2:
            raise InputError(f"{source}:{lineno}: expected two image names, got {len(tokens)}: {line.strip()!r}")
        a, b = tokens
        if a == b:
            raise InputError(f"{source}:{lineno}: pair of an image with itself ({a})")
        key = frozenset((a, b))
        if key in seen:
            continue
        seen.add(key)
        pairs.append((a, b))
    return pairs


def read_pairs(path: str | Path, known_names: Iterable[str] | None = None) -> list[Pair]:
    """Read a pairs file; with ``known_names``, every name must be one of them (InputError otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"pairs file not found: {path}")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise InputError(f"pairs file {path} is not a text file") from None
    pairs = parse_pairs(text.splitlines(), source=str(path))
    if not pairs:
        raise InputError(f"pairs file {path} holds no pairs")
    if known_names is not None:
        check_pairs(pairs, known_names, source=str(path))
    return pairs


def check_pairs(pairs: Sequence[Pair], known_names: Iterable[str], source: str = "pairs") -> None:
    """InputError listing (up to 5) names of ``pairs`` that are not in ``known_names``."""
    known = set(known_names)
    unknown = sorted({n for pair in pairs for n in pair if n not in known})
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        raise InputError(f"{source}: {len(unknown)} image name(s) not in the features file: {shown}")


def write_pairs(path: str | Path, pairs: Iterable[Pair]) -> Path:
    """Write a pairs file atomically (one ``name0 name1`` line per pair)."""
    lines = []
    for a, b in pairs:
        for name in (a, b):
            if not name or any(c.isspace() for c in name) or name.startswith("#"):
                raise InputError(f"image name {name!r} cannot be written to a pairs file (whitespace or '#')")
        lines.append(f"{a} {b}\n")
    return atomic_write_text(path, "".join(lines))
