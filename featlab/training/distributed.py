"""Data-parallel training on PyTorch's own engine (``torch.distributed`` + ``DistributedDataParallel``).

Launch any training task with ``torchrun`` (one process per GPU, or several CPU processes)::

    torchrun --standalone --nproc_per_node=2 -m featlab train residual -o runs/r2 ...
    torchrun --nnodes=2 --node_rank=0 --rdzv_backend=c10d --rdzv_endpoint=HOST:29500 --nproc_per_node=4 \\
        -m featlab train caps -o runs/caps ...

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; :func:`setup` reads them
and starts a process group with NCCL when the run trains on CUDA (one GPU per process, ``cuda:LOCAL_RANK``) and
gloo on the CPU. Without those variables (a plain ``featlab train``) nothing here does anything: every helper
behaves as for one process, so the loop has one code path.

How the pieces fit (see :mod:`featlab.training.loop`):

- data: :func:`featlab.training.loop.iterate_batches` gives rank ``r`` of ``W`` the samples
  ``[(s W + r) B, (s W + r + 1) B)`` of step ``s`` (``B`` = per-process batch). Samples are functions of their
  global index, so the ``W`` processes together see exactly the samples one process with batch ``W B`` would.
- gradients: the task's ``training_step`` runs inside a :class:`DistributedDataParallel` wrapper
  (:func:`wrap_task`), which averages the gradients over the processes during ``backward``. Every task gets DDP
  through the loop, without any change to the task.
- rank 0 alone validates, logs (``metrics.jsonl`` with ``world_size``, TensorBoard, progress bar, info
  messages) and writes checkpoints and weights; the other ranks log warnings only.
- exact resume: the checkpoint holds every rank's RNG states and the world size; a run resumes with the same
  number of processes (the data of a step depends on it).

The run folder (and the data) must be visible to every node, as usual for ``torchrun`` jobs: every rank reads
``config.yaml`` and the checkpoint when it resumes.
"""
from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

logger = logging.getLogger(__name__)

#: how long a rank waits for the others at a collective: rank 0 validates and writes checkpoints while the
#: others wait at their next step, so this bounds the length of one validation
TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` in ``[0, world_size)``, ``local_rank`` on its node, the backend."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched() -> bool:
    """True in a process started by ``torchrun`` (or any launcher that sets the same variables) with WORLD_SIZE > 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def context() -> Context:
    """The current process group's rank and size; a single-process :class:`Context` when there is none."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return Context()
    return Context(rank=torch.distributed.get_rank(), world_size=torch.distributed.get_world_size(),
                   local_rank=int(os.environ.get("LOCAL_RANK", 0)), backend=torch.distributed.get_backend())


def _wants_cuda(device: str) -> bool:
    device = str(device)
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def setup(device: str = "auto") -> Context:
    """Join the process group that ``torchrun`` describes in the environment (no-op without one).

    Args:
        device: the run's ``train.device`` (auto | cpu | cuda): NCCL for CUDA, gloo for the CPU.
    Returns:
        the :class:`Context` of this process.
    Raises:
        ConfigError: ``cuda:N`` under DDP (each process takes ``cuda:LOCAL_RANK``), or CUDA requested without it.
    """
    if not launched():
        return context()
    if torch.distributed.is_initialized():
        return context()
    if str(device).startswith("cuda:"):
        raise ConfigError(f"train.device={device}: under torchrun each process uses cuda:LOCAL_RANK; "
                          "set train.device=cuda (or auto)")
    cuda = _wants_cuda(device)
    if cuda and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but torch sees no CUDA device")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} CUDA device(s): "
                              "use --nproc_per_node <= the number of GPUs")
        torch.cuda.set_device(local_rank)  # before NCCL starts: each process owns one GPU
    backend = "nccl" if cuda else "gloo"
    torch.distributed.init_process_group(backend=backend, timeout=TIMEOUT)
    ctx = context()
    if not ctx.is_main:  # rank-0 logging: the others report warnings and errors only
        logging.getLogger("featlab").setLevel(logging.WARNING)
    logger.info("DDP: %d processes, backend %s", ctx.world_size, backend)
    return ctx


def shutdown() -> None:
    """Leave the process group (if any), after a barrier so that no rank exits while another still sends."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


def local_device(device: str) -> str:
    """The device of this process: under DDP on CUDA, ``cuda:LOCAL_RANK`` for ``auto`` and ``cuda``."""
    ctx = context()
    if ctx.distributed and ctx.backend == "nccl" and (device == "auto" or device == "cuda"):
        return f"cuda:{ctx.local_rank}"
    return device


# ---------------------------------------------------------------------------------------------- collectives
def _flag_device() -> torch.device:
    ctx = context()
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is true on at least one (keeps decisions such as stopping in step)."""
    if not context().distributed:
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=_flag_device())
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return bool(t.item() > 0)


def all_gather(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (pickled; for small things: metrics, RNG states)."""
    ctx = context()
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    torch.distributed.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Per key, the mean over the ranks that report it (every rank gets the result).

    Example: two ranks with ``{"loss": 1.0}`` and ``{"loss": 3.0}`` both get ``{"loss": 2.0}``.
    """
    gathered = all_gather(values)
    keys = list(dict.fromkeys(k for d in gathered for k in d))
    return {k: sum(d[k] for d in gathered if k in d) / sum(k in d for d in gathered) for k in keys}


def barrier() -> None:
    if context().distributed:
        torch.distributed.barrier()


# ---------------------------------------------------------------------------------------------------- DDP
class _TaskStep(nn.Module):
    """``forward(batch, step) = task.training_step(batch, step)``, with the task's model as a submodule.

    DDP synchronises gradients of whatever runs inside its wrapper's ``forward``. Tasks call their model in many
    ways (``model(...)``, ``model.h(...)``, several passes per step), so the wrapper holds the whole training step,
    not the model: every task gets DDP unchanged.
    """

    def __init__(self, task):
        super().__init__()
        self.model = task.model
        self.task = task  # not an nn.Module: not registered, its parameters are those of self.model

    def forward(self, batch: dict, step: int):
        return self.task.training_step(batch, step)


def wrap_task(task, device: torch.device, find_unused_parameters: bool = False):
    """A callable ``step_fn(batch, step) -> (loss, metrics)``: the task's training step, under DDP when running
    distributed (gradients averaged over processes in ``backward``), else the task's own method.

    ``find_unused_parameters``: needed by a task that leaves trainable parameters out of a step's loss (a loss
    term that starts later, a branch used every other step); DDP then walks the autograd graph each step. The
    residual, residual-v2 and CAPS steps use every trainable parameter (checked), so it is off by default.
    """
    ctx = context()
    if not ctx.distributed:
        return task.training_step
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index if device.index is not None else ctx.local_rank] if device.type == "cuda" else None
    return DistributedDataParallel(_TaskStep(task), device_ids=device_ids,
                                   find_unused_parameters=find_unused_parameters)


__all__ = ["Context", "TIMEOUT", "all_gather", "any_rank", "barrier", "context", "launched", "local_device",
           "mean_over_ranks", "setup", "shutdown", "wrap_task"]
