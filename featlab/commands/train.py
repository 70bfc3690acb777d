"""``featlab train METHOD``: train a learned method; one sub-subcommand per method.

Each method is a module of :mod:`featlab.training` listed in :data:`METHODS` (with a one-line summary) that
provides: ``DEFAULT_CONFIG`` (YAML path), ``default_conf``, ``add_arguments(parser)`` (its data arguments),
``apply_arguments(user_conf, args)``, ``check_conf(conf)``, ``build_task(conf)`` (a
:class:`featlab.training.loop.TrainingTask`), ``export_weights(run_dir, name)`` and optionally
``check_export(conf, name)``. Adding a method = writing that module and adding one line to :data:`METHODS`.
The module is imported only when its training runs (``featlab --help`` does not import torch). The common
arguments (``-o``, ``--config``, overrides, ``--resume``, ``--export``) are handled here; the loop is
:func:`featlab.training.loop.train`.

Examples::

    featlab train residual --photos photos/train --val-photos photos/test -o runs/residual-sift
    featlab train residual --photos A --photos B --val-photos V -o runs/small model.backbone=small train.max_steps=5000
    featlab train residual -o runs/residual-sift --resume                       # continue after an interruption
    featlab train residual -o runs/residual-sift --resume --export residual-sift  # copy best weights to featlab/weights
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import logging
from pathlib import Path

from ..conf import deep_update, load_yaml, load_yaml_with_overrides, parse_overrides, resolve_conf, save_conf
from ..errors import ConfigError, InputError
DESCRIPTION = """Every run writes into its folder (-o): the resolved config.yaml,
checkpoints/last.pt (model, optimiser, step, RNG states), metrics.jsonl (loss and validation metrics with step and
wall time), TensorBoard logs, and the best weights (by validation) as best.safetensors + best.json.

examples:
  featlab train residual --photos photos/train --val-photos photos/test -o runs/residual-sift
  featlab train residual --photos A --photos B --val-photos V -o runs/small model.backbone=small
  featlab train residual -o runs/residual-sift --resume                 # continue after an interruption
  featlab train residual -o runs/residual-sift --resume --export residual-sift  # ship the best weights
"""

#: method name -> (training module, one-line summary). Summaries live here so that building the CLI parser does
#: not import the training modules (and torch): `featlab --help` stays fast. Missing modules are skipped.
METHODS = {
    "residual": ("featlab.training.residual", "residual descriptor: handcrafted g + learned residual, "
                 "self-supervised on synthetic homographies"),
    "caps": ("featlab.training.caps", "CAPS descriptors supervised by relative camera poses only"),
    "scfeat": ("featlab.training.scfeat", "SCFeat detector + descriptor, weakly supervised by poses"),
    "depth": ("featlab.training.depth", "keypoints and descriptors learned on depth maps"),
}

logger = logging.getLogger(__name__)


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
    mp = _OverridesParser(prog=f"featlab train {name}", description=f"Train the {METHODS[name][1]}.\n\n"
                          + DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
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


def resolve_run_conf(mod, args):
    """The resolved config of a run: saved config on --resume, otherwise YAML + data arguments + overrides."""
    run_dir = Path(args.output)
    if args.resume:
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise InputError(f"cannot resume: {saved} not found (is {run_dir} a training run folder?)")
        if args.config is not None:
            raise ConfigError("--config cannot be combined with --resume (the run's saved config is used; "
                              "pass key=value overrides instead, e.g. train.max_steps=...)")
        user = deep_update(load_yaml(saved), parse_overrides(args.overrides))
    else:
        user = load_yaml_with_overrides(args.config or mod.DEFAULT_CONFIG, args.overrides)
    user = mod.apply_arguments(user, args)
    return resolve_conf(mod.default_conf, user)


def run(args) -> int:
    from ..training.loop import checkpoint_path, seed_everything, train

    mod = importlib.import_module(METHODS[args.method][0])
    args = method_parser(args.method, mod).parse_args(args.method_args)
    conf = resolve_run_conf(mod, args)
    mod.check_conf(conf)
    if args.export is not None and hasattr(mod, "check_export"):
        mod.check_export(conf, args.export)  # fail on a bad name now, not after hours of training
    run_dir = Path(args.output)
    if not args.resume and checkpoint_path(run_dir).exists():
        raise InputError(f"{run_dir} already holds a training run; pass --resume to continue it or choose "
                         f"another output folder")
    seed_everything(int(conf.train.seed))  # before the model is built: its initial weights depend on the seed
    task = mod.build_task(conf)  # bad data or init files fail here, before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    save_conf(conf, run_dir / "config.yaml")
    summary = train(task, conf.train, run_dir, resume=args.resume, full_config=conf)
    print(json.dumps({k: v for k, v in summary.items() if k != "last_val"}, default=float))
    if summary.get("last_val"):
        print("last validation: " + ", ".join(f"{k}={v:.4f}" for k, v in summary["last_val"].items()))
    if args.export:
        dst = mod.export_weights(run_dir, args.export)
        print(f"exported best weights to {dst}")
    return 0
