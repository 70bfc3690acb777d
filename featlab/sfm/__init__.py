"""Structure from motion with featlab features: COLMAP databases, incremental mapping and reports (pycolmap).

One module per stage, as hloc: :mod:`.cameras` (one camera per folder or image, focal length from EXIF),
:mod:`.pairs` (exhaustive, sequential or retrieval pairs; the retrieval descriptor), :mod:`.database` (a COLMAP
database from featlab's features and matches files, geometric verification), :mod:`.mapping` (incremental mapping,
the largest model, its statistics), :mod:`.report` (JSON, Markdown and a picture), :mod:`.reference` (COLMAP's own
SIFT pipeline on the same images, for comparison) and :mod:`.pipeline` (all of it, behind ``featlab reconstruct``).

Pixels: COLMAP's convention is featlab's (centre of the top-left pixel at (0.5, 0.5)), so keypoints read from a
features file (:func:`featlab.io.h5.read_features`, which converts from hloc's (0, 0)) enter COLMAP as they are.
"""
from __future__ import annotations


def import_pycolmap():
    """pycolmap, imported after OpenCV: the other order makes OpenCV's PNG writer abort with a double free (the two
    wheels bundle different zlib builds; seen with pycolmap 4.2.1 and opencv-python-headless 5.0)."""
    import cv2  # noqa: F401 - import order matters, see above

    import pycolmap

    return pycolmap
