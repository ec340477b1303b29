"""Fused GPU kernels (Triton) for the hot row-local work, beside their torch references.

This package owns the fused kernels and the precision knob of the big products:

- :mod:`.hals_sweep`: the HALS Gauss-Seidel sweep of a block of columns of a
  ``k x m`` factor through all ``k`` components in one launch (the W block's
  samples and the H block's features alike), with the torch reference it must
  match;
- :mod:`.precision`: :func:`~.precision.product_precision`, a scoped choice of
  TF32 or bfloat16 for the products that touch X (off by default).

Triton is optional (``pip install sknmf[gpu]``): nothing here imports it at module
import time, and every caller falls back to the torch path when it is missing, the
tensor is not on CUDA, or the kernel does not support the dtype or size
(:func:`.hals_sweep.usable`). Under ``TRITON_INTERPRET=1`` the kernels also run on
CPU tensors, which is how the tests check them without a GPU.
"""

from .hals_sweep import fused_sweeps, reference_sweeps, triton_available, usable
from .precision import PRECISIONS, current_precision, product_precision

__all__ = [
    "PRECISIONS",
    "current_precision",
    "fused_sweeps",
    "product_precision",
    "reference_sweeps",
    "triton_available",
    "usable",
]
