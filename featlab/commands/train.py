"""``featlab train METHOD``: train a learned method; one sub-subcommand per method.

Each method is a module of :mod:`featlab.training` listed in :data:`METHODS` (with a one-line summary) that
provides: ``DEFAULT_CONFIG`` (YAML path), ``default_conf``, ``add_arguments(parser)`` (its data arguments),
``apply_arguments(user_conf, args)``, ``check_conf(conf)``, ``build_task(conf)`` (a
:class:`featlab.training.loop.TrainingTask`), ``export_weights(run_dir, name)`` and optionally
``check_export(conf, name)``. Adding a method = writing that module and adding one line to :data:`METHODS`.
The module is imported only when its training runs (``featlab --help`` does not import torch). The common
arguments (``-o``, ``--config``, overrides, ``--resume``, ``--export``) are handled here; the loop is
:func:`featlab.training.loop.train`.

Every run passes the split guard (:func:`featlab.datasets.splits.check_run`: no training or selection on
evaluation-only data unless ``data.allow_eval_data=true``). ``--resume`` keeps the run's ``config.yaml`` as it was
written and accepts only the overrides of :data:`RESUME_KEYS` (budgets that cannot change what is trained or
selected); each resume that changes one appends a line to ``resume_overrides.jsonl`` beside it, and later resumes
replay those lines.

Data-parallel training: start the same command under ``torchrun`` (DDP, gloo on the CPU, NCCL on GPUs; see
:mod:`featlab.training.distributed` and docs/SCALING.md); rank 0 writes the run folder.

Examples::

    featlab train residual -o runs/residual-sift        # the split rule's photos (bsds500/train + sun_hays80; val)
    featlab train residual --photos A --photos B --val-photos V -o runs/small model.backbone=small train.max_steps=5000
    featlab train residual -o runs/residual-sift --resume                       # continue after an interruption
    featlab train residual -o runs/residual-sift --resume train.max_steps=40000  # continue with a larger budget
    featlab train residual -o runs/residual-sift --resume --export residual-sift  # copy best weights to featlab/weights
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
import time
from pathlib import Path

from ..conf import (deep_update, load_yaml, load_yaml_with_overrides, parse_overrides, resolve_conf, save_conf,
                    to_container)
from ..errors import ConfigError, InputError
DESCRIPTION = """Every run writes into its folder (-o): the resolved config.yaml,
checkpoints/last.pt (model, optimiser, step, RNG states), metrics.jsonl (loss and validation metrics with step and
wall time), TensorBoard logs, and the best weights (by validation) as best.safetensors + best.json.

Training and selection never read evaluation-only data (docs/DATASETS.md: bsds500/test, Herz-Jesus-P25,
7-Scenes redkitchen frames 400-499) unless data.allow_eval_data=true. --resume keeps config.yaml and accepts only
budget overrides (train.max_steps, train.max_minutes, ...), recorded in resume_overrides.jsonl.

examples:
  featlab train residual -o runs/residual-sift          # photos of the split rule: bsds500/train + sun_hays80, val
  featlab train residual --photos A --photos B --val-photos V -o runs/small model.backbone=small
  featlab train residual -o runs/residual-sift --resume                 # continue after an interruption
  featlab train residual -o runs/residual-sift --resume train.max_steps=40000   # continue with a larger budget
  featlab train residual -o runs/residual-sift --resume --export residual-sift  # ship the best weights
  torchrun --standalone --nproc_per_node=2 -m featlab train residual -o runs/r2   # data-parallel (DDP), 2 processes
"""

#: method name -> (training module, one-line summary). Summaries live here so that building the CLI parser does
#: not import the training modules (and torch): `featlab --help` stays fast. Missing modules are skipped.
METHODS = {
    "residual": ("featlab.training.residual", "residual descriptor: handcrafted g + learned residual, "
                 "self-supervised on synthetic homographies"),
    "caps": ("featlab.training.caps", "CAPS descriptors supervised by relative camera poses only"),
    "scfeat": ("featlab.training.scfeat", "SCFeat detector + descriptor, weakly supervised by poses"),
    "depthkp": ("featlab.training.depthkp", "keypoints and descriptors learned on depth maps (Georgakis et al. "
                "2018) from poses only"),
    "residual-v2": ("featlab.training.patch_residual", "residual descriptor v2: RootSIFT + learned oriented-patch "
                    "descriptor, fitted fusion"),
    "pose": ("featlab.training.pose", "pose-sift: RootSIFT + oriented-patch residual trained from camera poses on "
             "any posed collection (train / select / held-out split, --init, held-out AUC before and after)"),
}

logger = logging.getLogger(__name__)

#: the only keys ``--resume`` may change, with why each cannot change what is trained or selected
RESUME_KEYS = {
    "train.max_steps": "step budget: the steps already taken are the same",
    "train.max_minutes": "wall-clock budget of one invocation",
    "train.progress": "progress bar only",
    "train.ddp_find_unused_parameters": "DDP bookkeeping only: the gradients are the same",
    "data.num_workers": "loader processes only: the data of step s is a function of (seed, s)",
}
#: beside config.yaml: one JSON line per resume that changed a key of RESUME_KEYS
RESUME_LOG = "resume_overrides.jsonl"


class _OverridesParser(argparse.ArgumentParser):
    """Accept ``key=value`` overrides anywhere on the command line, not only in one block.

    argparse fills a ``nargs="*"`` positional from the first run of positionals only; later ``key=value`` tokens
    (after an option, e.g. ``-o RUN model.backbone=small``) come back as unrecognised and are appended here.
    """

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        more = [e for e in extras if "=" in e and not e.startswith("-")]
        if more:
            namespace.overrides = list(getattr(namespace, "overrides", None) or []) + more
            extras = [e for e in extras if e not in more]
        return namespace, extras


def _available() -> dict[str, tuple[str, str]]:
    return {k: v for k, v in METHODS.items() if importlib.util.find_spec(v[0]) is not None}


def register(sub):
    methods = _available()
    listing = "\n".join(f"  {name:<10} {summary}" for name, (_, summary) in methods.items())
    p = sub.add_parser("train", help="train a learned method (see `featlab train METHOD --help`)",
                       description=f"Train a learned method.\n\nmethods:\n{listing}\n\n{DESCRIPTION}",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       usage="featlab train METHOD [-h] -o RUN_DIR [options] [key=value ...]")
    p.add_argument("method", choices=sorted(methods), metavar="METHOD", help=", ".join(methods))
    # the method's own parser (built in run(), after importing its module) reads the rest
    p.add_argument("method_args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def method_parser(name: str, mod) -> argparse.ArgumentParser:
    """The parser of ``featlab train NAME``: common arguments plus the method's data arguments."""
    # the general examples are residual's: a method's own help shows its name with the options all methods share
    general = DESCRIPTION.split("\nexamples:")[0]
    examples = (f"\nexamples:\n  featlab train {name} -o runs/{name}\n"
                f"  featlab train {name} -o runs/{name} --resume train.max_steps=40000   # continue, larger budget\n"
                f"  featlab train {name} -o runs/{name} --resume --export {name}   # ship the best weights\n")
    mp = _OverridesParser(prog=f"featlab train {name}", description=f"Train the {METHODS[name][1]}.\n\n"
                          + (DESCRIPTION if name == "residual" else general + examples),
                          formatter_class=argparse.RawDescriptionHelpFormatter)
    mp.add_argument("-o", "--output", type=Path, required=True, metavar="RUN_DIR",
                    help="run folder: config, checkpoints, metrics.jsonl, TensorBoard logs, best weights")
    mp.add_argument("--config", type=Path, default=None,
                    help=f"experiment YAML (default: featlab/configs/{Path(mod.DEFAULT_CONFIG).name})")
    mp.add_argument("overrides", nargs="*", metavar="key=value",
                    help="config overrides, e.g. train.max_steps=5000 model.backbone=small")
    mp.add_argument("--resume", action="store_true",
                    help="continue the run in RUN_DIR from its last checkpoint (its saved config + overrides)")
    mp.add_argument("--export", default=None, metavar="NAME",
                    help="after training, copy the best weights to featlab/weights/NAME.safetensors "
                         "(+ .json), where `featlab extract --model NAME` finds them")
    mod.add_arguments(mp)
    return mp


def _flatten(conf: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in conf.items():
        if isinstance(v, dict) and v:
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _nested(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def recorded_overrides(run_dir: str | Path) -> dict:
    """The overrides earlier resumes recorded in ``RUN_DIR/resume_overrides.jsonl``, replayed in order."""
    path = Path(run_dir) / RESUME_LOG
    out: dict = {}
    if not path.is_file():
        return out
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            changes = {key: change["to"] for key, change in json.loads(line)["changes"].items()}
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise InputError(f"cannot read {path} line {n}: not a resume record written by featlab") from None
        for key, value in changes.items():
            out = deep_update(out, _nested(key, value))
    return out


def resume_changes(before, after) -> dict:
    """``{key: {"from": old, "to": new}}`` for the resolved values that differ between two configs.

    Raises:
        ConfigError: a changed key is not in :data:`RESUME_KEYS` (it could change what is trained or selected).
    """
    old, new = _flatten(to_container(before)), _flatten(to_container(after))
    changes = {k: {"from": old.get(k), "to": new.get(k)} for k in sorted(set(old) | set(new))
               if old.get(k) != new.get(k)}
    refused = [k for k in changes if k not in RESUME_KEYS]
    if refused:
        raise ConfigError(f"--resume cannot change {', '.join(refused)} (it would change the recipe of the run); "
                          f"allowed: {', '.join(RESUME_KEYS)}. Start a new run for other changes")
    return changes


def record_resume(run_dir: str | Path, changes: dict) -> Path | None:
    """Append one line ``{"time", "changes"}`` to ``RUN_DIR/resume_overrides.jsonl`` (rewritten atomically)."""
    if not changes:
        return None
    from ..io.atomic import atomic_write_text

    path = Path(run_dir) / RESUME_LOG
    old = path.read_text() if path.is_file() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "changes": changes}, default=str)
    return atomic_write_text(path, old + line + "\n")


def resolve_run_conf(mod, args):
    """The resolved config of a run and, on --resume, the changes the command line makes to it.

    New run: YAML + data arguments + overrides. ``--resume``: the run's ``config.yaml`` + the recorded resume
    overrides; the data arguments and overrides of this command may change only :data:`RESUME_KEYS`.

    Returns:
        (conf, changes): changes as :func:`resume_changes` ({} for a new run).
    """
    run_dir = Path(args.output)
    if args.resume:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise InputError(f"cannot resume: {saved} not found (is {run_dir} a training run folder?)")
        if args.config is not None:
            raise ConfigError("--config cannot be combined with --resume (the run's saved config is used; "
                              "pass key=value overrides instead, e.g. train.max_steps=...)")
        user = deep_update(load_yaml(saved), recorded_overrides(run_dir))
        before = resolve_conf(mod.default_conf, user)
        conf = resolve_conf(mod.default_conf, mod.apply_arguments(deep_update(user, parse_overrides(args.overrides)),
                                                                   args))
        return conf, resume_changes(before, conf)
    user = load_yaml_with_overrides(args.config or mod.DEFAULT_CONFIG, args.overrides)
    user = mod.apply_arguments(user, args)
    return resolve_conf(mod.default_conf, user), {}


def run(args) -> int:
    from ..datasets import splits  # registers ${featlab_data:...} before the method's YAML is read
    from ..training import distributed
    from ..training.loop import checkpoint_path, seed_everything, train

    mod = importlib.import_module(METHODS[args.method][0])
    args = method_parser(args.method, mod).parse_args(args.method_args)
    conf, changes = resolve_run_conf(mod, args)
    mod.check_conf(conf)
    splits.check_run(conf)
    if args.export is not None and hasattr(mod, "check_export"):
        mod.check_export(conf, args.export)  # fail on a bad name now, not after hours of training
    run_dir = Path(args.output)
    if not args.resume and checkpoint_path(run_dir).exists():
        raise InputError(f"{run_dir} already holds a training run; pass --resume to continue it or choose "
                         f"another output folder")
    # under torchrun: join the process group (gloo or NCCL by train.device); one process: nothing happens
    # (an error on one rank ends that process; torchrun then stops the others)
    main = distributed.setup(str(conf.train.device)).is_main
    seed_everything(int(conf.train.seed))  # before the model is built: its initial weights depend on the seed
    task = mod.build_task(conf)  # bad data or init files fail here, before anything is written
    if main:  # rank 0 writes the run folder
        run_dir.mkdir(parents=True, exist_ok=True)
        if args.resume:
            record_resume(run_dir, changes)  # config.yaml stays as the run was started
        else:
            save_conf(conf, run_dir / "config.yaml")
    summary = train(task, conf.train, run_dir, resume=args.resume, full_config=conf)
    distributed.shutdown()
    if not main:
        return 0
    print(json.dumps({k: v for k, v in summary.items() if k != "last_val"}, default=float))
    if summary.get("last_val"):
        print("last validation: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["last_val"].items()))
    if hasattr(mod, "after_training"):  # e.g. pose: held-out AUC before and after
        mod.after_training(task, run_dir)
    if args.export:
        dst = mod.export_weights(run_dir, args.export)
        print(f"exported best weights to {dst}")
    return 0
