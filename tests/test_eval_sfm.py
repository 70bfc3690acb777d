"""`featlab eval sfm`: Sim(3) alignment of reconstructed cameras to ground truth and per-image errors, on hand-made
camera sets with known answers."""
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from featlab.cli import main
from featlab.errors import GeometryError
from featlab.eval.sfm import align_and_score, evaluate_sfm, write_posed_model

pytest.importorskip("pycolmap")


def _cameras(n=10, seed=0):
    """n world-to-camera poses on a circle of radius 5 around the origin, looking roughly inwards."""
    rng = np.random.default_rng(seed)
    poses = {}
    for i in range(n):
        a = 2 * np.pi * i / n
        centre = np.array([5 * np.cos(a), 5 * np.sin(a), rng.uniform(-0.5, 0.5)])
        R = Rotation.from_euler("xyz", rng.uniform(-180, 180, 3), degrees=True).as_matrix()
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, -R @ centre
        poses[f"{i:04d}.jpg"] = T
    return poses


def _similar(poses, s, R, t):
    """The same cameras in a frame x' = s R x + t (a reconstruction's arbitrary gauge)."""
    out = {}
    for name, T in poses.items():
        c = -T[:3, :3].T @ T[:3, 3]
        Rc = T[:3, :3] @ R.T
        U = np.eye(4)
        U[:3, :3], U[:3, 3] = Rc, -Rc @ (s * R @ c + t)
        out[name] = U
    return out


def test_exact_similarity_gives_zero_error():
    gt = _cameras()
    R = Rotation.from_euler("zyx", [30, -20, 10], degrees=True).as_matrix()
    rec = _similar(gt, 0.3, R, np.array([1.0, -2.0, 0.5]))
    res = align_and_score(rec, gt)
    s = res["summary"]
    assert s["registered"] == 10 == s["gt_images"] and s["alignment_inliers"] == 10
    assert s["scale"] == pytest.approx(1 / 0.3, rel=1e-6)
    assert s["rotation_error_deg_max"] < 1e-4 and s["position_error_max"] < 1e-6


def test_known_errors_and_an_outlier_camera():
    gt = _cameras()
    rec = _similar(gt, 2.0, np.eye(3), np.zeros(3))
    names = sorted(gt)
    # camera 3: rotated by 5 degrees about its own centre; camera 7: moved 2 m (in GT units) away
    T = rec[names[3]].copy()
    c = -T[:3, :3].T @ T[:3, 3]
    Rn = Rotation.from_euler("y", 5, degrees=True).as_matrix() @ T[:3, :3]
    T[:3, :3], T[:3, 3] = Rn, -Rn @ c
    rec[names[3]] = T
    T = rec[names[7]].copy()
    c = -T[:3, :3].T @ T[:3, 3] + 2.0 * np.array([0, 0, 2.0])  # 4 rec units = 2 GT units
    T[:3, 3] = -T[:3, :3] @ c
    rec[names[7]] = T
    del rec[names[9]]  # not registered
    res = align_and_score(rec, gt)
    per = {r["name"]: r for r in res["per_image"]}
    assert per[names[3]]["rotation_error_deg"] == pytest.approx(5.0, abs=1e-4)
    assert per[names[3]]["position_error"] < 1e-6
    assert per[names[7]]["position_error"] == pytest.approx(2.0, abs=1e-6)  # the outlier did not move the fit
    assert per[names[9]]["registered"] is False and per[names[9]]["position_error"] is None
    s = res["summary"]
    assert s["registered"] == 9 and s["alignment_inliers"] == 8
    assert s["position_error_max"] == pytest.approx(2.0, abs=1e-6) and s["position_error_median"] < 1e-6


def test_names_matched_by_file_name_and_too_few_common():
    gt = _cameras(5)
    rec = {f"images/{k}": v for k, v in gt.items()}
    assert align_and_score(rec, gt)["summary"]["registered"] == 5
    with pytest.raises(GeometryError):
        align_and_score({k: v for k, v in list(gt.items())[:2]}, gt)


def test_eval_sfm_cli_on_written_models(tmp_path, capsys):
    gt = _cameras(6)
    names = sorted(gt)
    K = np.array([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]])
    write_posed_model(tmp_path / "gt" / "sparse", names, K, np.stack([gt[n] for n in names]), (480, 640))
    rec = _similar(gt, 0.5, Rotation.from_euler("x", 40, degrees=True).as_matrix(), np.ones(3))
    write_posed_model(tmp_path / "rec" / "sparse", names, K, np.stack([rec[n] for n in names]), (480, 640))
    write_posed_model(tmp_path / "few" / "sparse", names[:2], K, np.stack([rec[n] for n in names[:2]]),
                      (480, 640))
    rc = main(["eval", "sfm", f"mine={tmp_path / 'rec'}", str(tmp_path / "few"), "--gt", str(tmp_path / "gt"),
               "-o", str(tmp_path / "ev")])
    out = capsys.readouterr().out
    assert rc == 0 and "| mine | 6/6 |" in out
    res = json.loads((tmp_path / "ev" / "sfm.json").read_text())["results"]
    assert res["mine"]["summary"]["position_error_max"] < 1e-6
    assert res["few"]["summary"]["registered"] == 0 and "alignment needs 3" in res["few"]["summary"]["error"]
    assert (tmp_path / "ev" / "sfm.md").is_file()
    rc = main(["eval", "sfm", str(tmp_path / "rec"), "--gt", str(tmp_path / "gt"), "-o", str(tmp_path / "e2"),
               "--align-threshold", "2"])
    assert rc == 2
    rc = main(["eval", "sfm", str(tmp_path / "nothing"), "--gt", str(tmp_path / "gt"), "-o", str(tmp_path / "e3")])
    assert rc == 2


def test_evaluate_sfm_reads_featlab_report(tmp_path):
    gt = _cameras(5)
    names = sorted(gt)
    K = np.eye(3)
    write_posed_model(tmp_path / "gt", names, K, np.stack([gt[n] for n in names]), (10, 10))
    out = tmp_path / "recon"
    write_posed_model(out / "sparse", names, K, np.stack([gt[n] for n in names]), (10, 10))
    report = {"statistics": {"points3D": 7, "mean_track_length": 3.0, "mean_reprojection_error_px": 0.5,
                             "images": 5}, "times_s": {"extract": 1.0, "mapping": 2.5}}
    (out / "report.json").write_text(json.dumps(report))
    s = evaluate_sfm({"x": out}, tmp_path / "gt")["results"]["x"]["summary"]
    assert s["time_s"] == 3.5 and s["points3D"] == 7 and s["registered"] == 5
