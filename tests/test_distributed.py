"""Data-parallel training (DDP through the shared loop): the distributed sampler, and 2 CPU processes under
``torchrun`` (gloo) that must give the weights of one process with the doubled batch, resume exactly and write
one run folder from rank 0."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from featlab.errors import ConfigError
from featlab.training import distributed, loop

#: a tiny task whose samples are functions of their global index, batched by loop.iterate_batches (so each rank
#: gets its part of a step); written to a file so that the torchrun workers and this process run the same code
TOY = textwrap.dedent('''
    import json
    import sys
    from pathlib import Path

    import torch
    from torch import nn

    from featlab.training import distributed, loop
    from toytask import RegressionTask


    class Samples(torch.utils.data.Dataset):
        def __len__(self):
            return 1 << 30

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(int(i))
            x = torch.randn(4, generator=g)
            return {"x": x, "y": x.sum(0, keepdim=True), "index": int(i)}


    class Task(RegressionTask):
        def __init__(self, batch_size, dropout=0.0):
            super().__init__(dropout, activation=nn.Tanh)
            self.batch_size = batch_size
            self.seen = []  # global sample indices this process trained on

        def batches(self, start_step):
            return loop.iterate_batches(Samples(), self.batch_size, 0, start_step)

        def training_step(self, batch, step):
            self.seen.extend(batch["index"].tolist())
            return super().training_step(batch, step)


    CONF = {"max_steps": 6, "checkpoint_every": 3, "val_every": 3, "log_every": 1, "best_metric": "neg_mse",
            "lr": 1e-2, "progress": False, "dtype": "float32", "device": "cpu"}


    class WithUnused(nn.Module):
        def __init__(self, net):
            super().__init__()
            self.net, self.unused = net, nn.Linear(2, 2)

        def forward(self, x):
            return self.net(x)


    def unused_parameters(out):
        """A model with a parameter outside the loss: refused (one-line error) unless DDP is told, then trained."""
        from featlab.errors import ConfigError

        task = Task(4)
        task.model = WithUnused(task.model)
        try:
            loop.train(task, CONF, out / "refused")
            refused = ""
        except ConfigError as e:
            refused = str(e)
        task = Task(4)
        task.model = WithUnused(task.model)
        summary = loop.train(task, {**CONF, "ddp_find_unused_parameters": True}, out / "told")
        return refused, summary["step"]


    def run(out, batch_size, dropout=0.0, resume_at=None):
        """Train 6 steps into out (stopping at resume_at and resuming with a fresh task); returns the task."""
        loop.seed_everything(0)
        task = Task(batch_size, dropout)
        if resume_at is not None:
            loop.train(task, {**CONF, "max_steps": resume_at}, out)
            torch.manual_seed(1234)  # the resumed run must restore the RNG states, not inherit these
            loop.seed_everything(0)
            task = Task(batch_size, dropout)
            loop.train(task, CONF, out, resume=True)
        else:
            loop.train(task, CONF, out)
        return task


    if __name__ == "__main__":  # under torchrun: python ddp_toy.py OUT_DIR
        out = Path(sys.argv[1])
        ctx = distributed.setup("cpu")
        runs = {"plain": run(out / "plain", 4), "dropout": run(out / "dropout", 4, 0.3),
                "resumed": run(out / "resumed", 4, 0.3, resume_at=3)}
        params = {k: [p.detach().flatten().tolist() for p in t.model.parameters()] for k, t in runs.items()}
        refused, told_steps = unused_parameters(out)
        report = {"rank": ctx.rank, "world_size": ctx.world_size, "backend": ctx.backend,
                  "seen": runs["plain"].seen, "params": params, "unused_refused": refused, "unused_steps": told_steps}
        (out / f"rank{ctx.rank}.json").write_text(json.dumps(report))
        distributed.shutdown()
''')


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    path = folder / "ddp_toy.py"
    path.write_text(TOY)
    spec = importlib.util.spec_from_file_location("ddp_toy", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _flat(params) -> torch.Tensor:
    return torch.cat([torch.as_tensor(p).flatten() for p in params])


# ------------------------------------------------------------------------------------------------ sampler
class TestSampler:
    def _take(self, sampler, n):
        it = iter(sampler)
        return [next(it) for _ in range(n)]

    def test_ranks_split_each_step_of_the_single_process_stream(self):
        b, w, steps = 3, 2, 4
        one = self._take(loop.IndexSampler(0, b * w), steps * b * w)  # one process, batch W B
        ranks = [self._take(loop.IndexSampler(0, b, r, w), steps * b) for r in range(w)]
        for s in range(steps):
            step_one = one[s * b * w:(s + 1) * b * w]
            step_ranks = [ranks[r][s * b:(s + 1) * b] for r in range(w)]
            assert sum(step_ranks, []) == step_one  # disjoint, together the step's samples, in rank order
        assert len(set(ranks[0]) & set(ranks[1])) == 0

    def test_single_process_stream_is_unchanged_and_resumes_at_any_step(self):
        assert self._take(loop.IndexSampler(0, 4), 8) == list(range(8))
        assert self._take(loop.IndexSampler(5, 3, 1, 2), 3) == [33, 34, 35]  # step 5, rank 1: (5*2+1)*3
        assert self._take(loop.IndexSampler(2, 3, 1, 2), 9)[3:] == self._take(loop.IndexSampler(3, 3, 1, 2), 6)
        with pytest.raises(ValueError):
            loop.IndexSampler(0, 2, rank=2, world_size=2)

    def test_single_process_helpers_are_identities(self):
        ctx = distributed.context()
        assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
        assert distributed.any_rank(True) and not distributed.any_rank(False)
        assert distributed.mean_over_ranks({"loss": 2.0}) == {"loss": 2.0}
        assert distributed.all_gather(3) == [3]
        assert distributed.local_device("auto") == "auto"

    def test_setup_refuses_a_fixed_gpu_under_torchrun(self, monkeypatch):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", "0")
        assert distributed.launched()
        with pytest.raises(ConfigError, match="cuda:LOCAL_RANK"):
            distributed.setup("cuda:1")


# -------------------------------------------------------------------------------------- 2 processes, gloo
def _torchrun(*args, timeout=240):
    here = Path(__file__).resolve().parent  # the repository (featlab) and tests/ (toytask)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(here.parent), str(here)])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *map(str, args)]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def ddp_run(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_runs")
    proc = _torchrun(toy.__file__, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return out, reports, proc


class TestTwoProcesses:
    def test_each_rank_trains_on_its_own_part_of_every_step(self, ddp_run):
        _, (r0, r1), _ = ddp_run
        assert (r0["world_size"], r0["backend"], r1["rank"]) == (2, "gloo", 1)
        # step s: rank 0 took [8s, 8s + 4), rank 1 [8s + 4, 8s + 8): disjoint, and all of 8 samples x 6 steps
        assert r0["seen"][:4] == [0, 1, 2, 3] and r1["seen"][:4] == [4, 5, 6, 7]
        assert sorted(r0["seen"] + r1["seen"]) == list(range(48))

    def test_same_weights_as_one_process_with_the_doubled_batch(self, ddp_run, toy, tmp_path):
        _, (r0, r1), _ = ddp_run
        ref = toy.run(tmp_path / "one", 8)  # one process, batch 2 x 4: the same 48 samples
        ref_params = torch.cat([p.detach().flatten() for p in ref.model.parameters()])
        # the ranks hold the same weights, equal to the single process's up to float summation order
        assert torch.equal(_flat(r0["params"]["plain"]), _flat(r1["params"]["plain"]))
        assert torch.allclose(_flat(r0["params"]["plain"]), ref_params, atol=1e-5)
        # and training moved them (the comparison is not between two untouched initialisations)
        loop.seed_everything(0)
        init = torch.cat([p.detach().flatten() for p in toy.Task(8).model.parameters()])
        assert (ref_params - init).abs().max() > 1e-3

    def test_rank0_writes_one_log_with_world_size_and_rank_means(self, ddp_run, toy, tmp_path):
        out, _, _ = ddp_run
        records = loop.read_metrics(out / "plain" / "metrics.jsonl")
        train = [r for r in records if r["kind"] == "train"]
        assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]  # one writer: no duplicated lines
        assert [r["step"] for r in records if r["kind"] == "val"] == [0, 3, 6]
        assert all(r["world_size"] == 2 for r in records)
        ref = toy.run(tmp_path / "one", 8)
        del ref
        ref_train = [r for r in loop.read_metrics(tmp_path / "one" / "metrics.jsonl") if r["kind"] == "train"]
        assert all(r["world_size"] == 1 for r in ref_train)
        # the logged loss is the mean over ranks: the loss of the doubled batch (equal-size halves)
        assert [r["loss"] for r in train] == pytest.approx([r["loss"] for r in ref_train], rel=1e-4)
        for name in ("final.safetensors", "best.safetensors", "checkpoints/last.pt", "config.yaml"):
            if name != "config.yaml":  # config.yaml is the CLI's (rank 0) job, not the loop's
                assert (out / "plain" / name).is_file(), name
        state = loop.load_checkpoint(loop.checkpoint_path(out / "plain"))
        assert state["world_size"] == 2 and len(state["rng_ranks"]) == 2

    def test_resume_is_exact_and_needs_the_same_world_size(self, ddp_run, toy):
        out, (r0, r1), _ = ddp_run
        for r in (r0, r1):  # with dropout (the RNG states matter): stopped at 3 + resumed == 6 in one go
            assert torch.equal(_flat(r["params"]["resumed"]), _flat(r["params"]["dropout"]))
        lines = loop.read_metrics(out / "resumed" / "metrics.jsonl")
        assert [r["step"] for r in lines if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
        with pytest.raises(ConfigError, match="2 process"):
            loop.train(toy.Task(4), {**toy.CONF, "max_steps": 8}, out / "resumed", resume=True)


def test_parameters_outside_the_loss_need_the_flag(ddp_run):
    _, reports, _ = ddp_run
    for r in reports:
        assert "train.ddp_find_unused_parameters=true" in r["unused_refused"] and r["unused_steps"] == 6


@pytest.mark.slow  # synthetic photos, but two processes that import OpenCV and build SIFT: ~45 s on 2 cores
def test_cli_train_under_torchrun(tmp_path):
    """``torchrun --nproc_per_node=2 -m featlab train residual``: a tiny run of a real task, rank 0's files."""
    import cv2
    from skimage import data

    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("astronaut", "coffee"):
        cv2.imwrite(str(photos / f"{name}.png"), cv2.resize(getattr(data, name)(), (128, 96))[..., ::-1])
    run = tmp_path / "run"
    tiny = ["data.image_size=[64,96]", "handcrafted.max_keypoints=48", "data.batch_size=1", "data.num_workers=0",
            "val.num_pairs=1", "train.progress=false", "train.log_every=1", "train.device=cpu",
            "train.max_steps=2", "train.val_every=2", "train.validate_at_start=false"]
    proc = _torchrun("-m", "featlab", "train", "residual", "--photos", photos, "--val-photos", photos, "-o", run,
                     *tiny)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"step": 2') == 1  # the summary is printed by rank 0 only
    records = loop.read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    assert {r["world_size"] for r in records} == {2}
    assert (run / "config.yaml").is_file() and (run / "best.safetensors").is_file()
