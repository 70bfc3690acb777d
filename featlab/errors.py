"""Errors that the CLI turns into a one-line message and a non-zero exit (no traceback)."""


class FeatlabError(Exception):
    """Base class of every error a user can cause (bad path, bad image, bad config...)."""

    exit_code = 2


class ConfigError(FeatlabError):
    """Unknown config key, bad value or unparsable config file."""


class InputError(FeatlabError):
    """Missing, unreadable or corrupt input (file, folder, image, model weights)."""


class GeometryError(FeatlabError):
    """Degenerate geometry: too few matches, NaN input, collinear points, ..."""
