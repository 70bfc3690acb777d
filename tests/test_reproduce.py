"""scripts/reproduce_models.sh: one command per shipped model (issue 9), run end to end on a tiny data root."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from featlab.extractors import build_extractor

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reproduce_models.sh"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """The split rule's photo folders (train, sun_hays80, castle-P30, val) with two small photos each."""
    from skimage import data

    root = tmp_path_factory.mktemp("data")
    for folder, names in (("photos/bsds500/train", ("astronaut", "coffee")), ("photos/sun_hays80", ("chelsea",)),
                          ("posed/strecha/castle-P30/images", ("rocket",)), ("photos/bsds500/val", ("coffee",))):
        (root / folder).mkdir(parents=True)
        for name in names:
            cv2.imwrite(str(root / folder / f"{name}.png"), cv2.resize(getattr(data, name)(), (192, 144))[..., ::-1])
    return root


def reproduce(data_root, runs, *args):
    env = {**os.environ, "FEATLAB_DATA": str(data_root), "RUNS": str(runs), "EXPORT": "0",
           "FEATLAB": f"{sys.executable} -m featlab"}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)


def test_residual_sift_recipe_runs_end_to_end(data_root, tmp_path):
    runs = tmp_path / "runs"
    tiny = ["data.image_size=[96,128]", "handcrafted.max_keypoints=100", "data.pairs_per_step=1",
            "data.max_positives=16", "data.max_distractors=8", "val.num_pairs=1", "val.image_size=[96,128]",
            "val.max_keypoints=100", "val.fusion_steps=3", "train.progress=false", "train.max_steps=2",
            "train.val_every=2"]
    done = reproduce(data_root, runs, "residual-sift", "--", *tiny)
    assert done.returncode == 0, done.stderr[-2000:]
    run = runs / "residual-sift"
    config = (run / "config.yaml").read_text()
    assert "selector_hidden: 64" in config and str(data_root / "photos/bsds500/val") in config
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2
    # the recipe's weights load as the shipped model does, with its keypoint selector
    ext = build_extractor("residual-sift", {"weights": str(run / "best.safetensors"), "max_keypoints": 50})
    assert ext.net.selector is not None
    image = cv2.imread(str(data_root / "photos/bsds500/train/astronaut.png"))[..., ::-1].copy()
    from featlab.extractors import extract_image

    out = extract_image(ext, image, resize=None)
    assert 10 < len(out["keypoints"]) <= 50 and out["descriptors"].shape[1] == ext.descriptor_dim
    assert ext.descriptor_dim == (256 if float(ext.net.fusion[1]) > 0 else 128)


def test_unknown_model_is_one_line_and_exit_2(data_root, tmp_path):
    done = reproduce(data_root, tmp_path / "runs", "residual-sieve")
    assert done.returncode == 2 and "unknown model 'residual-sieve'" in done.stderr
    assert not (tmp_path / "runs").exists()
