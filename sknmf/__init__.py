"""Deep nonnegative matrix factorization for scikit-learn, on PyTorch via skorch."""

__version__ = "0.1.0.dev0"

from .decomposition import DeepNMF, deep_nmf
from .image import ImagePatches
from .sequence import ExpressionRNN, FrameEncoder

__all__ = [
    "DeepNMF",
    "ExpressionRNN",
    "FrameEncoder",
    "ImagePatches",
    "__version__",
    "deep_nmf",
]
