"""Deep nonnegative matrix factorization for scikit-learn, on PyTorch via skorch."""

from .sequence import ExpressionRNN, FrameEncoder

__version__ = "0.1.0.dev0"

__all__ = ["__version__", "ExpressionRNN", "FrameEncoder"]
