"""The report of a reconstruction: ``report.json``, ``report.md`` and ``model.png`` (the sparse model and its
cameras seen from above)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..eval.report import _figure, fmt, markdown_table, save_figure, write_json, write_markdown


def write_report(out_dir, report: dict) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``.

    ``report`` holds ``command``, ``statistics`` (:func:`featlab.sfm.mapping.model_statistics`), ``times_s``
    ({stage: wall-clock seconds}), optional ``cpu_s`` ({stage: CPU seconds}), ``settings`` and optional
    ``unregistered`` (image names) and ``note``.
    """
    out_dir = Path(out_dir)
    s = report["statistics"]
    times = report["times_s"]
    lines = [f"# Reconstruction: {report.get('title', out_dir.name)}", ""]
    if report.get("command"):
        lines += ["```bash", report["command"], "```", ""]
    rows = [["registered images", f"{s['registered']} / {s['images']}"], ["3D points", s["points3D"]],
            ["observations", s["observations"]], ["mean track length", fmt(s["mean_track_length"], 2)],
            ["mean reprojection error (px)", fmt(s["mean_reprojection_error_px"], 3)],
            ["models found (largest kept)", report.get("num_models", "-")]]
    lines += [markdown_table(["", "value"], rows), "", "Time per stage (s; CPU = user + system of the process and "
              "its children, all threads):", ""]
    table = [["wall clock", *times.values(), sum(times.values())]]
    if report.get("cpu_s"):
        cpu = report["cpu_s"]
        table.append(["CPU", *(cpu.get(k) for k in times), sum(cpu.values())])
    lines += [markdown_table([""] + list(times) + ["total"], table, digits=1), ""]
    if report.get("unregistered"):
        lines += [f"Not registered: {', '.join(report['unregistered'])}", ""]
    if s.get("cameras"):
        cams = [[c["camera_id"], c["model"], f"{c['width']}x{c['height']}", ", ".join(f"{v:.4g}" for v in c["params"])]
                for c in s["cameras"]]
        lines += ["Cameras (refined):", "", markdown_table(["id", "model", "size", "params"], cams), ""]
    if report.get("settings"):
        lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in report["settings"].items()), ""]
    if report.get("note"):
        lines += [report["note"], ""]
    write_json(out_dir / "report.json", report)
    return out_dir / "report.json", write_markdown(out_dir / "report.md", "\n".join(lines))


def plot_model(path, rec, title: str = "", max_points: int = 50000) -> Path | None:
    """A top view of a sparse model: points in their colours, each camera as a triangle of its viewing direction.

    The view looks along the direction in which the camera centres spread least (the normal of the plane that
    best fits them: the ground for photos taken around an object at one height). Returns None for an empty model.
    """
    if rec is None or rec.num_reg_images() == 0:
        return None
    plt = _figure()
    centres, dirs = [], []
    for iid in rec.reg_image_ids():
        img = rec.image(iid)
        centres.append(np.asarray(img.projection_center()))
        dirs.append(np.asarray(img.viewing_direction()))
    centres, dirs = np.array(centres), np.array(dirs)
    pts = np.array([p.xyz for p in rec.points3D.values()]).reshape(-1, 3)
    cols = np.array([p.color for p in rec.points3D.values()]).reshape(-1, 3) / 255.0
    if len(pts) > max_points:
        keep = np.random.default_rng(0).choice(len(pts), max_points, replace=False)
        pts, cols = pts[keep], cols[keep]
    # axes: the two principal directions of the camera centres (plus points when there are few cameras)
    ref = centres if len(centres) >= 3 else np.concatenate([centres, pts])
    mean = ref.mean(0)
    _, _, vt = np.linalg.svd(ref - mean, full_matrices=False)
    axes = vt[:2] if len(vt) >= 2 else np.eye(3)[:2]
    p2, c2, d2 = (pts - mean) @ axes.T, (centres - mean) @ axes.T, dirs @ axes.T
    if len(pts):  # keep the plot on the scene: drop the farthest 1% of points
        r = np.linalg.norm(p2, axis=1)
        near = r <= np.quantile(r, 0.99)
        p2, cols = p2[near], cols[near]
    fig, ax = plt.subplots(figsize=(7, 7))
    ax.scatter(p2[:, 0], p2[:, 1], s=float(np.clip(5000 / max(len(p2), 1), 0.3, 4.0)), c=cols, linewidths=0)
    span = max(np.ptp(np.concatenate([p2, c2]), axis=0).max(), 1e-9)
    size = 0.03 * span
    for c, d in zip(c2, d2):
        n = np.linalg.norm(d)
        d = d / n if n > 1e-9 else np.array([0.0, 1.0])
        side = np.array([-d[1], d[0]])
        tri = np.array([c, c + size * (2 * d + side), c + size * (2 * d - side), c])
        ax.plot(tri[:, 0], tri[:, 1], "r-", linewidth=0.8)
    ax.set_aspect("equal")
    ax.set_title(title or f"{rec.num_reg_images()} cameras, {rec.num_points3D()} points (top view)")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)
