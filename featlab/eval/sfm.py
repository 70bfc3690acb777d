"""``featlab eval sfm``: accuracy of reconstructions against ground-truth cameras.

Protocol: the images of the reconstruction are matched to those of the ground-truth model by name (the path
relative to the images folder, or the file name when that is unique). The reconstruction is brought into the
ground-truth frame by the similarity (Sim(3): scale, rotation, translation) that maps its camera centres onto the
ground-truth centres, estimated with COLMAP's LO-RANSAC (``pycolmap.estimate_sim3d_robust``) with an inlier
threshold of ``align_threshold`` times the RMS distance of the ground-truth centres from their centroid (default
0.05: a misregistered camera cannot pull the alignment), and seeded. Then, per ground-truth image:

- registered: the image is in the reconstruction's (largest) model;
- rotation error (degrees): the angle of ``R_gt R_aligned^T`` (world-to-camera rotations);
- position error (ground-truth units, metres for Strecha): the distance of the aligned camera centre from the
  ground-truth one.

Summary per reconstruction: registered / ground-truth images, median and max of both errors over the registered
images, and, when the reconstruction folder holds featlab's ``report.json``, its 3D points, track length,
reprojection error and total time. Unregistered images have no error; read the registered count next to the
medians.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path, PurePosixPath

import numpy as np

from ..errors import GeometryError, InputError

logger = logging.getLogger(__name__)

#: alignment inlier threshold as a fraction of the RMS spread of the ground-truth camera centres
ALIGN_THRESHOLD = 0.05


def model_dir(path) -> Path:
    """The COLMAP model folder of a path: ``OUT/sparse`` (a ``featlab reconstruct`` folder), ``X/sparse/0`` or X."""
    path = Path(path)
    for candidate in (path / "sparse", path / "sparse" / "0", path):
        if any((candidate / f"images{ext}").is_file() for ext in (".bin", ".txt")):
            return candidate
    raise InputError(f"no COLMAP model (images.bin or images.txt) in {path}, {path / 'sparse'} or "
                     f"{path / 'sparse' / '0'}")


def _poses(rec) -> dict[str, np.ndarray]:
    from ..sfm.mapping import world_to_camera

    return world_to_camera(rec)


def _name_map(rec_names, gt_names) -> dict[str, str]:
    """{reconstruction name: ground-truth name}: exact names, else file names that are unique on both sides."""
    gt_set = set(gt_names)
    if any(n in gt_set for n in rec_names):
        return {n: n for n in rec_names if n in gt_set}
    base_gt: dict[str, list[str]] = {}
    for n in gt_names:
        base_gt.setdefault(PurePosixPath(n).name, []).append(n)
    base_rec: dict[str, list[str]] = {}
    for n in rec_names:
        base_rec.setdefault(PurePosixPath(n).name, []).append(n)
    return {v[0]: base_gt[b][0] for b, v in base_rec.items() if len(v) == 1 and len(base_gt.get(b, [])) == 1}


def align_and_score(rec_poses: dict[str, np.ndarray], gt_poses: dict[str, np.ndarray],
                    align_threshold: float = ALIGN_THRESHOLD, seed: int = 0) -> dict:
    """Align reconstructed cameras to ground-truth ones (Sim(3) on centres) and measure per-image errors.

    Args:
        rec_poses: {name: world-to-camera (4, 4)} of the registered images of the reconstruction.
        gt_poses: {name: world-to-camera (4, 4)} of every ground-truth image.
        align_threshold: RANSAC inlier threshold as a fraction of the RMS spread of the ground-truth centres.
    Returns:
        ``per_image`` [{name, registered, rotation_error_deg, position_error}], ``summary`` {gt_images,
        registered, rotation_error_deg_median/max, position_error_median/max, alignment_inliers, sim3 (3, 4),
        scale}.
    Raises:
        GeometryError: fewer than 3 registered images in common, or no alignment found.
    """
    from ..geometry.pose import rotation_angle
    from ..sfm import import_pycolmap

    names = _name_map(list(rec_poses), list(gt_poses))
    common = sorted(names, key=lambda r: names[r])
    if len(common) < 3:
        raise GeometryError(f"only {len(common)} registered image(s) match ground-truth names; the Sim(3) "
                            "alignment needs 3 (are the names relative to the same folder?)")

    def centre(T):  # camera centre (3,) of a world-to-camera pose
        return -T[:3, :3].T @ T[:3, 3]

    src = np.array([centre(rec_poses[r]) for r in common])
    tgt = np.array([centre(gt_poses[names[r]]) for r in common])
    gt_all = np.array([centre(T) for T in gt_poses.values()])
    spread = float(np.sqrt(((gt_all - gt_all.mean(0)) ** 2).sum(1).mean()))
    pycolmap = import_pycolmap()
    opts = pycolmap.RANSACOptions()
    opts.max_error = float(align_threshold * spread)
    opts.random_seed = int(seed)
    found = pycolmap.estimate_sim3d_robust(src, tgt, opts)  # {tgt_from_src, num_inliers, inlier_mask} or None
    sim = found["tgt_from_src"] if found else None
    if sim is None:
        raise GeometryError("no similarity aligns the reconstructed camera centres to the ground truth")
    s, R, t = float(sim.scale), np.asarray(sim.rotation.matrix()), np.asarray(sim.translation).reshape(3)
    aligned = (s * (R @ src.T)).T + t
    inliers = int((np.linalg.norm(aligned - tgt, axis=1) <= opts.max_error).sum())
    errors = {}
    for k, r in enumerate(common):
        R_aligned = rec_poses[r][:3, :3] @ R.T  # x_rec = R^T (x_gt - t) / s, so cam_from_gt = cam_from_rec R^T
        R_gt = gt_poses[names[r]][:3, :3]
        errors[names[r]] = (float(rotation_angle(R_gt @ R_aligned.T)), float(np.linalg.norm(aligned[k] - tgt[k])))
    per_image = []
    for g in sorted(gt_poses):
        rot, pos = errors.get(g, (None, None))
        per_image.append({"name": g, "registered": g in errors, "rotation_error_deg": rot, "position_error": pos})
    rots = np.array([e[0] for e in errors.values()])
    poss = np.array([e[1] for e in errors.values()])
    summary = {"gt_images": len(gt_poses), "registered": len(errors),
               "rotation_error_deg_median": float(np.median(rots)), "rotation_error_deg_max": float(rots.max()),
               "position_error_median": float(np.median(poss)), "position_error_max": float(poss.max()),
               "alignment_inliers": inliers, "alignment_threshold": opts.max_error, "scale": s,
               "sim3": np.asarray(sim.matrix()).tolist()}
    return {"per_image": per_image, "summary": summary}


def evaluate_sfm(reconstructions: dict[str, Path], gt, align_threshold: float = ALIGN_THRESHOLD,
                 seed: int = 0) -> dict:
    """Score several reconstructions (``{label: folder}``) against one ground-truth model (see the module doc)."""
    from ..datasets.colmap import load_reconstruction

    gt_model = model_dir(gt)
    gt_poses = _poses(load_reconstruction(gt_model))
    if len(gt_poses) < 3:
        raise InputError(f"ground-truth model {gt_model} has {len(gt_poses)} posed image(s); 3 are needed")
    results = {}
    for label, folder in reconstructions.items():
        folder = Path(folder)
        report_path = folder / "report.json"
        report = json.loads(report_path.read_text()) if report_path.is_file() else None
        try:
            rec_dir = model_dir(folder)
        except InputError:
            if report is None:
                raise
            rec_dir = None  # a featlab reconstruction that registered nothing
        rec_poses = _poses(load_reconstruction(rec_dir)) if rec_dir is not None else {}
        try:
            res = align_and_score(rec_poses, gt_poses, align_threshold, seed)
        except GeometryError as e:
            logger.warning("%s: %s", label, e)
            res = {"per_image": [], "summary": {"gt_images": len(gt_poses), "registered": 0, "error": str(e)}}
        res["model"] = str(rec_dir) if rec_dir else None
        if report is not None:
            st = report["statistics"]
            res["summary"].update(points3D=st["points3D"], mean_track_length=st["mean_track_length"],
                                  mean_reprojection_error_px=st["mean_reprojection_error_px"],
                                  time_s=float(sum(report["times_s"].values())), times_s=report["times_s"],
                                  cpu_s=float(sum(report["cpu_s"].values())) if report.get("cpu_s") else None,
                                  images=st["images"], settings=report.get("settings"))
        results[label] = res
    return {"gt": str(gt_model), "align_threshold": align_threshold, "results": results}


def markdown(result: dict, title: str = "") -> str:
    """The summary table of :func:`evaluate_sfm` (one row per reconstruction)."""
    from .report import markdown_table

    header = ["method", "registered", "rot. median (deg)", "rot. max (deg)", "pos. median (m)", "pos. max (m)",
              "3D points", "track length", "reproj. (px)", "wall (s)", "CPU (s)"]
    rows = []
    for label, r in result["results"].items():
        s = r["summary"]
        rows.append([label, f"{s['registered']}/{s['gt_images']}", s.get("rotation_error_deg_median"),
                     s.get("rotation_error_deg_max"), s.get("position_error_median"), s.get("position_error_max"),
                     s.get("points3D"), s.get("mean_track_length"), s.get("mean_reprojection_error_px"),
                     s.get("time_s"), s.get("cpu_s")])
    lines = [f"# {title}" if title else "# Reconstruction accuracy", "",
             f"Ground truth: `{result['gt']}`; Sim(3) on camera centres, LO-RANSAC threshold "
             f"{result['align_threshold']:g} x the RMS spread of the ground-truth centres. Errors over registered "
             "images; positions in ground-truth units. Time: the reconstruction's total, wall clock and CPU (user + "
             "system, all threads).", "",
             markdown_table(header, rows, digits=[0, 0, 3, 3, 4, 4, 0, 2, 3, 0, 0])]
    return "\n".join(lines)


def write_posed_model(path, names: list[str], K: np.ndarray, T_w2c: np.ndarray, image_size) -> Path:
    """Write posed images as a COLMAP text model (no points), e.g. a rendered scene's ground truth.

    Args:
        names: (M,) image names; K: (3, 3) shared intrinsics in featlab (= COLMAP) pixels; T_w2c: (M, 4, 4);
        image_size: (H, W).
    """
    from ..sfm import import_pycolmap

    pycolmap = import_pycolmap()
    rec = pycolmap.Reconstruction()
    h, w = int(image_size[0]), int(image_size[1])
    cam = pycolmap.Camera.create_from_model_name(1, "PINHOLE", float(K[0, 0]), w, h)
    cam.params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
    rec.add_camera_with_trivial_rig(cam)
    for i, (name, T) in enumerate(zip(names, T_w2c), start=1):
        image = pycolmap.Image(name=name, camera_id=1, image_id=i)
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(np.asarray(T, np.float64)[:3, :4]))
    Path(path).mkdir(parents=True, exist_ok=True)
    rec.write_text(str(path))
    return Path(path)


def add_cli(esub):
    """Register ``featlab eval sfm`` under ``featlab eval``."""
    p = esub.add_parser("sfm", help="reconstruction accuracy against ground-truth cameras (Sim(3) alignment)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("reconstructions", nargs="+", metavar="[LABEL=]FOLDER",
                   help="featlab reconstruct output folders or COLMAP model folders, optionally labelled")
    p.add_argument("--gt", type=Path, required=True, help="ground-truth COLMAP model (X, X/sparse or X/sparse/0)")
    p.add_argument("--align-threshold", type=float, default=ALIGN_THRESHOLD,
                   help=f"alignment inlier threshold, fraction of the GT centres' spread (default {ALIGN_THRESHOLD})")
    p.add_argument("--seed", type=int, default=0, help="RANSAC seed")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (sfm.json, sfm.md)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..errors import ConfigError
    from .report import write_json, write_markdown

    if not 0 < args.align_threshold < 1:
        raise ConfigError(f"--align-threshold must be in (0, 1), got {args.align_threshold}")
    recs = {}
    for item in args.reconstructions:
        label, _, folder = item.rpartition("=") if "=" in item else ("", "", item)
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"reconstruction folder not found: {folder}")
        label = label or folder.name
        if label in recs:
            raise ConfigError(f"two reconstructions are labelled '{label}'; label them LABEL=FOLDER")
        recs[label] = folder
    result = evaluate_sfm(recs, args.gt, args.align_threshold, args.seed)
    write_json(args.output / "sfm.json", result)
    text = markdown(result, title=f"Reconstruction accuracy on {Path(result['gt']).parent.name}")
    write_markdown(args.output / "sfm.md", text)
    print(text)
    return 0
