"""Images: patches, the NMF image codec and image quality metrics."""

from sknmf.image._codec import (
    DecompressionBombError,
    compress,
    decompress,
    load,
    read_header,
    save,
)
from sknmf.image._metrics import bits_per_pixel, psnr, ssim
from sknmf.image._patches import ImagePatches

__all__ = [
    "DecompressionBombError",
    "ImagePatches",
    "bits_per_pixel",
    "compress",
    "decompress",
    "load",
    "psnr",
    "read_header",
    "save",
    "ssim",
]
