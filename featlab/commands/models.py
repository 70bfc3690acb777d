"""``featlab models``: list the registered extractors, or show one extractor's resolved default settings.

Examples:
    featlab models
    featlab models rootsift
"""
from __future__ import annotations

import argparse


def register(sub):
    p = sub.add_parser("models", help="list the available extractors (or show one's settings)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("name", nargs="?", default=None, help="show the default settings of this extractor")
    p.set_defaults(func=run)


def run(args) -> int:
    from omegaconf import OmegaConf

    from ..extractors import available_extractors, build_extractor

    models = available_extractors()
    if args.name is None:
        width = max(map(len, models), default=0)
        for name, summary in models.items():
            print(f"{name:<{width}}  {summary}")
        return 0
    extractor = build_extractor(args.name)  # ConfigError listing the models for an unknown name
    print(f"{args.name}: {models[args.name]}")
    print(f"descriptors: {extractor.descriptor_type}")
    print(OmegaConf.to_yaml(extractor.conf).rstrip())
    return 0
