"""The ``featlab`` command: one entry point, one subcommand per module in :mod:`featlab.commands`."""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys

from .errors import FeatlabError

#: subcommand modules in the order they appear in --help
COMMANDS = ["demo", "extract", "match", "merge", "reconstruct", "eval", "train", "curves", "models"]


_ROLE = re.compile(r":[a-z]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")  # :func:`a.b` / :class:`~a.B` / :ref:`text <x>`


def plain_text(text: str | None) -> str | None:
    """reStructuredText markup of docstrings made readable in a terminal: ``code`` -> code, :func:`a.b` -> a.b,
    :class:`~a.B` -> B, "Examples::" -> "Examples:". The module docstrings serve as --help descriptions."""
    if not text:
        return text

    def role(m):
        target = m.group(1).strip()
        return target.rsplit(".", 1)[-1] if m.group(0).split("`", 1)[1].startswith("~") else target

    text = _ROLE.sub(role, text)
    text = re.sub(r"``([^`]+)``", r"\1", text)
    return re.sub(r"::(\s*\n)", r":\1", text)


def _plain_help(parser: argparse.ArgumentParser) -> None:
    """Apply :func:`plain_text` to a parser's description and option helps, and to its subcommands'."""
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        if action.help not in (None, argparse.SUPPRESS):
            action.help = plain_text(action.help)
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                _plain_help(sub)


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
    _plain_help(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args) or 0)
    except FeatlabError as e:
        if args.verbose and not getattr(e, "hard_exit", False):
            raise
        print(f"featlab: error: {e}", file=sys.stderr)
        if getattr(e, "hard_exit", False):  # a library is left in a state where exiting normally would crash
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.exit_code)
        return e.exit_code
    except KeyboardInterrupt:
        print("featlab: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
