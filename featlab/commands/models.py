"""``featlab models``: list the extractors that run here, the trainable recipes without weights yet, or show one
extractor's resolved default settings.

An extractor that reads a weights file is listed as runnable only when that file exists (a shipped file in
featlab/weights/, or a baseline's file in ../shared/data/weights/); the others are listed apart, as recipes that
`featlab train` can make (`featlab models NAME` prints the command), or as baselines whose weights file is missing.

Examples:
    featlab models
    featlab models rootsift
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub):
    p = sub.add_parser("models", help="list the available extractors (or show one's settings)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", default=None, help="show the default settings of this extractor")
    p.set_defaults(func=run)


def weights_file(name: str) -> Path | None:
    """The weights file that ``build_extractor(name)`` reads with its default settings (None: it reads none).

    Found without building the extractor (building loads the network: seconds for all of them on a laptop CPU).
    """
    from ..conf import checked, none_or
    from ..extractors.base import _REGISTRY, available_extractors
    from ..io.weights import resolve_weights_path

    available_extractors()  # registers the built-in extractors
    factory, preset, _ = _REGISTRY[name]
    defaults = getattr(factory, "default_conf", None)
    if not isinstance(defaults, dict) or "weights" not in defaults:
        return None
    default = defaults["weights"]
    default = default.default if isinstance(default, checked) else default
    weights = preset.get("weights", None if isinstance(default, none_or) else default)
    if weights:
        return resolve_weights_path(weights)
    kind = getattr(factory, "kind", None)
    if kind:  # comparison baselines: their default file in ../shared/data/weights
        from ..extractors.baselines import default_weights_path

        model_name = preset.get("model_name", defaults.get("model_name"))
        model_name = model_name.default if isinstance(model_name, checked) else model_name
        return default_weights_path(kind, model_name if isinstance(model_name, str) else None)
    return None


def run(args) -> int:
    from omegaconf import OmegaConf

    from ..errors import InputError
    from ..extractors import available_extractors, build_extractor
    from ..io.weights import SHIPPED_WEIGHTS_DIR

    models = available_extractors()
    if args.name is None:
        missing = {n: weights_file(n) for n in models}
        missing = {n: p for n, p in missing.items() if p is not None and not p.is_file()}
        ready = {n: s for n, s in models.items() if n not in missing}
        recipes = {n: s for n, s in models.items() if n in missing and missing[n].parent == SHIPPED_WEIGHTS_DIR}
        absent = {n: s for n, s in models.items() if n in missing and n not in recipes}
        width = max(map(len, models), default=0)
        for name, summary in ready.items():
            print(f"{name:<{width}}  {summary}")
        if recipes:
            print("\ntrainable recipes, no weights yet (`featlab models NAME` prints how to train one):")
            for name, summary in recipes.items():
                print(f"{name:<{width}}  {summary}")
        if absent:
            print("\nweights file missing (give weights=PATH):")
            for name in absent:
                print(f"{name:<{width}}  {missing[name]}")
        return 0
    if args.name in models:
        path = weights_file(args.name)
        if path is not None and not path.is_file():
            try:
                build_extractor(args.name)  # its own message says how to make the weights
                hint = f"weights file missing: {path}"
            except InputError as e:
                hint = str(e)
            print(f"{args.name}: {models[args.name]}")
            print(f"not runnable yet: {hint}")
            return 0
    extractor = build_extractor(args.name)  # ConfigError listing the models for an unknown name
    print(f"{args.name}: {models[args.name]}")
    print(f"descriptors: {extractor.descriptor_type}")
    print(OmegaConf.to_yaml(extractor.conf).rstrip())
    return 0
