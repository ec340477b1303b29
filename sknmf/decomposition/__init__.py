"""Deep nonnegative matrix factorisation."""

from ._deep_nmf import DeepNMF, deep_nmf
from ._ranks import check_ranks

__all__ = ["DeepNMF", "check_ranks", "deep_nmf"]
