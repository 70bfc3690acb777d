"""Caches and resumes trust content, not names: eval feature caches and `extract` resume records are keyed on the
SHA-256 of the weights files and the full resolved extractor config."""
from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from featlab.cli import main
from featlab.eval.cache import FeatureCache, extractor_settings
from featlab.extractors import build_extractor
from featlab.extractors.base import extractor_identity
from featlab.extractors.residual import ResidualDescriptorNet, save_residual_weights
from featlab.io import h5 as fh5
from featlab.io.weights import file_sha256

SMALL = {"backbone": "small", "batchnorm": True}


def export(path, seed: int):
    """Write residual-sift weights made from ``seed`` to ``path`` (as a re-export under one name would)."""
    torch.manual_seed(seed)
    return save_residual_weights(ResidualDescriptorNet(SMALL), path, {"name": "sift", "conf": {}})


@pytest.fixture
def weights(tmp_path):
    return export(tmp_path / "weights" / "mine.safetensors", seed=0)


def test_file_sha256_follows_content(tmp_path, monkeypatch):
    import hashlib

    import featlab.io.weights as weights_io

    path = tmp_path / "w.bin"
    path.write_bytes(b"a" * 100)
    first = file_sha256(path)
    assert first == hashlib.sha256(b"a" * 100).hexdigest()
    path.write_bytes(b"b" * 100)  # same size, likely the same timestamp tick: a fresh file is always hashed
    assert file_sha256(path) == hashlib.sha256(b"b" * 100).hexdigest()

    calls, real = [], hashlib.sha256
    monkeypatch.setattr(weights_io.hashlib, "sha256", lambda: calls.append(1) or real())
    monkeypatch.setattr(weights_io, "_SETTLED_NS", -10**18)  # every file counts as settled: memoised
    assert file_sha256(path) == file_sha256(path) and len(calls) == 1
    st = path.stat()
    path.write_bytes(b"c" * 100)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: the new ctime still tells
    assert file_sha256(path) == real(b"c" * 100).hexdigest() and len(calls) == 2


def test_identity_holds_weights_hash_and_inner_extractor_config(weights):
    ident = extractor_identity(build_extractor("residual-sift-v1", {"weights": str(weights), "max_keypoints": 77}))
    assert ident["weights_sha256"] == {"mine.safetensors": file_sha256(weights),
                                       "mine.json": file_sha256(weights.with_suffix(".json"))}
    assert ident["conf"]["max_keypoints"] == 77
    assert ident["parts"]["g"]["class"] == "SIFT" and ident["parts"]["g"]["conf"]["max_keypoints"] == 77
    assert "weights_sha256" not in extractor_identity(build_extractor("sift"))


def test_eval_cache_misses_when_weights_are_reexported_under_the_same_name(weights, tmp_path):
    image = skimage.data.astronaut()[::4, ::4]
    conf = {"weights": str(weights), "max_keypoints": 50}

    def cache():
        return FeatureCache(tmp_path / "cache", "residual-sift-v1",
                            {"extractor": extractor_settings(build_extractor("residual-sift-v1", conf))})

    feats = {"descriptors": np.ones((3, 4), np.float32)}
    first = cache()
    first.get_or_compute("img", image, lambda _: feats)
    assert first.misses == 1 and cache().has("img", image)
    export(weights, seed=1)  # other weights, same name
    second = cache()
    assert second.dir != first.dir and not second.has("img", image)
    export(weights, seed=0)  # the first weights again (new file, same bytes): the cache is valid again
    assert cache().dir == first.dir and cache().has("img", image)


# ------------------------------------------------------------------------------------------------ extract resume
@pytest.fixture
def images(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    photo = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)[::2, ::2]
    for i, (y, x) in enumerate([(0, 0), (20, 30), (40, 10)]):
        cv2.imwrite(str(root / f"{i}.png"), photo[y:y + 160, x:x + 200])
    return root


def interrupted_extract(monkeypatch, capsys, *argv):
    """Run `featlab extract` and interrupt it after its first image: leaves ``<output>.partial``."""
    import featlab.extractors as extractors

    real, calls = extractors.extract_image, []

    def flaky(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(extractors, "extract_image", flaky)
        assert main([str(a) for a in argv]) == 130
    capsys.readouterr()


def refused(capsys, *argv) -> str:
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("featlab: error:"), err
    return err


def test_extract_resume_refuses_other_weights_model_or_config(images, weights, tmp_path, monkeypatch, capsys):
    feats = tmp_path / "f.h5"
    cmd = ["extract", images, "-o", feats, "--model", "residual-sift-v1", "--conf", f"weights={weights}",
           "--max-keypoints", "64"]
    interrupted_extract(monkeypatch, capsys, *cmd)
    partial = fh5.partial_path(feats)
    before = partial.read_bytes()

    export(weights, seed=1)  # other weights under the same name
    assert "weights_sha256.mine.safetensors" in refused(capsys, *cmd)
    export(weights, seed=0)
    assert "max_keypoints" in refused(capsys, *cmd[:-1], "65")  # another config
    assert "model: residual-sift-v1 != sift" in refused(capsys, "extract", images, "-o", feats, "--model", "sift",
                                                    "--max-keypoints", "64")  # another model
    assert partial.read_bytes() == before and not feats.exists()  # left exactly as it was

    # the original weights (re-exported: same bytes) resume it
    assert main([str(a) for a in cmd]) == 0
    assert "3 images (2 new, 1 already present)" in capsys.readouterr().out
    assert not partial.exists()
    # a complete output made with other weights is refused too
    export(weights, seed=1)
    assert "another configuration" in refused(capsys, *cmd)
