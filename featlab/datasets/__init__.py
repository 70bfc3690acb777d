"""Datasets: synthetic homography pairs from photos, HPatches sequences, RGB-D sequences with poses.

Every dataset returns plain dicts of numpy arrays (uint8 RGB images, float64 geometry in featlab pixels, see
:mod:`featlab.pixels`); the training and evaluation code turns them into the batched tensors of the data contract
(:mod:`featlab.extractors.base`). Datasets never return None: bad input raises a
:class:`~featlab.errors.FeatlabError` subclass.
"""
from .homographies import photometric_augment, sample_homography
from .hpatches import HPatches
from .rgbd import RGBDSequence
from .synthetic import SyntheticHomographyPairs

__all__ = ["HPatches", "RGBDSequence", "SyntheticHomographyPairs", "photometric_augment", "sample_homography"]
