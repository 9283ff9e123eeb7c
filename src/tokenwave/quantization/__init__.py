"""Vector quantizers."""

from .rvq import EuclideanCodebook, ResidualVectorQuantizer, VectorQuantizer

__all__ = ["EuclideanCodebook", "ResidualVectorQuantizer", "VectorQuantizer"]
