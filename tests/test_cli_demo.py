"""`featlab demo` end to end on the bundled pair, and its error paths."""
import json

import pytest

from featlab.cli import main


def test_demo_bundled_pair(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", "sift", "-o", str(out)]) == 0
    assert (out / "matches.png").stat().st_size > 10_000
    metrics = json.loads((out / "metrics.json").read_text())
    assert "synthetic warp" in metrics["data"]
    # SIFT on this mild synthetic warp: most mutual matches are correct and the homography is recovered
    assert metrics["mutual_nn_matches"] > 50
    assert metrics["MMA@3px"] > 0.5
    assert metrics["H_corner_error_px"] != "failed" and metrics["H_corner_error_px"] < 3
    assert "match picture" in capsys.readouterr().out


def test_demo_user_pair_without_ground_truth(tmp_path):
    from featlab.commands.demo import ASSETS

    out = tmp_path / "demo"
    assert main(["demo", "--image0", str(ASSETS / "image0.jpg"), "--image1", str(ASSETS / "image1.jpg"),
                 "--model", "orb", "-o", str(out), "--homography", str(ASSETS / "H_0to1.txt")]) == 0
    assert json.loads((out / "metrics.json").read_text())["model"] == "orb"


@pytest.mark.parametrize("args, message", [
    (["--image0", "missing.jpg", "--image1", "missing.jpg"], "image not found"),  # one alone: tests/test_cli_failures
    (["--model", "nope"], "unknown extractor"),
])
def test_demo_errors(tmp_path, capsys, args, message):
    assert main(["demo", "-o", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_demo_bad_homography_file(tmp_path, capsys):
    bad = tmp_path / "H.txt"
    bad.write_text("1 2\n3 4\n")
    assert main(["demo", "-o", str(tmp_path / "o"), "--homography", str(bad)]) == 2
    assert "3x3" in capsys.readouterr().err


def test_demo_default_model_is_the_shipped_residual_model(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "-o", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["model"] == "residual-sift"
    assert metrics["mutual_nn_matches"] > 50 and metrics["MMA@3px"] > 0.5
    assert metrics["H_corner_error_px"] != "failed" and metrics["H_corner_error_px"] < 3
