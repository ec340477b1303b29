"""Deep nonnegative matrix factorization for scikit-learn, on PyTorch via skorch."""

__version__ = "0.1.0.dev0"

from sknmf.image import ImagePatches  # noqa: E402

__all__ = ["ImagePatches", "__version__"]
