"""A COLMAP database from featlab's features and matches files (hloc layout), and its geometric verification.

Each image gets a camera (:mod:`.cameras`), a trivial rig and frame (COLMAP >= 3.12 registers frames, not images),
its keypoints (featlab pixels are COLMAP's: no shift) and, per pair, its matches. No descriptors are written: COLMAP
only needs them for its own matching. Geometric verification is COLMAP's (``pycolmap.verify_matches``): for every
pair, E, F and H by RANSAC and the inlier matches of the best-fitting configuration.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError


def write_database(db_path, names: list[str], cameras: list, camera_index: list[int], features, matches,
                   pairs: list[tuple[str, str]]) -> dict[str, int]:
    """Create a COLMAP database (replacing ``db_path``) with cameras, images, keypoints and raw matches.

    Args:
        db_path: the database file to create.
        names: image names (as in the features file and the images folder).
        cameras: distinct pycolmap cameras (C of them); ``camera_index[i]`` picks image i's.
        features, matches: paths of the features and matches files (hloc layout).
        pairs: the image pairs whose matches are imported.
    Returns:
        {image name: COLMAP image id}.
    Raises:
        InputError: an image or a pair missing from the files.
    """
    from ..io.h5 import read_features, read_matches
    from . import import_pycolmap

    pycolmap = import_pycolmap()
    db_path = Path(db_path)
    db_path.unlink(missing_ok=True)
    db = pycolmap.Database.open(str(db_path))
    try:
        camera_ids, rig_ids = [], []
        for cam in cameras:
            cid = db.write_camera(cam)
            rig = pycolmap.Rig()
            rig.add_ref_sensor(pycolmap.sensor_t(pycolmap.SensorType.CAMERA, cid))
            camera_ids.append(cid)
            rig_ids.append(db.write_rig(rig))
        ids: dict[str, int] = {}
        for name, c in zip(names, camera_index):
            iid = db.write_image(pycolmap.Image(name=name, camera_id=camera_ids[c]))
            frame = pycolmap.Frame()
            frame.rig_id = rig_ids[c]
            frame.add_data_id(pycolmap.data_t(pycolmap.sensor_t(pycolmap.SensorType.CAMERA, camera_ids[c]), iid))
            db.write_frame(frame)
            ids[name] = iid
            kpts = read_features(features, name)["keypoints"]  # featlab pixels == COLMAP pixels
            db.write_keypoints(iid, np.ascontiguousarray(kpts, np.float32))
        for name0, name1 in pairs:
            if name0 not in ids or name1 not in ids:
                raise InputError(f"pair ({name0}, {name1}) names an image without features")
            m = read_matches(matches, name0, name1)["matches"]
            db.write_matches(ids[name0], ids[name1], np.ascontiguousarray(m, np.uint32))
    finally:
        db.close()
    return ids


def verify_matches(db_path, pairs_path, max_error: float = 4.0, seed: int = 0, num_threads: int = 1) -> int:
    """COLMAP's geometric verification of the pairs in ``pairs_path``; returns the number of verified pairs.

    Args:
        max_error: RANSAC inlier threshold in pixels (COLMAP's default 4).
        seed: RANSAC seed (COLMAP's default -1 is time-seeded; fixed here so that runs repeat).
    """
    from . import import_pycolmap

    pycolmap = import_pycolmap()
    opts = pycolmap.TwoViewGeometryOptions()
    opts.ransac.max_error = float(max_error)
    opts.ransac.random_seed = int(seed)
    opts.ransac.num_threads = int(num_threads)
    pycolmap.verify_matches(str(db_path), str(pairs_path), opts)
    db = pycolmap.Database.open(str(db_path))
    try:
        return int(db.num_verified_image_pairs())
    finally:
        db.close()
