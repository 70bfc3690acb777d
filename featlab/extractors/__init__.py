"""Extractors behind one interface (see :mod:`featlab.extractors.base` for the data contract)."""
from .base import (Extractor, available_extractors, build_extractor, extract_image,  # noqa: F401
                   register_extractor)
