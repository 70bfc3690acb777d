"""Training: the generic loop (reproducible resume, checkpoints, logs) and the residual task end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from toytask import RegressionTask

from featlab.cli import main
from featlab.errors import ConfigError, InputError
from featlab.training import loop
from featlab.training.loop import read_metrics, train

# ------------------------------------------------------------------------------------------------ toy task


class ToyTask(RegressionTask):
    """Regression with dropout (uses the global RNG, so resuming must restore it) and step-indexed data."""

    def __init__(self):
        torch.manual_seed(0)
        super().__init__(dropout=0.2)

    def batches(self, start_step):
        step = start_step
        while True:
            g = torch.Generator().manual_seed(step)
            x = torch.randn(16, 4, generator=g)
            yield {"x": x, "y": x.sum(1, keepdim=True)}
            step += 1


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
        # best_step is the validation with the highest best_metric, and best.safetensors holds its weights
        best = max(vals, key=lambda r: r["val/neg_mse"])
        assert summary["best_step"] == best["step"] and summary["best_value"] == best["val/neg_mse"]
        assert summary["best_value"] > vals[0]["val/neg_mse"]  # training improved on the untrained model
        from safetensors.torch import load_file

        task.model.load_state_dict(load_file(str(tmp_path / "best.safetensors")))
        task.model.eval()
        with torch.no_grad():
            assert task.validate()["neg_mse"].item() == pytest.approx(summary["best_value"], rel=1e-6)
        assert not list((tmp_path / "checkpoints").glob(".*tmp*"))  # atomic writes leave no temporary files

    def test_best_mode_min_selects_the_lowest_error(self, tmp_path):
        runs = {}
        for mode, metric in (("max", "neg_mse"), ("min", "mse")):
            runs[mode] = train(ToyTask(), {**TOY, "max_steps": 20, "val_every": 4, "best_metric": metric,
                                            "best_mode": mode}, tmp_path / mode)
        vals = [r for r in read_metrics(tmp_path / "min" / "metrics.jsonl") if r["kind"] == "val"]
        lowest = min(vals, key=lambda r: r["val/mse"])
        assert runs["min"]["best_step"] == lowest["step"] == runs["max"]["best_step"]
        assert runs["min"]["best_value"] == lowest["val/mse"] == -runs["max"]["best_value"]
        assert lowest["val/mse"] < vals[0]["val/mse"]  # so min mode did not keep the untrained model
        with pytest.raises(ConfigError, match="best_mode"):
            train(ToyTask(), {**TOY, "best_mode": "lowest"}, tmp_path / "bad")

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

    def test_training_warps_are_not_the_benchmark_or_validation_warps(self, photos):
        # same seed, same photo, same warp settings: the role ("train", "select", "benchmark") separates the streams
        from featlab.conf import to_container
        from featlab.datasets.synthetic import SyntheticHomographyPairs
        from featlab.training.residual import HomographyPairStream, ResidualTask

        task = ResidualTask(_tiny_conf(photos, train={"seed": 7}))
        c = task.conf
        one = [task.dataset.photos[0]]
        stream = HomographyPairStream(one, c, seed=7)
        bench = SyntheticHomographyPairs(one[0].parent, {
            "seed": 7, "max_images": 1, "pairs_per_image": 3, "resize": list(c.data.image_size),
            "homography": to_container(c.data.homography), "photometric": to_container(c.data.photometric)})
        assert bench.paths == one
        for k in range(3):
            assert not np.allclose(stream[k]["H_0to1"], bench[k]["H_0to1"]), k
        # the validation pairs (seed val.seed, centre crops) are not the benchmark's pairs with that seed either
        bench_val = SyntheticHomographyPairs(photos, {
            "seed": int(c.val.seed), "max_images": int(c.val.num_pairs), "crop": "center",
            "resize": list(c.data.image_size), "homography": to_container(c.data.homography),
            "photometric": to_container(c.data.photometric)})
        assert len(task.val_pairs) == len(bench_val) == 2
        for pair, item in zip(task.val_pairs, bench_val):
            assert not np.allclose(pair["H_0to1"], item["H_0to1"])

    def test_exact_resume_reproduces_the_uninterrupted_weights(self, photos, tmp_path):
        from featlab.training.residual import ResidualTask

        conf = _tiny_conf(photos, val={"photos": None}, train={"dtype": "float32", "checkpoint_every": 2,
                                                                 "max_steps": 4, "val_every": 2})

        def task():
            torch.manual_seed(0)
            return ResidualTask(conf)

        a = task()
        train(a, conf["train"], tmp_path / "a")
        b = task()
        train(b, {**conf["train"], "max_steps": 2}, tmp_path / "b")  # "interrupted" after the checkpoint at step 2
        b2 = ResidualTask(conf)  # a fresh process: other initial weights, global RNG elsewhere
        torch.manual_seed(12345)
        np.random.seed(54321)
        assert not torch.equal(_params(b2.model), _params(b.model))
        assert train(b2, conf["train"], tmp_path / "b", resume=True)["step"] == 4
        assert torch.equal(_params(a.model), _params(b2.model))
        assert not torch.equal(_params(a.model), _params(b.model))  # the resumed steps did change the weights
        la = [r["loss"] for r in read_metrics(tmp_path / "a" / "metrics.jsonl") if r["kind"] == "train"]
        lb = [r["loss"] for r in read_metrics(tmp_path / "b" / "metrics.jsonl") if r["kind"] == "train"]
        assert la == lb and len(la) == 4

    def test_cli_resume_refuses_recipe_changes(self, photos, tmp_path, capsys):
        run = tmp_path / "run"
        args = ["train", "residual", "--photos", str(photos), "--val-photos", str(photos), "-o", str(run), *TINY,
                "train.max_steps=1", "val.num_pairs=1"]
        assert main(args) == 0
        config = (run / "config.yaml").read_text()
        checkpoint = (run / "checkpoints" / "last.pt").read_bytes()
        capsys.readouterr()
        resume = ["train", "residual", "-o", str(run), "--resume"]
        for extra, key in [(["model.fusion=sum"], "model.fusion"), (["train.lr=0.1"], "train.lr"),
                           (["--photos", str(tmp_path)], "data.photos"), (["val.seed=3"], "val.seed"),
                           (["train.max_steps=2", "data.allow_eval_data=true"], "data.allow_eval_data")]:
            assert main(resume + extra) == 2, extra
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and f"--resume cannot change {key} " in err[0] and "train.max_steps" in err[0]
        # nothing moved: same config, same checkpoint, no record
        assert (run / "config.yaml").read_text() == config
        assert (run / "checkpoints" / "last.pt").read_bytes() == checkpoint
        assert not (run / "resume_overrides.jsonl").exists()
        # an override equal to the saved value changes nothing and is accepted
        assert main(resume + ["model.fusion=concat", "train.progress=false"]) == 0
        assert not (run / "resume_overrides.jsonl").exists()

    def test_cli_end_to_end_resume_and_export(self, photos, tmp_path, monkeypatch, capsys):
        from featlab.extractors import build_extractor
        from featlab.io import weights as weights_io

        monkeypatch.setattr(weights_io, "SHIPPED_WEIGHTS_DIR", tmp_path / "weights")
        run = tmp_path / "run"
        args = ["train", "residual", "--photos", str(photos), "--val-photos", str(photos), "-o", str(run), *TINY,
                "train.max_steps=3", "train.val_every=2"]
        assert main(args + ["--export", "residual-sift-v1"]) == 0
        assert (tmp_path / "weights" / "residual-sift-v1.safetensors").is_file()
        assert (tmp_path / "weights" / "residual-sift-v1.json").is_file()
        for name in ("config.yaml", "metrics.jsonl", "best.safetensors", "best.json", "final.safetensors"):
            assert (run / name).is_file(), name
        records = read_metrics(run / "metrics.jsonl")
        assert [r["step"] for r in records if r["kind"] == "val"] == [0, 2, 3]
        assert {"val/mma@3", "val/ms@3", "val/g_mma@3"} <= set(records[0])
        assert all(np.isfinite(r["loss"]) for r in records if r["kind"] == "train")
        side = json.loads((run / "best.json").read_text())
        assert side["handcrafted"]["name"] == "sift" and side["model"]["fusion"] == "concat"
        # the trained weights run as an extractor
        ext = build_extractor("residual-sift-v1", {"weights": str(run / "best.safetensors"), "max_keypoints": 30})
        pred = ext({"image": torch.rand(1, 3, 64, 80)})
        assert pred["descriptors"].shape[-1] == 256
        # resume from the saved config with a longer schedule: config.yaml is kept, the change is recorded beside it
        config = (run / "config.yaml").read_text()
        assert main(["train", "residual", "-o", str(run), "--resume", "train.max_steps=4"]) == 0
        assert max(r["step"] for r in read_metrics(run / "metrics.jsonl")) == 4
        assert (run / "config.yaml").read_text() == config
        records = [json.loads(line) for line in (run / "resume_overrides.jsonl").read_text().splitlines()]
        assert len(records) == 1 and records[0]["changes"] == {"train.max_steps": {"from": 3, "to": 4}}
        # a later resume replays the recorded budget (and records nothing new)
        capsys.readouterr()
        assert main(["train", "residual", "-o", str(run), "--resume"]) == 0
        assert json.loads(capsys.readouterr().out.splitlines()[0])["step"] == 4
        assert len((run / "resume_overrides.jsonl").read_text().splitlines()) == 1
        capsys.readouterr()
        # a second fresh run into the same folder is refused
        assert main(args) == 2
        assert "--resume" in capsys.readouterr().err

    def test_cli_config_errors(self, photos, tmp_path, capsys, monkeypatch):
        monkeypatch.setenv("FEATLAB_DATA", str(tmp_path / "no-data"))  # the default photo folders do not exist
        base = ["train", "residual", "--photos", str(photos), "--val-photos", str(photos), *TINY]
        assert main(base + ["-o", str(tmp_path / "a"), "model.fusoin=sum"]) == 2
        assert "unknown config key 'model.fusoin'" in capsys.readouterr().err
        assert main(base + ["-o", str(tmp_path / "b"), "--export", "residual-rootsift"]) == 2
        assert "handcrafted" in capsys.readouterr().err
        assert main(["train", "residual", "-o", str(tmp_path / "c"), *TINY, "train.max_steps=1"]) == 2
        err = capsys.readouterr().err
        assert "data.photos folder not found" in err and "--photos" in err and "FEATLAB_DATA" in err
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
        # the process CPU time of the run is logged and carries over the resume (never restarts at 0)
        cpu = [r["cpu_time"] for r in read_metrics(tmp_path / "metrics.jsonl")]
        assert len(cpu) >= 3 and cpu[0] >= 0 and all(b >= a for a, b in zip(cpu, cpu[1:]))
        assert loop.load_checkpoint(loop.checkpoint_path(tmp_path))["cpu_time"] >= state["cpu_time"] > 0


def test_cli_train_with_a_missing_init_file_writes_nothing(photos, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "residual", "--photos", str(photos), "--val-photos", str(photos), "-o", str(out), *TINY,
               f"init.h_from={tmp_path / 'missing.safetensors'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not found" in err[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------------------- split rule
@pytest.fixture()
def data_root(photos, tmp_path, monkeypatch):
    """A data root with the shared data's layout (tiny photos), set as FEATLAB_DATA."""
    import shutil

    root = tmp_path / "data"
    for folder in ("photos/bsds500/train", "photos/bsds500/val", "photos/bsds500/test", "photos/sun_hays80",
                   "posed/strecha/castle-P30/images", "posed/strecha/Herz-Jesus-P25/images"):
        shutil.copytree(photos, root / folder)
    (root / "rgbd" / "7scenes_redkitchen").mkdir(parents=True)
    monkeypatch.setenv("FEATLAB_DATA", str(root))
    return root


class TestSplits:
    def test_evaluation_only_folders(self, data_root):
        from featlab.datasets.splits import eval_only_folder

        for rel in ("photos/bsds500/test", "photos/bsds500", "photos", ".", "posed/strecha/Herz-Jesus-P25/images",
                    "posed/strecha"):
            assert eval_only_folder(data_root / rel) is not None, rel
        for rel in ("photos/bsds500/train", "photos/bsds500/val", "photos/sun_hays80",
                    "posed/strecha/castle-P30/images"):
            assert eval_only_folder(data_root / rel) is None, rel
        # through a link with another name, and named like the benchmark's folder anywhere
        (data_root.parent / "link").symlink_to(data_root / "photos" / "bsds500" / "test")
        assert eval_only_folder(data_root.parent / "link") == "photos/bsds500/test"
        assert eval_only_folder("/elsewhere/bsds500/test/sub") == "photos/bsds500/test"

    def test_evaluation_only_frames(self, data_root):
        from featlab.datasets.splits import REPORT_FRAMES, SELECT_FRAMES, TRAIN_FRAMES, eval_only_frames

        seq = data_root / "rgbd" / "7scenes_redkitchen"
        assert TRAIN_FRAMES == (0, 350) and SELECT_FRAMES == (360, 400) and REPORT_FRAMES == (400, 500)
        assert eval_only_frames(seq, TRAIN_FRAMES) is None and eval_only_frames(seq, SELECT_FRAMES) is None
        assert eval_only_frames(seq, (0, 401)) == 400 and eval_only_frames(seq, None) == 400
        assert eval_only_frames(data_root / "synthetic-room-1", (0, 500)) is None

    def test_default_configs_follow_the_split_rule(self, data_root):
        from types import SimpleNamespace

        import featlab.training.caps as caps
        import featlab.training.residual as residual
        from featlab.commands.train import resolve_run_conf
        from featlab.conf import load_yaml, resolve_conf
        from featlab.datasets import splits

        args = SimpleNamespace(output=data_root / "run", resume=False, config=None, overrides=[], photos=None,
                               val_photos=None)
        conf, changes = resolve_run_conf(residual, args)
        assert changes == {}
        assert list(conf.data.photos) == [str(data_root / "photos/bsds500/train"), str(data_root / "photos/sun_hays80")]
        assert conf.val.photos == str(data_root / "photos/bsds500/val") and conf.data.allow_eval_data is False
        splits.check_run(conf)
        residual.check_conf(conf)
        caps_conf = resolve_conf(caps.default_conf, {**load_yaml(caps.DEFAULT_CONFIG),
                                                     "data": {**load_yaml(caps.DEFAULT_CONFIG)["data"],
                                                              "root": str(data_root / "rgbd/7scenes_redkitchen")}})
        assert list(caps_conf.data.frame_range) == [0, 350] and list(caps_conf.val.frame_range) == [360, 400]
        splits.check_run(caps_conf)
        seq = str(data_root / "rgbd/7scenes_redkitchen")
        with pytest.raises(ConfigError, match=r"val.frame_range=\[400, 500\] .* selects on evaluation-only frames"):
            splits.check_run(resolve_conf(caps.default_conf, {"data": {"root": seq, "frame_range": [0, 350]},
                                                              "val": {"frame_range": [400, 500]}}))
        with pytest.raises(ConfigError, match=r"data.frame_range=\[0, 500\] .* trains on evaluation-only frames"):
            splits.check_run(resolve_conf(caps.default_conf, {"data": {"root": seq, "frame_range": [0, 500]},
                                                              "val": {"frame_range": [360, 400]}}))

    @pytest.mark.parametrize("flags,key", [
        (["--photos", "photos/bsds500/test"], "data.photos"),
        (["--photos", "photos"], "data.photos"),
        (["--val-photos", "photos/bsds500/test"], "val.photos"),
        (["--val-photos", "posed/strecha/Herz-Jesus-P25/images"], "val.photos")])
    def test_cli_refuses_evaluation_data_unless_allowed(self, data_root, tmp_path, capsys, flags, key):
        flags = [f if f.startswith("-") else str(data_root / f) for f in flags]
        run = tmp_path / "run"
        base = ["train", "residual", "-o", str(run), *flags, *TINY, "train.max_steps=0", "val.num_pairs=1"]
        assert main(base) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].count(f"{key}=") == 1 and "evaluation-only" in err[0]
        assert "data.allow_eval_data=true" in err[0]
        assert not run.exists()  # refused before anything is written
        assert main(base + ["data.allow_eval_data=true"]) == 0
        assert "allow_eval_data: true" in (run / "config.yaml").read_text()


def test_resume_overrides_are_replayed_in_order(tmp_path):
    from featlab.commands.train import RESUME_KEYS, recorded_overrides, record_resume, resume_changes
    from featlab.conf import resolve_conf

    assert {"train.max_steps", "train.max_minutes"} <= set(RESUME_KEYS) and "train.lr" not in RESUME_KEYS
    defaults = {"train": loop.default_conf, "data": {"num_workers": 1}}
    before = resolve_conf(defaults, {"train": {"max_steps": 10}})
    after = resolve_conf(defaults, {"train": {"max_steps": 20, "max_minutes": 5.0}})
    changes = resume_changes(before, after)
    assert changes == {"train.max_minutes": {"from": None, "to": 5.0}, "train.max_steps": {"from": 10, "to": 20}}
    record_resume(tmp_path, changes)
    record_resume(tmp_path, {"train.max_steps": {"from": 20, "to": 30}})
    record_resume(tmp_path, {})  # no change, no line
    assert len((tmp_path / "resume_overrides.jsonl").read_text().splitlines()) == 2
    assert recorded_overrides(tmp_path) == {"train": {"max_steps": 30, "max_minutes": 5.0}}
    with pytest.raises(ConfigError, match="--resume cannot change train.lr"):
        resume_changes(before, resolve_conf(defaults, {"train": {"max_steps": 10, "lr": 0.5}}))
    (tmp_path / "resume_overrides.jsonl").write_text("not json\n")
    with pytest.raises(InputError, match="line 1"):
        recorded_overrides(tmp_path)
