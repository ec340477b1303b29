"""Deep nonnegative matrix factorisation."""

from ._deep_nmf import DeepNMF, deep_nmf

__all__ = ["DeepNMF", "deep_nmf"]
