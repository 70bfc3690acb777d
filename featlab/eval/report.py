"""Benchmark outputs: results JSON, Markdown tables and matplotlib (Agg) plots, all written atomically."""
from __future__ import annotations

import json
import math
import platform
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..conf import to_container
from ..io.atomic import atomic_path, atomic_write_text


def to_jsonable(obj: Any) -> Any:
    """numpy / Path / OmegaConf / non-finite floats -> plain JSON values (inf and NaN become strings)."""
    obj = to_container(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return v
    if isinstance(obj, Path):
        return str(obj)
    if obj is None or isinstance(obj, (int, str)):
        return obj
    return str(obj)


def args_to_dict(args) -> dict:
    """The parsed command line as a JSON-ready dict (without the handler function)."""
    return to_jsonable({k: v for k, v in vars(args).items() if not callable(v)})


def environment() -> dict:
    """Library versions and thread count, stored with every result."""
    import cv2
    import torch

    return {"python": sys.version.split()[0], "platform": platform.platform(), "torch": torch.__version__,
            "opencv": cv2.__version__, "numpy": np.__version__, "torch_threads": torch.get_num_threads()}


def write_json(path: str | Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(to_jsonable(data), indent=2) + "\n")


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return str(value)
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]], digits: int | Sequence[int] = 3) -> str:
    """A GitHub-flavoured Markdown table; floats printed with ``digits`` decimals (one value, or one per column)."""
    per_column = [digits] * len(header) if isinstance(digits, int) else list(digits)
    if len(per_column) != len(header):
        raise ValueError(f"digits has {len(per_column)} entries for {len(header)} columns")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(v, d) for v, d in zip(row, per_column)) + " |")
    return "\n".join(lines)


def summary_groups(result: dict):
    """Yield ``(group, entries)`` for each frame-gap group of a pair benchmark (``gap_<d>``, then ``all``), where
    ``entries`` lists ``(method name, method result, the group's summary)`` of the methods with pairs in it;
    groups without any are skipped."""
    for group in [f"gap_{g}" for g in result["gaps"]] + ["all"]:
        entries = [(name, res, res["summary"][group]) for name, res in result["methods"].items()
                   if (res["summary"].get(group) or {}).get("num_pairs")]
        if entries:
            yield group, entries


def write_markdown(path: str | Path, text: str) -> Path:
    return atomic_write_text(path, text.rstrip() + "\n")


def _figure():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    plt = _figure()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)
    return Path(path)


def plot_curves(path: str | Path, panels: Sequence[dict], xlabel: str, ylabel: str, suptitle: str,
                ylim: tuple[float, float] | None = (0.0, 1.0), markers: bool = True) -> Path:
    """One row of line plots.

    Args:
        panels: ``[{"title": str, "x": (T,), "curves": {label: (T,)}}]``, one subplot each.
    """
    plt = _figure()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        for label, y in panel["curves"].items():
            ax.plot(panel["x"], y, marker="o" if markers else None, markersize=3, linewidth=1.5, label=label)
        ax.set_title(panel["title"])
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ylim is not None:
            ax.set_ylim(*ylim)
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.suptitle(suptitle, y=1.02)
    return save_figure(fig, path)
