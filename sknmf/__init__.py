"""Deep nonnegative matrix factorization for scikit-learn, on PyTorch via skorch."""

__version__ = "0.1.0.dev0"

from .decomposition import DeepNMF, deep_nmf
from .sequence import ExpressionRNN, FrameEncoder

__all__ = ["DeepNMF", "ExpressionRNN", "FrameEncoder", "__version__", "deep_nmf"]
