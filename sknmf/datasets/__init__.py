"""Data sets: synthetic facial-expression videos and a loader for folders of frames."""

from ._expressions import load_expression_folder, make_expression_videos

__all__ = ["load_expression_folder", "make_expression_videos"]
