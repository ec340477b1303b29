"""Sequence models over encoded frames: ExpressionRNN and FrameEncoder."""

from ._expression_rnn import ExpressionRNN
from ._frame_encoder import FrameEncoder

__all__ = ["ExpressionRNN", "FrameEncoder"]
