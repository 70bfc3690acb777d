"""`featlab curves`: convergence plots from training runs' metrics.jsonl."""
import json

from featlab.cli import main
from featlab.training.curves import read_validation


def _run(folder, values, base=0.5, cpu=False):
    folder.mkdir()
    lines = [{"kind": "train", "step": 10, "loss": 0.3}]
    for step, v in values:
        lines.append({"kind": "val", "step": step, "train_time": step * 4.0, "val/mma@3": v, "val/ms@3": v / 2,
                      "val/g_mma@3": base, **({"cpu_time": step * 3.0} if cpu else {})})
    (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return folder


def test_curves_two_runs(tmp_path, capsys):
    a = _run(tmp_path / "a", [(0, 0.5), (100, 0.6), (200, 0.7)])
    b = _run(tmp_path / "b", [(0, 0.5), (100, 0.52)])
    out = tmp_path / "conv"
    assert main(["curves", f"residual={a}", f"nofusion={b}", "-o", str(out)]) == 0
    assert (tmp_path / "conv.png").stat().st_size > 5000
    md = (tmp_path / "conv.md").read_text()
    assert "| residual | 200 | 13.3 | - | 0.700 | 0.350 |" in md and "| nofusion | 100 |" in md


def test_curves_use_cpu_minutes_when_every_run_logged_them(tmp_path, monkeypatch):
    from featlab.training import curves

    labels = []
    monkeypatch.setattr(curves, "save_figure", lambda fig, path: labels.append(
        [ax.get_xlabel() for ax in fig.axes]) or path)
    a = _run(tmp_path / "a", [(0, 0.5), (200, 0.7)], cpu=True)
    curves.convergence({"a": a}, ["mma@3"], tmp_path / "c1")
    assert labels[-1] == ["training step", "CPU time [min]"]
    assert "| a | 200 | 13.3 | 10.0 | 0.700 |" in (tmp_path / "c1.md").read_text()
    b = _run(tmp_path / "b", [(0, 0.5), (100, 0.6)])  # no cpu_time: wall minutes for both
    curves.convergence({"a": a, "b": b}, ["mma@3"], tmp_path / "c2")
    assert labels[-1] == ["training step", "training wall time [min]"]


def test_resumed_run_keeps_last_record_per_step(tmp_path):
    a = _run(tmp_path / "a", [(0, 0.5), (100, 0.6), (100, 0.65)])
    recs = read_validation(a)
    assert [r["step"] for r in recs] == [0, 100] and recs[1]["val/mma@3"] == 0.65


def test_curves_errors(tmp_path, capsys):
    assert main(["curves", str(tmp_path / "missing"), "-o", str(tmp_path / "c")]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err
    a = _run(tmp_path / "a", [(0, 0.5)])
    assert main(["curves", str(a), "--metrics", "auc@10", "-o", str(tmp_path / "c")]) == 2
    assert "val/auc@10" in capsys.readouterr().err
    assert main(["curves", f"x={a}", f"x={a}", "-o", str(tmp_path / "c")]) == 2
