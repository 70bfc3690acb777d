"""Training: the generic loop (reproducible resume, checkpoints, logs) and the residual task end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from featlab.cli import main
from featlab.errors import ConfigError, InputError
from featlab.training import loop
from featlab.training.loop import TrainingTask, read_metrics, train

# ------------------------------------------------------------------------------------------------ toy task


class ToyTask(TrainingTask):
    """Regression with dropout (uses the global RNG, so resuming must restore it) and step-indexed data."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        g = torch.Generator().manual_seed(99)
        self.val_x = torch.randn(32, 4, generator=g)

    def batches(self, start_step):
        step = start_step
        while True:
            g = torch.Generator().manual_seed(step)
            x = torch.randn(16, 4, generator=g)
            yield {"x": x, "y": x.sum(1, keepdim=True)}
            step += 1

    def training_step(self, batch, step):
        loss = (self.model(batch["x"]) - batch["y"]).pow(2).mean()
        return loss, {"abs": loss.detach().sqrt()}

    def validate(self):
        return {"neg_mse": -(self.model(self.val_x) - self.val_x.sum(1, keepdim=True)).pow(2).mean()}

    def save_weights(self, path, info):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in self.model.state_dict().items()}, str(path))
        return path


TOY = {"max_steps": 6, "checkpoint_every": 3, "val_every": 2, "log_every": 1, "best_metric": "neg_mse",
       "lr": 1e-2, "progress": False, "dtype": "float32", "device": "cpu"}


def _params(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


class TestLoop:
    def test_resume_gives_the_same_steps_as_an_uninterrupted_run(self, tmp_path):
        a = ToyTask()
        train(a, TOY, tmp_path / "a")
        b = ToyTask()
        train(b, {**TOY, "max_steps": 3}, tmp_path / "b")  # "interrupted" after the checkpoint at step 3
        b2 = ToyTask()  # a fresh process: new model, global RNG elsewhere
        torch.manual_seed(12345)
        summary = train(b2, TOY, tmp_path / "b", resume=True)
        assert summary["step"] == 6
        assert torch.equal(_params(a.model), _params(b2.model))
        la = [r["loss"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "train"]
        lb = [r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if r["kind"] == "train"]
        assert la == lb and len(la) == 6  # resumed log continues without duplicates

    def test_outputs_and_loss_decreases(self, tmp_path):
        task = ToyTask()
        summary = train(task, {**TOY, "max_steps": 40, "val_every": 20}, tmp_path)
        records = read_metrics(tmp_path / "metrics.jsonl")
        train_losses = [r["loss"] for r in records if r["kind"] == "train"]
        assert np.mean(train_losses[-5:]) < np.mean(train_losses[:5])
        vals = [r for r in records if r["kind"] == "val"]
        assert [r["step"] for r in vals] == [0, 20, 40] and all("time" in r for r in records)
        assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "final.safetensors").is_file()
        assert (tmp_path / "checkpoints" / "last.pt").is_file() and any((tmp_path / "tensorboard").iterdir())
        assert summary["best_step"] in (0, 20, 40)
        assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # atomic writes leave no temporary files

    def test_errors(self, tmp_path):
        with pytest.raises(ConfigError, match="unknown config key"):
            train(ToyTask(), {**TOY, "max_step": 3}, tmp_path / "x")
        with pytest.raises(InputError, match="no checkpoint"):
            train(ToyTask(), TOY, tmp_path / "y", resume=True)
        train(ToyTask(), {**TOY, "max_steps": 1}, tmp_path / "z")
        with pytest.raises(InputError, match="--resume"):
            train(ToyTask(), TOY, tmp_path / "z")
        with pytest.raises(ConfigError, match="best_metric"):
            train(ToyTask(), {**TOY, "best_metric": "mma@3"}, tmp_path / "w")

    def test_device_dtype_resolution(self):
        dev, dtype = loop.resolve_device_dtype("cpu", "auto")
        assert dev.type == "cpu" and dtype in ("float32", "bfloat16")
        assert loop.resolve_device_dtype("cpu", "float32")[1] == "float32"
        with pytest.raises(ConfigError):
            loop.resolve_device_dtype("cpu", "float16")


# ------------------------------------------------------------------------------------------- residual task
TINY = ["data.image_size=[64,96]", "handcrafted.max_keypoints=64", "data.batch_size=2", "data.num_workers=0",
        "val.num_pairs=2", "train.progress=false", "train.log_every=1", "train.device=cpu"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    import cv2
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea"):
        img = getattr(data, name)()
        cv2.imwrite(str(folder / f"{name}.png"), cv2.resize(img, (160, 120))[..., ::-1])
    return folder


def _tiny_conf(photos, **over):
    from featlab.conf import parse_overrides

    conf = parse_overrides(TINY)
    conf["data"]["photos"] = [str(photos)]
    conf["val"]["photos"] = str(photos)
    for k, v in over.items():
        conf.setdefault(k, {}).update(v)
    return conf


class TestResidualTask:
    def test_dataset_items_are_deterministic_and_consistent(self, photos):
        from featlab.geometry.homography import warp_points_homography
        from featlab.training.residual import ResidualTask

        task = ResidualTask(_tiny_conf(photos, val={"photos": None}))
        a, b = task.dataset[5], task.dataset[5]
        for k in a:
            np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
        assert a["image0"].shape == (3, 64, 96) and a["keypoints0"].shape == (64, 2)
        assert a["g_descriptors0"].shape == (64, 128) and a["matches0"].dtype == np.int64
        m = a["matches0"]
        assert (m >= 0).sum() > 0 and a["keypoint_masks1"][m[m >= 0]].all()
        warped = warp_points_homography(a["keypoints0"][m >= 0].astype(np.float64), a["H_0to1"])
        assert np.linalg.norm(warped - a["keypoints1"][m[m >= 0]], axis=1).max() <= 3.0
        assert not np.array_equal(task.dataset[6]["H_0to1"], a["H_0to1"])

    def test_few_steps_on_one_batch_lower_the_loss(self, photos):
        from featlab.training.residual import ResidualTask

        torch.manual_seed(0)
        task = ResidualTask(_tiny_conf(photos, val={"photos": None}))
        batch = next(task.batches(0))
        opt = torch.optim.Adam(task.model.parameters(), lr=1e-3)
        losses = []
        for step in range(8):
            opt.zero_grad()
            loss, metrics = task.training_step(batch, 0)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0] - 0.05, losses
        # g's descriptors arrive as constants from the data pipeline
        assert not batch["g_descriptors0"].requires_grad and batch["g_descriptors0"].grad is None

    def test_cli_end_to_end_resume_and_export(self, photos, tmp_path, monkeypatch, capsys):
        import featlab.training.residual as residual
        from featlab.extractors import build_extractor

        monkeypatch.setattr(residual, "WEIGHTS_DIR", tmp_path / "weights")
        run = tmp_path / "run"
        args = ["train", "residual", "--photos", str(photos), "--val-photos", str(photos), "-o", str(run), *TINY,
                "train.max_steps=3", "train.val_every=2"]
        assert main(args + ["--export", "residual-sift"]) == 0
        assert (tmp_path / "weights" / "residual-sift.safetensors").is_file()
        assert (tmp_path / "weights" / "residual-sift.json").is_file()
        for name in ("config.yaml", "metrics.jsonl", "best.safetensors", "best.json", "final.safetensors"):
            assert (run / name).is_file(), name
        records = read_metrics(run / "metrics.jsonl")
        assert [r["step"] for r in records if r["kind"] == "val"] == [0, 2, 3]
        assert {"val/mma@3", "val/ms@3", "val/g_mma@3"} <= set(records[0])
        assert all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
        side = json.loads((run / "best.json").read_text())
        assert side["handcrafted"]["name"] == "sift" and side["model"]["fusion"] == "concat"
        # the trained weights run as an extractor
        ext = build_extractor("residual-sift", {"weights": str(run / "best.safetensors"), "max_keypoints": 30})
        pred = ext({"image": torch.rand(1, 3, 64, 80)})
        assert pred["descriptors"].shape[-1] == 256
        # resume from the saved config with a longer schedule
        assert main(["train", "residual", "-o", str(run), "--resume", "train.max_steps=4"]) == 0
        assert max(r["step"] for r in read_metrics(run / "metrics.jsonl")) == 4
        capsys.readouterr()
        # a second fresh run into the same folder is refused
        assert main(args) == 2
        assert "--resume" in capsys.readouterr().err

    def test_cli_config_errors(self, photos, tmp_path, capsys):
        base = ["train", "residual", "--photos", str(photos), "--val-photos", str(photos), *TINY]
        assert main(base + ["-o", str(tmp_path / "a"), "model.fusoin=sum"]) == 2
        assert "unknown config key 'model.fusoin'" in capsys.readouterr().err
        assert main(base + ["-o", str(tmp_path / "b"), "--export", "residual-rootsift"]) == 2
        assert "handcrafted" in capsys.readouterr().err
        assert main(["train", "residual", "-o", str(tmp_path / "c"), *TINY]) == 2
        assert "--photos" in capsys.readouterr().err
        assert main(["train", "residual", "-o", str(tmp_path / "d"), "--resume"]) == 2
        assert "cannot resume" in capsys.readouterr().err
        assert not (tmp_path / "a").exists()


class TestTimeBudget:
    def test_max_minutes_stops_with_checkpoint_and_resume_continues(self, tmp_path):
        summary = train(ToyTask(), {**TOY, "max_steps": 1000, "max_minutes": 0.0}, tmp_path)
        assert summary["step"] == 1  # the budget is checked after each step
        vals = [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl") if r["kind"] == "val"]
        assert vals == [0, 1]  # validated at the stop
        state = loop.load_checkpoint(loop.checkpoint_path(tmp_path))
        assert state["step"] == 1
        summary = train(ToyTask(), {**TOY, "max_steps": 4}, tmp_path, resume=True)
        assert summary["step"] == 4


def test_cli_train_with_a_missing_init_file_writes_nothing(photos, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "residual", "--photos", str(photos), "--val-photos", str(photos), "-o", str(out), *TINY,
               f"init.h_from={tmp_path / 'missing.safetensors'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not found" in err[0]
    assert not out.exists()
