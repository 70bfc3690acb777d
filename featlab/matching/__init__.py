"""Descriptor matching (nearest neighbour with mutual / ratio / distance filters, float or binary descriptors)."""
from .nearest_neighbor import Matcher, match_descriptors, matches_to_indices, unpack_bits_pm1  # noqa: F401
