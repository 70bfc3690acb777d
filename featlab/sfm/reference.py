"""COLMAP's own SIFT pipeline through pycolmap, for comparison with featlab's (``featlab reconstruct --colmap``).

COLMAP's SIFT extraction (its defaults: at most 8192 features, RootSIFT-normalised (``L1_ROOT``), images up to
3200 px unscaled), exhaustive or sequential matching with its defaults (mutual nearest neighbours, ratio 0.8,
distance 0.7) and its geometric verification, then the same incremental mapping as featlab's pipeline. Cameras
are made by featlab's rule (:mod:`.cameras`) and given to COLMAP, so both pipelines start from the same
intrinsics; images are read by COLMAP's reader (which ignores EXIF orientation: compare on images without it).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError


def colmap_features_and_matches(db_path, image_dir, names: list[str], cameras: list, camera_index: list[int],
                                pairs_mode: str, n: int | None, pairs_path, num_threads: int,
                                clock, seed: int = 0) -> None:
    """Write a COLMAP database with COLMAP's SIFT features and verified matches; ``clock`` (a
    :class:`featlab.sfm.pipeline.StageClock`) times the stages ``extract`` and ``match+verify``."""
    from . import import_pycolmap

    pycolmap = import_pycolmap()
    db_path = Path(db_path)
    db_path.unlink(missing_ok=True)
    db = pycolmap.Database.open(str(db_path))
    try:  # cameras first, by featlab's rule; the images then name them (existing_camera_id per group)
        camera_ids = [db.write_camera(cam) for cam in cameras]
    finally:
        db.close()
    with clock("extract"):
        _extract(pycolmap, db_path, image_dir, names, camera_index, camera_ids, num_threads)
    with clock("match+verify"):
        _match(pycolmap, db_path, pairs_mode, pairs_path, num_threads, seed)


def _extract(pycolmap, db_path, image_dir, names, camera_index, camera_ids, num_threads) -> None:
    ext = pycolmap.FeatureExtractionOptions()
    ext.num_threads = int(num_threads)
    ext.use_gpu = False
    for c, cid in enumerate(camera_ids):
        group = [name for name, ci in zip(names, camera_index) if ci == c]
        reader = pycolmap.ImageReaderOptions()
        reader.existing_camera_id = int(cid)
        pycolmap.extract_features(str(db_path), str(image_dir), image_names=group,
                                  camera_mode=pycolmap.CameraMode.SINGLE, reader_options=reader,
                                  extraction_options=ext, device=pycolmap.Device.cpu)


def _match(pycolmap, db_path, pairs_mode, pairs_path, num_threads, seed) -> None:
    match = pycolmap.FeatureMatchingOptions()
    match.num_threads = int(num_threads)
    match.use_gpu = False
    verify = pycolmap.TwoViewGeometryOptions()
    verify.ransac.random_seed = int(seed)
    verify.ransac.num_threads = int(num_threads)
    if pairs_mode == "exhaustive":
        pycolmap.match_exhaustive(str(db_path), matching_options=match, verification_options=verify,
                                  device=pycolmap.Device.cpu)
    elif pairs_mode in ("sequential", "retrieval"):
        if pairs_path is None:
            raise ConfigError("--colmap with sequential or retrieval pairs needs the pairs file")
        pairing = pycolmap.ImportedPairingOptions()
        pairing.match_list_path = str(pairs_path)
        pycolmap.match_image_pairs(str(db_path), matching_options=match, pairing_options=pairing,
                                   verification_options=verify, device=pycolmap.Device.cpu)
    else:
        raise ConfigError(f"unknown pairs mode '{pairs_mode}'")
