"""Incremental mapping (COLMAP's, through pycolmap) and the statistics of a model."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np


def incremental_mapping(db_path, image_dir, work_dir, seed: int = 0, num_threads: int = 1):
    """Run COLMAP's incremental mapper and return its models as {index: pycolmap.Reconstruction}.

    ``work_dir`` receives COLMAP's numbered model folders (replaced). Seeded so that runs repeat (COLMAP's default
    is time-seeded); one thread by default, as the rest of featlab on a shared CPU (``num_threads=-1``: all).
    """
    from . import import_pycolmap

    pycolmap = import_pycolmap()
    work_dir = Path(work_dir)
    shutil.rmtree(work_dir, ignore_errors=True)
    work_dir.mkdir(parents=True)
    opts = pycolmap.IncrementalPipelineOptions()
    opts.random_seed = int(seed)
    opts.num_threads = int(num_threads)
    pycolmap.set_random_seed(int(seed))
    return dict(pycolmap.incremental_mapping(str(db_path), str(image_dir), str(work_dir), opts))


def largest_model(models: dict):
    """The model with the most registered images (ties: the most 3D points), or None when there is none."""
    if not models:
        return None
    return max(models.values(), key=lambda r: (r.num_reg_images(), r.num_points3D()))


def model_statistics(rec, num_images: int) -> dict:
    """Registered images, 3D points, observations, mean track length and mean reprojection error of a model.

    Args:
        rec: a pycolmap.Reconstruction (or None: nothing registered).
        num_images: images given to the reconstruction (the denominator of the registered fraction).
    """
    if rec is None:
        return {"images": num_images, "registered": 0, "points3D": 0, "observations": 0,
                "mean_track_length": None, "mean_reprojection_error_px": None, "cameras": []}
    cams = []
    for cid, cam in sorted(rec.cameras.items()):
        cams.append({"camera_id": int(cid), "model": cam.model.name, "width": int(cam.width),
                     "height": int(cam.height), "params": [float(v) for v in np.asarray(cam.params)]})
    return {"images": num_images, "registered": int(rec.num_reg_images()), "points3D": int(rec.num_points3D()),
            "observations": int(rec.compute_num_observations()),
            "mean_track_length": float(rec.compute_mean_track_length()) if rec.num_points3D() else None,
            "mean_reprojection_error_px": float(rec.compute_mean_reprojection_error()) if rec.num_points3D() else None,
            "cameras": cams}


def camera_centres(rec) -> dict[str, np.ndarray]:
    """{image name: camera centre (3,) in world coordinates} of the registered images of a model."""
    out = {}
    for iid in rec.reg_image_ids():
        img = rec.image(iid)
        out[img.name] = np.asarray(img.projection_center(), np.float64)
    return out


def world_to_camera(rec) -> dict[str, np.ndarray]:
    """{image name: world-to-camera (4, 4)} of the registered images of a model."""
    out = {}
    for iid in rec.reg_image_ids():
        img = rec.image(iid)
        T = np.eye(4)
        T[:3, :4] = np.asarray(img.cam_from_world().matrix(), np.float64)
        out[img.name] = T
    return out
