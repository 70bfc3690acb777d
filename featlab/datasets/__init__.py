"""Datasets: synthetic homography pairs from photos, HPatches sequences, RGB-D sequences with poses, posed image
collections (COLMAP models, pose logs, the CAPS MegaDepth layout, rendered synthetic scenes; docs/DATASETS.md).

Every dataset returns plain dicts of numpy arrays (uint8 RGB images, float64 geometry in featlab pixels, see
:mod:`featlab.pixels`); the training and evaluation code turns them into the batched tensors of the data contract
(:mod:`featlab.extractors.base`). Datasets never return None: bad input raises a
:class:`~featlab.errors.FeatlabError` subclass.
"""
from .homographies import photometric_augment, sample_homography
from .hpatches import HPatches
from .rgbd import RGBDSequence
from .synthetic import SyntheticHomographyPairs
from .posed import PairSampler, PosedCollection, PosedPairs, from_rgbd
from .colmap import read_colmap
from .poselog import read_pose_log
from .megadepth import read_megadepth_caps
from .render import render_collection, write_7scenes

__all__ = ["HPatches", "RGBDSequence", "SyntheticHomographyPairs", "photometric_augment", "sample_homography",
           "PairSampler", "PosedCollection", "PosedPairs", "from_rgbd", "read_colmap", "read_pose_log",
           "read_megadepth_caps", "render_collection", "write_7scenes"]
