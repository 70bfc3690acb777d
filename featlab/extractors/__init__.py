"""Extractors behind one interface (see :mod:`featlab.extractors.base` for the data contract)."""
from .base import (Extractor, available_extractors, build_extractor, extract_depth, extract_image,  # noqa: F401
                   register_extractor)
from . import depthkp  # noqa: F401,E402  registers "depthkp" (depth maps; featlab/extractors/depthkp.py)
