"""HPatches full-image sequences in the standard layout.

Layout::

    <root>/<sequence>/1.ppm .. 6.ppm      the reference image 1 and five target images
    <root>/<sequence>/H_1_2 .. H_1_6      3x3 text files, image 1 -> image k, OpenCV pixel convention

Sequence names start with ``i_`` (illumination changes) or ``v_`` (viewpoint changes). Each sequence gives the five
pairs 1-2 .. 1-6. The homographies are converted once to featlab pixels (:func:`featlab.pixels.homography_from_opencv`)
and, when the images are resized, adapted to the resized images
(:func:`featlab.geometry.homography.rescale_homography`).

The D2-Net protocol evaluates 108 of the 116 sequences: it leaves out the 8 high-resolution ones
(:data:`D2NET_EXCLUDED`, passed as ``conf.exclude``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..conf import none_or, resolve_conf
from ..geometry.homography import rescale_homography
from ..io.text import read_matrix_file
from ..errors import ConfigError, InputError
from ..io.image import IMAGE_EXTENSIONS, read_image, resize_image
from ..pixels import homography_from_opencv

default_conf = {
    "resize": none_or(int, list),  # None: native size; int: longest side; [H, W]: exact size (H_0to1 is
    # adapted to match)
    "exclude": [],  # sequence names left out (absent ones are fine), e.g. D2NET_EXCLUDED
}

#: the 8 high-resolution sequences that D2-Net's HPatches protocol leaves out (108 sequences remain)
D2NET_EXCLUDED = ("i_contruction", "i_crownnight", "i_dc", "i_pencils", "i_whitebuilding", "v_artisans",
                  "v_astronautis", "v_talent")

SPLITS = ("all", "i", "v")
NUM_IMAGES = 6


def read_homography_file(path: Path) -> np.ndarray:
    """Read a 3x3 homography text file (whitespace-separated numbers) as float64.

    Raises:
        InputError: missing file, unparsable content, wrong shape, non-finite or singular matrix.
    """
    H = read_matrix_file(path, (3, 3), "homography")
    if not np.all(np.isfinite(H)):
        raise InputError(f"malformed homography file {path}: non-finite values")
    if abs(np.linalg.det(H)) < 1e-12 * max(1.0, np.abs(H).max() ** 3):
        raise InputError(f"malformed homography file {path}: singular matrix")
    return H


def _find_image(folder: Path, index: int) -> Path | None:
    for ext in (".ppm",) + IMAGE_EXTENSIONS:
        p = folder / f"{index}{ext}"
        if p.is_file():
            return p
    return None


def split_of(sequence: str) -> str:
    """'i' or 'v' from the sequence name prefix, '' when it has neither."""
    return sequence[0] if sequence[:2] in ("i_", "v_") else ""


class HPatches:
    """HPatches image pairs (reference image 1 against images 2..6 of every sequence).

    Args:
        root: folder holding the sequence folders.
        sequences: names of the sequences to use (None: every sequence folder under root).
        split: 'all', 'i' (illumination) or 'v' (viewpoint).
        conf: overrides of :data:`default_conf`; ``exclude`` drops sequences after ``sequences`` and ``split``.

    Items (``dataset[k]``, iteration, ``len(dataset)``)::

        name      str, "<sequence>/1-<k>", e.g. "v_graffiti/1-2"
        sequence  str
        split     'i' | 'v' ('' for a folder without either prefix)
        image0    uint8 (H0, W0, 3) RGB, image 1 (resized if conf.resize)
        image1    uint8 (H1, W1, 3) RGB, image k (resized if conf.resize)
        H_0to1    float64 (3, 3) featlab pixels, image0 -> image1 (of the returned, possibly resized, images)

    Raises:
        InputError: missing root, unknown sequence, a sequence with missing images or H files, a malformed H file,
            no sequence left after filtering.
        ConfigError: unknown split or config key; a sequence asked for by name and excluded.
    """

    def __init__(self, root, sequences=None, split: str = "all", conf=None):
        self.conf = resolve_conf(default_conf, conf, "hpatches")
        if split not in SPLITS:
            raise ConfigError(f"HPatches split must be one of {', '.join(SPLITS)}, got '{split}'")
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"HPatches root folder not found: {self.root}")
        available = sorted(p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if sequences is None:
            names = available
        else:
            names = [sequences] if isinstance(sequences, str) else list(sequences)
            missing = [s for s in names if s not in available]
            if missing:
                raise InputError(f"HPatches sequences not found under {self.root}: {', '.join(missing)} "
                                 f"(available: {', '.join(available[:10]) or 'none'}"
                                 f"{', ...' if len(available) > 10 else ''})")
        excluded = set(self.conf.exclude or ())
        if sequences is not None and excluded.intersection(names):
            raise ConfigError(f"HPatches sequences asked for but excluded: {', '.join(sorted(excluded & set(names)))}")
        names = [s for s in names if s not in excluded]
        if split != "all":
            names = [s for s in names if split_of(s) == split]
        if not names:
            raise InputError(f"no HPatches sequence (split '{split}'"
                             f"{', after the exclusions' if excluded else ''}) found under {self.root}")
        resize = self.conf.resize
        if resize is not None and not isinstance(resize, (int, float)):
            if len(resize) != 2:
                raise ConfigError(f"hpatches.resize must be null, an int or [H, W], got {list(resize)}")
            try:
                resize = [int(v) for v in resize]
            except (TypeError, ValueError):
                raise ConfigError(f"hpatches.resize must hold integers, got {list(resize)}") from None
        if resize is not None and min(np.atleast_1d(resize)) < 8:
            raise ConfigError(f"hpatches.resize is too small: {resize}")
        self._resize = resize
        self.split = split
        self.sequences = names
        self.items = []  # (sequence, k, path0, pathk, H_0to1 featlab at native size)
        for seq in names:
            folder = self.root / seq
            paths = [_find_image(folder, i) for i in range(1, NUM_IMAGES + 1)]
            missing = [str(i) for i, p in enumerate(paths, 1) if p is None]
            missing += [f"H_1_{k}" for k in range(2, NUM_IMAGES + 1) if not (folder / f"H_1_{k}").is_file()]
            if missing:
                raise InputError(f"HPatches sequence {folder} is incomplete: missing {', '.join(missing)}")
            for k in range(2, NUM_IMAGES + 1):
                H = homography_from_opencv(read_homography_file(folder / f"H_1_{k}"))
                self.items.append((seq, k, paths[0], paths[k - 1], H / H[2, 2]))

    def __len__(self) -> int:
        return len(self.items)

    def _load(self, path: Path):
        return resize_image(read_image(path), self._resize)

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"pair index {index} out of range for {n} HPatches pairs")
        seq, k, path0, path1, H = self.items[index]
        image0, scale0 = self._load(path0)
        image1, scale1 = self._load(path1)
        if self._resize is not None:  # resize_image's scales map resized -> original
            H = rescale_homography(H, (1.0 / scale0[0], 1.0 / scale0[1]), (1.0 / scale1[0], 1.0 / scale1[1]))
            H = H / H[2, 2]
        return {
            "name": f"{seq}/1-{k}",
            "sequence": seq,
            "split": split_of(seq),
            "image0": image0,
            "image1": image1,
            "H_0to1": H.copy(),
        }

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]
