"""The ``featlab`` command: one entry point, one subcommand per module in :mod:`featlab.commands`."""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import FeatlabError

#: subcommand modules in the order they appear in --help
COMMANDS = ["demo", "extract", "match", "merge", "reconstruct", "eval", "train", "curves", "models"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featlab",
        description="Train, run and benchmark local image features (keypoints + descriptors).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        importlib.import_module(f"featlab.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except FeatlabError as e:
        if args.verbose:
            raise
        print(f"featlab: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("featlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
