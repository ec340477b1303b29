"""Deep nonnegative matrix factorization for scikit-learn, on PyTorch via skorch.

The public names are imported on first use (PEP 562): ``import sknmf`` and
``sknmf.__version__`` stay cheap (no torch), so the ``sknmf`` command answers
``--help`` at once; ``from sknmf import DeepNMF`` and ``sknmf.DeepNMF`` work as
usual. Pickles name the defining modules (``sknmf.decomposition._deep_nmf``), not
this one, so they load the same either way.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0.dev0"

# Public name -> the subpackage that defines it.
_PUBLIC = {
    "DeepNMF": "sknmf.decomposition",
    "deep_nmf": "sknmf.decomposition",
    "ImagePatches": "sknmf.image",
    "ExpressionRNN": "sknmf.sequence",
    "FrameEncoder": "sknmf.sequence",
}
# Subpackages reachable as attributes after a bare ``import sknmf``, as they were
# when this module imported them eagerly.
_SUBPACKAGES = ("datasets", "decomposition", "distributed", "image", "sequence")

__all__ = [
    "DeepNMF",
    "ExpressionRNN",
    "FrameEncoder",
    "ImagePatches",
    "__version__",
    "deep_nmf",
]


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(_PUBLIC[name]), name)
    elif name in _SUBPACKAGES:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | set(_SUBPACKAGES))
