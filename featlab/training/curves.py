"""Convergence curves of training runs: validation metrics against steps and training time.

Reads each run's ``metrics.jsonl`` (written by :func:`featlab.training.loop.train`): records with
``kind == "val"`` carry ``step``, ``train_time`` (wall seconds spent in training steps, validation excluded),
``cpu_time`` (CPU seconds of :mod:`featlab.timing`, validation included; runs from before it was logged lack it)
and the validation metrics (``val/...``). The time axis is CPU minutes when every run logged them, else training wall minutes.
Baselines logged by the task (``val/g_<metric>``: the handcrafted descriptor alone; ``val/sift_<metric>``: SIFT)
are drawn as dashed lines.
"""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..eval.report import _figure, markdown_table, save_figure, write_markdown


def read_validation(run_dir: str | Path) -> list[dict]:
    """The validation records of a run, sorted by step; InputError if the run has none."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise InputError(f"no metrics.jsonl in {run_dir} (is it a featlab training run folder?)")
    records = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise InputError(f"{path}:{n}: not a JSON line") from None
        if rec.get("kind") == "val":
            records.append(rec)
    if not records:
        raise InputError(f"{path} holds no validation records yet")
    by_step = {int(r["step"]): r for r in records}  # a resumed run may repeat a step: keep the last
    return [by_step[s] for s in sorted(by_step)]


def convergence(runs: dict[str, str | Path], metrics: list[str], output: str | Path) -> tuple[Path, Path]:
    """Plot ``metrics`` against step and training time (CPU or wall minutes) for each run; write ``output``.png
    and .md.

    Args:
        runs: label -> run folder.
        metrics: metric names without the ``val/`` prefix, e.g. ``["mma@3", "ms@3"]``.
    Returns:
        (png path, markdown path).
    """
    data = {label: read_validation(d) for label, d in runs.items()}
    for label, recs in data.items():
        for m in metrics:
            if not any(f"val/{m}" in r for r in recs):
                raise InputError(f"run '{label}' logged no metric val/{m}")
    cpu = all("cpu_time" in r for recs in data.values() for r in recs)
    time_key, time_label = ("cpu_time", "CPU time [min]") if cpu else ("train_time", "training wall time [min]")
    plt = _figure()
    fig, axes = plt.subplots(len(metrics), 2, figsize=(10, 3.6 * len(metrics)), squeeze=False)
    rows = []
    for i, m in enumerate(metrics):
        for j, (xkey, xlabel, scale) in enumerate((("step", "training step", 1.0), (time_key, time_label, 1 / 60))):
            ax = axes[i][j]
            for k, (label, recs) in enumerate(data.items()):
                pts = [(r[xkey] * scale, r[f"val/{m}"]) for r in recs if f"val/{m}" in r]
                line, = ax.plot(*zip(*pts), marker="o", markersize=3, label=label)
                for prefix, name, style in (("g", "handcrafted g alone", "--"), ("sift", "SIFT", ":")):
                    base = [r[f"val/{prefix}_{m}"] for r in recs if f"val/{prefix}_{m}" in r]
                    if base and k == 0:
                        ax.axhline(base[0], color="gray", linestyle=style, linewidth=1, label=name)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(f"validation {m}")
            ax.grid(alpha=0.3)
        axes[i][1].legend(fontsize=8, loc="lower right")
    for label, recs in data.items():
        for r in recs:
            rows.append([label, int(r["step"]), r.get("train_time", 0.0) / 60,
                         r["cpu_time"] / 60 if "cpu_time" in r else None,
                         *[r.get(f"val/{m}", float("nan")) for m in metrics]])
    fig.suptitle("convergence: " + ", ".join(runs))
    fig.tight_layout()
    output = Path(output)
    png = save_figure(fig, output.with_suffix(".png"))
    table = markdown_table(["run", "step", "train wall min", "CPU min", *metrics], rows,
                           digits=[0, 0, 1, 1, *[3] * len(metrics)])
    md = write_markdown(output.with_suffix(".md"), "# Convergence\n\n" + table)
    return png, md
