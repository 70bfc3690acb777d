"""The MegaDepth training data in the layout used by CAPS (Wang et al., ECCV 2020), as a posed collection.

**Untested against the real download** (it is not available on this project's machines): this reader follows the
published description of CAPS's MegaDepth data and its data loader, as we understand them, and is exercised only on
a hand-made fixture in the same layout. What we assume:

- ``ROOT/<split>/<scene>/<dense folder>/aligned/`` per reconstruction, where ``<split>`` is ``train`` or ``test``,
  ``<scene>`` a MegaDepth scene id (e.g. ``0000``) and ``<dense folder>`` a name containing ``dense`` (``dense0``,
  ``dense1``: MegaDepth's separate reconstructions of one scene; each has its own world frame);
- ``aligned/images/``: the (undistorted) images;
- ``aligned/img_cam.txt``: one line per image, ``#`` comments allowed::

      name width height fx fy cx cy r11 r12 r13 r21 r22 r23 r31 r32 r33 tx ty tz

  with K from COLMAP's undistorted PINHOLE cameras (principal point in COLMAP's = featlab's pixel convention) and
  ``[R | t]`` the world-to-camera pose (``x_cam = R x_world + t``); CAPS computes the relative pose of a pair as
  ``E_2 inv(E_1)`` with ``E = [[R, t], [0, 1]]``, which is featlab's ``T_0to1``;
- ``aligned/pairs.txt`` (optional): ``name1 name2`` per line, the image pairs CAPS trains on (selected by the CAPS
  authors from the SfM model; CAPS caps them at 5000 per reconstruction for balance).

Each reconstruction is a group of the collection (pairs never cross reconstructions); image names are
``<scene>/<dense folder>/<image name>``. MegaDepth's depth maps and SfM tracks are not part of this layout, so pairs
sampled with :class:`~featlab.datasets.posed.PairSampler` can use only the gap, rotation and baseline bounds; the
shipped ``pairs.txt`` lists are returned as they are.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError
from .posed import PosedCollection, check_rigid

IMG_CAM_FIELDS = 19


def read_img_cam(path: Path) -> list[tuple[str, tuple[int, int], np.ndarray, np.ndarray]]:
    """Parse an ``img_cam.txt``: list of (image name, (height, width), K (3, 3), T_w2c (4, 4)).

    Raises:
        InputError: a line without 19 fields or with non-numeric values (naming the line), a non-rigid pose.
    """
    out = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != IMG_CAM_FIELDS:
            raise InputError(f"{path} line {n}: expected {IMG_CAM_FIELDS} fields (name w h fx fy cx cy R(9) t(3)), "
                             f"got {len(fields)}")
        try:
            w, h = int(fields[1]), int(fields[2])
            fx, fy, cx, cy = (float(v) for v in fields[3:7])
            R = np.array([float(v) for v in fields[7:16]]).reshape(3, 3)
            t = np.array([float(v) for v in fields[16:19]])
        except ValueError:
            raise InputError(f"{path} line {n}: non-numeric camera values in '{line}'") from None
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, t
        T = check_rigid(T, f"{path} line {n}")
        K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        out.append((fields[0], (h, w), K, T))
    return out


def read_megadepth_caps(root, split: str = "train", scenes=None, check_images: bool = True):
    """Read CAPS-layout MegaDepth reconstructions (see the module docstring for the assumed layout).

    Args:
        root: the data root (holding ``train/`` and/or ``test/``).
        split: sub-folder to read.
        scenes: only these scene ids (None: all).
        check_images: check that every listed image file exists.
    Returns:
        (collection, pairs): a :class:`PosedCollection` (one group per reconstruction, no depth, no tracks) and
        the index pairs listed in the ``pairs.txt`` files (empty when there are none).

    Raises:
        InputError: missing folders, no reconstruction found, malformed files, missing images, pairs naming
            unknown images.
    """
    split_dir = Path(root) / split
    if not split_dir.is_dir():
        raise InputError(f"MegaDepth (CAPS layout) split folder not found: {split_dir}")
    recs = sorted(p.parent for p in split_dir.glob("*/*/aligned/img_cam.txt") if "dense" in p.parent.parent.name)
    if scenes is not None:
        wanted = {str(s) for s in scenes}
        recs = [r for r in recs if r.parent.parent.name in wanted]
    if not recs:
        raise InputError(f"no reconstruction <scene>/dense*/aligned/img_cam.txt under {split_dir}"
                         + (f" for scenes {sorted(map(str, scenes))}" if scenes is not None else ""))
    names, paths, Ks, poses, sizes, groups, pairs = [], [], [], [], [], [], []
    for g, folder in enumerate(recs):
        prefix = f"{folder.parent.parent.name}/{folder.parent.name}"
        local: dict[str, int] = {}
        for image, size, K, T in read_img_cam(folder / "img_cam.txt"):
            path = folder / "images" / image
            if check_images and not path.is_file():
                raise InputError(f"MegaDepth image listed in {folder / 'img_cam.txt'} not found: {path}")
            local[image] = len(names)
            names.append(f"{prefix}/{image}")
            paths.append(path)
            Ks.append(K)
            poses.append(T)
            sizes.append(size)
            groups.append(g)
        pair_file = folder / "pairs.txt"
        if pair_file.is_file():
            for n, line in enumerate(pair_file.read_text().splitlines(), 1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    raise InputError(f"{pair_file} line {n}: expected two image names, got '{line.strip()}'")
                try:
                    pairs.append((local[fields[0]], local[fields[1]]))
                except KeyError as e:
                    raise InputError(f"{pair_file} line {n}: image {e} is not in img_cam.txt") from None
    collection = PosedCollection(names, paths, np.stack(Ks), np.stack(poses), groups=groups, image_sizes=sizes,
                                 name=f"megadepth-{split}")
    return collection, pairs
