"""Benchmarks of local features: homography (HPatches / synthetic warps), relative pose (RGB-D), speed.

Each benchmark runs two loops, as glue-factory does: features are extracted once per image and cached
(:mod:`featlab.eval.cache`), then every pair is scored from the cache with the pure functions of
:mod:`featlab.eval.metrics`. Outputs (:mod:`featlab.eval.report`): a results JSON with every number and the
resolved config, a Markdown table and a plot. The command line is ``featlab eval hpatches|relpose|speed``.
"""
from .metrics import (corner_error, homography_accuracy, match_indices, matching_score, mma,  # noqa: F401
                      pose_auc, pose_error, repeatability, reprojection_errors)
