"""Multi-view geometry in featlab pixels (centre of the top-left pixel at (0.5, 0.5), see :mod:`featlab.pixels`).

- :mod:`.homography`: warping points / images by homographies, corner error.
- :mod:`.epipolar`: essential / fundamental matrices from poses, epipolar and Sampson distances.
- :mod:`.depth`: back-projection, projection, depth-based keypoint warping, covisibility.
- :mod:`.pose`: relative-pose errors and the pose AUC (numpy).
- :mod:`.robust`: robust H / F / relative-pose estimation with OpenCV USAC or PoseLib (numpy).

Torch functions are batched and always compute in float32/float64 (autocast disabled).
"""
from .depth import backproject, covisibility, project, sample_depth_nearest, transform_points, warp_points_depth
from .epipolar import (
    epipolar_distance,
    essential_from_pose,
    fundamental_from_essential,
    fundamental_from_pose,
    hartley_normalization,
    normalize_points,
    sampson_distance,
    skew,
)
from .homography import (
    from_homogeneous,
    homography_corner_error,
    image_corners,
    symmetric_transfer_error,
    to_homogeneous,
    warp_image_homography,
    warp_points_homography,
)
from .pose import angle_between_vectors, pose_auc, relative_pose_error, rotation_angle
from .robust import MIN_MATCHES, estimate_fundamental, estimate_homography, estimate_relative_pose

__all__ = [
    "MIN_MATCHES",
    "angle_between_vectors",
    "backproject",
    "covisibility",
    "epipolar_distance",
    "essential_from_pose",
    "estimate_fundamental",
    "estimate_homography",
    "estimate_relative_pose",
    "from_homogeneous",
    "fundamental_from_essential",
    "fundamental_from_pose",
    "hartley_normalization",
    "homography_corner_error",
    "image_corners",
    "normalize_points",
    "pose_auc",
    "project",
    "relative_pose_error",
    "rotation_angle",
    "sample_depth_nearest",
    "sampson_distance",
    "skew",
    "symmetric_transfer_error",
    "to_homogeneous",
    "transform_points",
    "warp_image_homography",
    "warp_points_depth",
    "warp_points_homography",
]
