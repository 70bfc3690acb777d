"""Test fixtures on disk: a rendered posed collection written as a COLMAP project (the Strecha layout)."""
from pathlib import Path

import cv2
import numpy as np

from featlab.eval.sfm import write_posed_model


def write_colmap_text(collection, root: Path) -> Path:
    """``root/images/<name>.png`` and ``root/sparse/`` (COLMAP text: one shared PINHOLE camera, world-to-camera
    poses, no points: the poses are ground truth) for a collection with one intrinsics matrix."""
    assert np.allclose(collection.K, collection.K[0]), "one shared camera expected"
    (root / "images").mkdir(parents=True)
    for k, name in enumerate(collection.names):
        cv2.imwrite(str(root / "images" / f"{name}.png"), collection.load_image(k)[..., ::-1])
    size = collection.load_image(0).shape[:2]
    write_posed_model(root / "sparse", [f"{n}.png" for n in collection.names], collection.K[0], collection.T_w2c,
                      size)
    return root
