"""Images: patches, the NMF image codec and image quality metrics."""

from sknmf.image._patches import ImagePatches

__all__ = ["ImagePatches"]
