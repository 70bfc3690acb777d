"""Network building blocks shared by the learned extractors."""
from .mlp import MLP  # noqa: F401
from .superpoint import TrimmedSuperPoint, pad_to_multiple  # noqa: F401
from .resnet import ResNetEncoder  # noqa: F401
from .resunet import CAPSNet, ResUNet  # noqa: F401
from .fold import fold_batchnorm  # noqa: F401
