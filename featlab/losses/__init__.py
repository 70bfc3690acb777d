"""Losses: pure functions of tensors, each with a thin configured wrapper."""
from .triplet import TripletLoss, pairwise_distances, triplet_loss  # noqa: F401
