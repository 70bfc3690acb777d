"""featlab: train, run and benchmark learned local image features.

Layout: ``pixels`` (the pixel convention), ``conf`` (configs), ``geometry``, ``extractors`` (handcrafted, baselines,
learned), ``nn`` (network blocks), ``losses``, ``matching``, ``datasets``, ``training``, ``eval``, ``io``, ``cli``.
The data contract is documented in :mod:`featlab.extractors.base`.
"""
__version__ = "0.1.0"
