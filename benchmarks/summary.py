"""One Markdown table of every method on the held-out benchmarks written by `benchmarks/tables.sh OUT`.

usage: .venv/bin/python benchmarks/summary.py OUT [--reference rootsift]

Columns: synthetic warps moderate / hard (MMA@3, Cor-3), v_graffiti 480x640 (MMA@3), 7-Scenes 400-499 and
Herz-Jesus-P25 relative pose (AUC@5/10/20 in percent). A table that was not run is shown as '-'. With
--reference, a second table gives each method's difference to the reference method.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

HOMOGRAPHY = [("warps_moderate", "moderate"), ("warps_hard", "hard"), ("graffiti_480x640_1000", "v_graffiti 480x640")]
POSE = [("7scenes_400_499", "7-Scenes 400-499"), ("herzjesu", "Herz-Jesus-P25")]


def load(out: Path) -> dict[str, dict]:
    tables = {}
    for folder, _ in HOMOGRAPHY:
        for name in ("hpatches_results.json", "synthetic_results.json"):  # HPatches / synthetic-warp runs
            path = out / folder / name
            if path.exists():
                tables[folder] = json.loads(path.read_text())["methods"]
    for folder, _ in POSE:
        path = out / folder / "relpose_results.json"
        if path.exists():
            tables[folder] = json.loads(path.read_text())["methods"]
    return tables


def row_values(tables: dict, method: str) -> list[float | None]:
    vals: list[float | None] = []
    for folder, _ in HOMOGRAPHY:
        s = tables.get(folder, {}).get(method, {}).get("summary", {}).get("all")
        keys = [("mma", "3")] + ([("homography_accuracy", "3")] if folder.startswith("warps") else [])
        vals += [s[a][b] if s else None for a, b in keys]
    for folder, _ in POSE:
        s = tables.get(folder, {}).get(method, {}).get("summary", {}).get("all")
        vals += [100 * s["auc"][t] if s else None for t in ("5", "10", "20")]
    return vals


def header() -> list[str]:
    cols = ["method"]
    for folder, name in HOMOGRAPHY:
        cols += [f"{name} MMA@3"] + ([f"{name} Cor-3"] if folder.startswith("warps") else [])
    for _, name in POSE:
        cols += [f"{name} AUC@{t}" for t in (5, 10, 20)]
    return cols


def n_homography_columns() -> int:
    return sum(2 if folder.startswith("warps") else 1 for folder, _ in HOMOGRAPHY)


def cells(values: list[float | None], signed: bool = False) -> list[str]:
    """Homography columns as fractions with 3 digits, AUC columns in percent with 1 digit."""
    n_hom = n_homography_columns()
    out = []
    for i, v in enumerate(values):
        digits = 3 if i < n_hom else 1
        out.append("-" if v is None else (f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"))
    return out


def markdown(tables: dict, reference: str | None) -> str:
    methods = list(dict.fromkeys(m for t in tables.values() for m in t))
    cols = header()
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" + "---:|" * (len(cols) - 1)]
    rows = {m: row_values(tables, m) for m in methods}
    for m in methods:
        lines.append("| " + " | ".join([m] + cells(rows[m])) + " |")
    if reference and reference in rows:
        lines += ["", f"Difference to `{reference}` (MMA/Cor as fractions, AUC in points):", "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" + "---:|" * (len(cols) - 1)]
        ref = rows[reference]
        for m in methods:
            if m == reference:
                continue
            diff = [None if a is None or b is None else a - b for a, b in zip(rows[m], ref)]
            lines.append("| " + " | ".join([m] + cells(diff, signed=True)) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="the OUT folder of benchmarks/tables.sh")
    p.add_argument("--reference", default="rootsift", help="method to subtract in the second table")
    args = p.parse_args()
    print(markdown(load(args.out), args.reference))


if __name__ == "__main__":
    main()
