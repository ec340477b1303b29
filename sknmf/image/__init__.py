"""Images: patches, the NMF image codec and image quality metrics.

The public names are imported on first use (PEP 562), so reading a file's
header (``read_header``, ``sknmf info``) does not import torch.
"""

from __future__ import annotations

import importlib

# Public name -> the private module that defines it.
_PUBLIC = {
    "DecompressionBombError": "sknmf.image._format",
    "ImagePatches": "sknmf.image._patches",
    "bits_per_pixel": "sknmf.image._metrics",
    "compress": "sknmf.image._codec",
    "decompress": "sknmf.image._codec",
    "load": "sknmf.image._codec",
    "psnr": "sknmf.image._metrics",
    "read_header": "sknmf.image._format",
    "save": "sknmf.image._codec",
    "ssim": "sknmf.image._metrics",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
