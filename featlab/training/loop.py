"""A generic, resumable training loop shared by the learned methods.

The loop owns the optimiser (Adam), seeding, mixed precision, checkpoints, validation, logging and the progress
bar; a method supplies a :class:`TrainingTask` (its model, its data, one loss evaluation, its validation and how
its weights are written). Nothing in here knows about a particular method.

Run folder layout::

    RUN_DIR/config.yaml               resolved config (written by the CLI)
    RUN_DIR/checkpoints/last.pt       model + optimiser + step + RNG states + config + best-so-far (atomic)
    RUN_DIR/metrics.jsonl             one JSON record per log / validation: step, time (wall s), cpu_time
                                      (CPU s, featlab.timing), train_time, loss, ...
    RUN_DIR/tensorboard/              TensorBoard event files
    RUN_DIR/best.safetensors (+.json) best weights by ``best_metric`` (written by the task)
    RUN_DIR/final.safetensors (+.json) weights at the last step

Reproducibility: the task must make the batch of step s a function of (seed, s) only (:meth:`TrainingTask.batches`
starts at any step), so a resumed run sees exactly the batches an uninterrupted one would; the model, the
optimiser state and the global RNG states are restored from the checkpoint. Under these conditions a resumed run
produces the same next step as the uninterrupted one (bit-identical on the same machine and thread count).

Data-parallel (``torchrun``, :mod:`featlab.training.distributed`): the same loop runs in every process; the
task's training step runs under DDP (gradients averaged over processes), :func:`iterate_batches` gives each rank
its part of the step's samples, and rank 0 alone validates, logs and writes files. Every record of
``metrics.jsonl`` carries ``world_size``; training metrics are means over the processes. A run resumes with the
world size it was started with (checked), and each rank gets its own RNG states back.
"""
from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from torch import nn

from ..conf import checked, none_or, resolve_conf, to_container
from ..errors import ConfigError, InputError
from ..io.atomic import atomic_path, atomic_write_text
from ..rng import role_rng
from ..timing import cpu_seconds
from . import distributed

logger = logging.getLogger(__name__)

default_conf = {
    "seed": 0,  # seeds python, numpy and torch; the data of step s is a function of (seed, s)
    "max_steps": 20000,  # optimiser steps
    "lr": 1e-3,  # Adam learning rate
    "weight_decay": 0.0,  # Adam (L2) weight decay
    "grad_clip": none_or(float),  # clip the global gradient norm to this value; null: no clipping
    "log_every": 10,  # steps between training-metric records (averaged over those steps)
    "val_every": 500,  # steps between validations (and always at the last step)
    "checkpoint_every": 500,  # steps between checkpoints (and always at the last step)
    "validate_at_start": True,  # validate the untrained model at step 0 (first point of the convergence curve)
    "best_metric": "mma@3",  # validation metric that selects the best weights
    "best_mode": checked("max", choices=("max", "min")),  # max: higher best_metric is better; min: lower (an error)
    "device": "auto",  # auto (cuda if available, else cpu) | cpu | cuda | cuda:N
    "dtype": "auto",  # auto | float32 | bfloat16 (autocast for the CNN; losses and geometry stay float32);
    #                   auto: bfloat16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX), else float32
    "channels_last": none_or(bool),  # true | false | null (auto: true with bfloat16): channels_last memory format
    #                         for the CNN; with float32 on an AVX2 CPU it slows the backward pass (measured 1.6x)
    "lr_decay_every": none_or(int),  # step decay: multiply the lr by lr_decay_factor every this many steps;
    #                           null: constant
    "lr_decay_factor": 0.5,
    "num_threads": none_or(int),  # torch intra-op threads; null: torch's default
    "progress": True,  # tqdm progress bar
    "ddp_find_unused_parameters": False,  # under torchrun: true for a task whose loss leaves some trainable
    #                      parameters out of a step (DDP stops with an error otherwise); costs a graph walk per step
    "max_minutes": none_or(float),  # wall-clock budget of this invocation: stop (validate, checkpoint) after the
    #                      step that passes it; --resume continues with a fresh budget. null: no budget
}


class TrainingTask:
    """What a method provides to :func:`train`. Subclasses set ``self.model`` and implement the methods."""

    model: nn.Module

    def batches(self, start_step: int) -> Iterator[dict]:
        """Endless batches; the first one is that of step ``start_step`` and each depends only on (seed, step).

        Under DDP each process must yield its own part of the step's samples: build the batches with
        :func:`iterate_batches`, which does that (or read :func:`featlab.training.distributed.context`)."""
        raise NotImplementedError

    def set_compute(self, dtype: str, channels_last: bool) -> None:
        """Apply the loop's compute choice (autocast dtype, memory format) to the model."""

    def training_step(self, batch: dict, step: int) -> tuple[torch.Tensor, dict]:
        """Loss (scalar tensor with gradient) and detached metrics (name -> scalar) for one batch."""
        raise NotImplementedError

    def validate(self) -> dict[str, float]:
        """Validation metrics (the model is in eval mode under no_grad when this is called)."""
        return {}

    def save_weights(self, path: Path, info: dict) -> Path:
        """Write the model's weights (e.g. safetensors + sidecar) to ``path``; ``info`` is training metadata."""
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------------- seeding
def seed_everything(seed: int) -> None:
    """Seed python's, numpy's and torch's global generators (call it before building the model)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_states() -> dict:
    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on the GPU draws from the CUDA RNG
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states["cuda"])


# ------------------------------------------------------------------------------------------------ checkpoints
def checkpoint_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints" / "last.pt"


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """``torch.save`` through a temporary file and a rename: a crash never leaves a truncated checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no checkpoint to resume from: {path}")
    try:
        # the checkpoint holds python/numpy RNG states, which weights_only loading rejects; it is our own file
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - torch.load raises many kinds of errors on a corrupt file
        raise InputError(f"cannot read checkpoint {path}: {e}") from None


# ---------------------------------------------------------------------------------------------------- logging
class MetricsLog:
    """Append-only JSONL metrics file (one record per line), trimmed on resume to the checkpoint's step."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def reset(self) -> None:
        atomic_write_text(self.path, "")

    def truncate_after(self, step: int) -> None:
        """Drop records logged after ``step`` (they belong to the interrupted part of a run)."""
        if not self.path.is_file():
            self.reset()
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                if json.loads(line).get("step", 0) <= step:
                    keep.append(line)
            except json.JSONDecodeError:  # a line cut by a crash
                continue
        atomic_write_text(self.path, "".join(k + "\n" for k in keep))

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")


def read_metrics(path: str | Path) -> list[dict]:
    """Records of a ``metrics.jsonl`` file (for convergence plots)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def native_bf16(device: torch.device) -> bool:
    """True where bfloat16 convolutions are fast: CUDA with bf16 support, or a CPU with AVX512-BF16 / AMX.

    On CPUs without them (e.g. AVX2 only) oneDNN emulates bf16 and a training step is several times *slower*
    than in float32 (measured: 85 s vs 15 s per step on a 2-core AVX2 machine).
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device_dtype(device: str, dtype: str) -> tuple[torch.device, str]:
    """Resolve the ``device`` and ``dtype`` conf values ('auto' included) -> (torch.device, 'float32'|'bfloat16')."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but torch sees no CUDA device")
    if dtype == "auto":
        dtype = "bfloat16" if native_bf16(dev) else "float32"
    if dtype not in ("float32", "bfloat16"):
        raise ConfigError(f"train.dtype must be auto, float32 or bfloat16, got {dtype!r}")
    return dev, dtype


def to_device(batch, device: torch.device):
    """Move the tensors of a (nested) batch dict/list to ``device``; other values are left as they are."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


def _scalar(v) -> float:
    return float(v.detach().float().item()) if isinstance(v, torch.Tensor) else float(v)


# ------------------------------------------------------------------------------------------------------- loop
def train(task: TrainingTask, conf, run_dir: str | Path, resume: bool = False, full_config=None) -> dict:
    """Train ``task.model`` until ``conf.max_steps``.

    Args:
        task: the method's :class:`TrainingTask`.
        conf: this loop's config section (see :data:`default_conf`).
        run_dir: output folder (see the module docstring for its layout).
        resume: continue from ``run_dir/checkpoints/last.pt``; without it, a folder that already holds a
            checkpoint is an error (nothing is overwritten by accident).
        full_config: the whole resolved config, stored in checkpoints.
    Returns:
        summary dict: ``step``, ``best_metric``, ``best_value``, ``best_step``, ``time`` (s), ``last_val``.
    """
    conf = resolve_conf(default_conf, conf, "train")
    dist = distributed.setup(str(conf.device))  # under torchrun: joins the process group (if the CLI has not)
    main = dist.is_main  # rank 0 validates, logs and writes; every rank trains
    device, dtype = resolve_device_dtype(distributed.local_device(str(conf.device)), str(conf.dtype))
    channels_last = dtype == "bfloat16" if conf.channels_last in (None, "auto") else bool(conf.channels_last)
    for key in ("log_every", "val_every", "checkpoint_every"):
        if int(conf[key]) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {conf[key]}")
    if conf.num_threads:
        torch.set_num_threads(int(conf.num_threads))
    run_dir = Path(run_dir)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = checkpoint_path(run_dir)
    model = task.model.to(device)
    task.set_compute(dtype, channels_last)
    logger.info("training on %s, %s%s%s", device, dtype, ", channels_last" if channels_last else "",
                f", {dist.world_size} processes ({dist.backend})" if dist.distributed else "")
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=conf.lr, weight_decay=conf.weight_decay)
    log = MetricsLog(run_dir / "metrics.jsonl")

    step, elapsed, train_time, cpu_elapsed = 0, 0.0, 0.0, 0.0
    sign = 1.0 if conf.best_mode == "max" else -1.0  # compare sign * value, higher is better
    best = {"value": -math.inf, "step": None}
    last_val: dict = {}
    if resume:
        state = load_checkpoint(ckpt_path)
        saved_world = int(state.get("world_size", 1))
        if saved_world != dist.world_size:  # the samples of a step depend on the number of processes
            raise ConfigError(f"{run_dir} was trained with {saved_world} process(es); resume it with the same "
                              f"number (torchrun --nnodes x --nproc_per_node = {saved_world}), not "
                              f"{dist.world_size}")
        model.load_state_dict(state["model"])
        model.to(device)
        optimizer.load_state_dict(state["optimizer"])
        set_rng_states(state["rng_ranks"][dist.rank] if "rng_ranks" in state else state["rng"])
        step, elapsed, train_time = state["step"], state["time"], state["train_time"]
        cpu_elapsed = float(state.get("cpu_time", 0.0))
        best, last_val = state["best"], state.get("last_val", {})
        if main:
            log.truncate_after(step)
        logger.info("resumed %s at step %d", run_dir, step)
    else:
        if ckpt_path.exists():
            raise InputError(f"{run_dir} already holds a training run ({ckpt_path}); pass --resume to continue it "
                             f"or choose another output folder")
        seed_everything(int(conf.seed))
        if main:
            log.reset()
    # DDP from here on (a no-op for one process); its constructor broadcasts rank 0's weights
    step_fn = distributed.wrap_task(task, device, bool(conf.ddp_find_unused_parameters))
    distributed.barrier()  # no rank starts while another may still find a missing checkpoint or config

    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step if resume else None) if main else None
    world = {"world_size": dist.world_size}
    amp = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if dtype == "bfloat16" else nullcontext()
    t_start = time.perf_counter()

    c_start = cpu_seconds()

    def now() -> float:
        return elapsed + time.perf_counter() - t_start

    def cpu() -> float:
        """CPU seconds (:func:`featlab.timing.cpu_seconds`: this process, all its threads, and finished children;
        persistent data-loader workers are not counted), summed over resumed runs: the measure of a training budget
        that does not depend on what else runs on the machine."""
        return cpu_elapsed + cpu_seconds() - c_start

    def checkpoint():
        rng_ranks = distributed.all_gather(rng_states())  # a collective: every rank checkpoints at the same steps
        if not main:
            return
        save_checkpoint(ckpt_path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "rng": rng_ranks[0],
            "rng_ranks": rng_ranks, "world_size": dist.world_size,
            "config": to_container(full_config) if full_config is not None else None, "train_conf":
            to_container(conf), "device": str(device), "dtype": dtype, "channels_last": channels_last,
            "best": best, "last_val": last_val, "time": now(), "cpu_time": cpu(), "train_time": train_time})

    def validate():
        nonlocal last_val
        if not main:  # the weights are the same on every rank: rank 0 validates while the others wait
            return
        model.eval()
        t0 = time.perf_counter()
        with torch.no_grad(), amp:
            metrics = {k: _scalar(v) for k, v in task.validate().items()}
        model.train()
        last_val = metrics
        log.write({"kind": "val", "step": step, "time": now(), "cpu_time": cpu(), "train_time": train_time, **world,
                   "val_seconds": time.perf_counter() - t0, **{f"val/{k}": v for k, v in metrics.items()}})
        for k, v in metrics.items():
            writer.add_scalar(f"val/{k}", v, step)
        value = metrics.get(conf.best_metric)
        if value is None:
            if metrics:
                raise ConfigError(f"train.best_metric '{conf.best_metric}' is not a validation metric; "
                                  f"available: {', '.join(metrics)}")
            return
        if sign * value > best["value"]:
            best.update(value=sign * value, step=step)
            task.save_weights(run_dir / "best.safetensors", {"step": step, "val": metrics})
        logger.debug("step %d validation %s", step, metrics)

    if step == 0 and conf.validate_at_start:
        validate()
    model.train()
    pbar = tqdm(total=int(conf.max_steps), initial=step, disable=not (conf.progress and main), desc="train",
                unit="step", dynamic_ncols=True)
    window: dict[str, list[float]] = {}
    skipped = 0
    batches = None
    try:
        batches = task.batches(step)
        while step < conf.max_steps:
            batch = to_device(next(batches), device)
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            try:
                with amp:
                    loss, metrics = step_fn(batch, step)
            except RuntimeError as e:
                if "find_unused_parameters" not in str(e):
                    raise
                raise ConfigError("this task leaves some trainable parameters out of its loss, which DDP must be "
                                  "told: set train.ddp_find_unused_parameters=true") from None
            # backward on every rank even for a bad loss (DDP needs all ranks in its gradient all-reduce); the
            # update is skipped on all ranks when any rank's loss is not finite
            if loss.requires_grad:  # a loss without graph (nothing to learn from this batch) has no backward
                loss.backward()
            if distributed.any_rank(not bool(torch.isfinite(loss))):
                skipped += 1
                logger.warning("step %d: non-finite loss %s, update skipped", step, loss.item())
            else:
                if conf.grad_clip:
                    metrics = {**metrics, "grad_norm": torch.nn.utils.clip_grad_norm_(params, conf.grad_clip)}
                if conf.lr_decay_every:  # a function of the step, so resuming needs no scheduler state
                    for group in optimizer.param_groups:
                        group["lr"] = float(conf.lr) * float(conf.lr_decay_factor) ** (step // int(conf.lr_decay_every))
                optimizer.step()
            step += 1
            dt = time.perf_counter() - t0
            train_time += dt
            for k, v in {"loss": loss, **metrics, "step_seconds": dt}.items():
                window.setdefault(k, []).append(_scalar(v))
            pbar.update(1)
            pbar.set_postfix(loss=f"{window['loss'][-1]:.4f}", s_per_step=f"{dt:.2f}", refresh=False)
            if step % conf.log_every == 0 or step == conf.max_steps:
                means = distributed.mean_over_ranks({k: float(np.mean(v)) for k, v in window.items()})
                if main:
                    log.write({"kind": "train", "step": step, "time": now(), "cpu_time": cpu(),
                               "train_time": train_time, **world, **means, "skipped": skipped})
                    for k, v in means.items():
                        writer.add_scalar(f"train/{k}", v, step)
                window = {}
            # rank 0's clock decides, so that every rank stops after the same step
            out_of_time = distributed.any_rank(main and conf.max_minutes is not None
                                               and time.perf_counter() - t_start > 60 * float(conf.max_minutes))
            if step % conf.val_every == 0 or step == conf.max_steps or out_of_time:
                validate()
            if step % conf.checkpoint_every == 0 or step == conf.max_steps or out_of_time:
                checkpoint()
            if out_of_time:
                logger.info("time budget of %s min used: stopped at step %d (--resume continues)",
                            conf.max_minutes, step)
                break
    finally:
        if hasattr(batches, "close"):
            batches.close()  # shuts the data workers down
        pbar.close()
        if writer is not None:
            writer.close()
    if main:
        task.save_weights(run_dir / "final.safetensors", {"step": step, "val": last_val})
    distributed.barrier()  # every rank returns once rank 0 has written the run folder (a resume that follows finds it)
    return {"step": step, "world_size": dist.world_size, "device": str(device), "dtype": dtype,
            "channels_last": channels_last,
            "best_metric": conf.best_metric, "best_value": sign * best["value"], "best_step": best["step"],
            "time": now(), "cpu_time": cpu(), "train_time": train_time, "last_val": last_val, "skipped_steps": skipped}


class IndexSampler(torch.utils.data.Sampler):
    """Endless global sample indices of one process, step by step from ``start_step``: the data of step s is a
    function of (seed, s), so a resumed run continues with exactly the batches an uninterrupted run would have seen.

    The distributed sampler: step s has the ``world_size * batch_size`` global samples
    ``[s W B, (s + 1) W B)``; rank r takes the block ``[(s W + r) B, (s W + r + 1) B)``. The ranks' blocks are
    disjoint and together are the samples of one process with batch ``W B`` (one process: s B, s B + 1, ...).
    Not :class:`torch.utils.data.DistributedSampler`: it splits a finite epoch and needs ``set_epoch`` and
    skipping to resume mid-epoch, where featlab's samples are already functions of an endless global index.
    """

    def __init__(self, start_step: int, batch_size: int = 1, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside [0, {world_size})")
        self.start_step, self.batch_size, self.rank, self.world_size = start_step, batch_size, rank, world_size

    def __iter__(self):
        s, b, w = self.start_step, self.batch_size, self.world_size
        while True:
            first = (s * w + self.rank) * b
            yield from range(first, first + b)
            s += 1


def worker_init(_):
    """DataLoader worker set-up: one torch thread per worker (the machine has few cores).

    Not cv2.setNumThreads: in a forked worker it can wait forever on the parent's thread-pool condition variables
    (observed with OpenCV 5 after the parent ran OpenCV in parallel).
    """
    torch.set_num_threads(1)


def iterate_batches(dataset, batch_size: int, num_workers: int, start_step: int,
                    multiprocessing_context: str | None = None):
    """Endless batches of ``dataset`` from global step ``start_step`` on (see :class:`IndexSampler`); under DDP,
    this process's ``batch_size`` samples of each step.

    A :class:`~featlab.errors.FeatlabError` raised in a worker is re-raised here with its one-line message.
    ``multiprocessing_context="spawn"`` for datasets that run OpenCV in workers after the parent did: a process
    forked after OpenCV started its thread pool can deadlock in its first OpenCV call.
    """
    from torch.utils.data import DataLoader

    from ..errors import FeatlabError

    workers = int(num_workers)
    dist = distributed.context()
    sampler = IndexSampler(start_step, int(batch_size), dist.rank, dist.world_size)
    # its own generator: creating a DataLoader iterator draws a worker seed, which from the global RNG would shift
    # the draws (dropout) of a resumed run against the uninterrupted one (samples are seeded by index anyway)
    loader = DataLoader(dataset, batch_size=int(batch_size), sampler=sampler,
                        generator=torch.Generator().manual_seed(0), num_workers=workers,
                        worker_init_fn=worker_init if workers else None,
                        prefetch_factor=2 if workers else None,
                        multiprocessing_context=multiprocessing_context if workers else None,
                        persistent_workers=False)
    it = iter(loader)
    try:
        while True:
            try:
                yield next(it)
            except FeatlabError as e:  # re-raised from a worker with its traceback: keep the message line
                lines = [ln for ln in str(e).splitlines() if ln.strip()]
                raise type(e)(lines[-1].split(": ", 1)[-1] if len(lines) > 1 else str(e)) from None
    finally:
        del it


#: sub-index of the epoch permutations in the "train" stream: role_rng(seed, "train", epoch, _SHUFFLE) has one more
#: index than a training sample's role_rng(seed, "train", i), so the two never share a generator. Never 0: numpy's
#: SeedSequence reads trailing zeros as absent ([s, 0, e, 0] is [s, 0, e])
_SHUFFLE = 1


class EpochShuffle:
    """Global sample index -> item index: a fresh permutation of the n items each epoch, a function of
    (seed, epoch) only, so any sample can be rebuilt in any process (workers, a resumed run). Drawn from the
    "train" role's stream (:func:`featlab.rng.role_rng`), with a sub-index that no training sample uses."""

    def __init__(self, seed: int):
        self.seed = seed
        self._epoch, self._perm = None, None

    def __call__(self, index: int, n: int) -> int:
        epoch = index // n
        if self._epoch != epoch:
            self._perm = role_rng(self.seed, "train", epoch, _SHUFFLE).permutation(n)
            self._epoch = epoch
        return int(self._perm[index % n])
