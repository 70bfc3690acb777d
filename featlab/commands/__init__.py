"""CLI subcommands: each module defines ``register(subparsers)`` adding its parser with ``func=run``."""
