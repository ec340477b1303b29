"""The precision of the big products, as the user's choice (off by default).

HALS spends its products on ``X @ H.T`` and ``W.T @ X``; on a GPU they run several
times faster with TF32 tensor cores (10-bit mantissa inputs, float32 accumulation)
or bfloat16 inputs (8-bit mantissa, float32 accumulation). The package never
lowers precision on its own; :func:`product_precision` is the scoped request:

- ``"highest"`` (default): products in the data's dtype;
- ``"tf32"``: every float32 CUDA matrix product in the scope may use TF32 (torch's
  own switch, set on entry and restored on exit; the small Gram matrices included;
  no effect on CPU or on float64);
- ``"bf16"``: the products that touch X (through :func:`matmul`) round float32
  dense operands to bfloat16 and accumulate and return float32 (tensor cores on
  CUDA through ``torch.mm(..., out_dtype=torch.float32)``; emulated, without a
  speed-up, where torch lacks it); each product then makes a bfloat16 copy of X
  (half its size, freed after the product). Float64 and sparse data are left in
  their precision.

Measured on CPU (4000 x 500 planted rank-20 matrix, k=20, float32 HALS from
nndsvda): float32 products reach scikit-learn cd's error +1% in 16 iterations and
0.9967 x cd's error after 300; bfloat16 inputs also in 16, 0.9970 x after 300;
TF32 inputs (emulated by rounding) 16 and 0.9967. Rounding the products' *outputs*
to bfloat16 instead stalls at 1.037 x cd's error: never do that.

The setting is a :class:`contextvars.ContextVar`, so threads and tasks keep their
own. The facade would expose it as a parameter that wraps ``fit``, ``transform``
and ``partial_fit`` in this context.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

import torch
from torch import Tensor

__all__ = ["PRECISIONS", "current_precision", "matmul", "product_precision"]

PRECISIONS = ("highest", "tf32", "bf16")

_PRECISION: contextvars.ContextVar[str] = contextvars.ContextVar(
    "sknmf_product_precision", default="highest"
)


def current_precision() -> str:
    """The precision in force: one of ``PRECISIONS``."""
    return _PRECISION.get()


def _tf32_state():
    matmul_backend = torch.backends.cuda.matmul
    if hasattr(matmul_backend, "fp32_precision"):
        return "fp32_precision", matmul_backend.fp32_precision
    return "allow_tf32", matmul_backend.allow_tf32


@contextlib.contextmanager
def product_precision(precision: str = "highest") -> Iterator[str]:
    """Run the enclosed products at ``precision``; restores the previous setting.

    Parameters
    ----------
    precision : {"highest", "tf32", "bf16"}, default="highest"
        See the module docstring.

    Yields
    ------
    precision : str
        The precision in force inside the scope.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.kernels.precision import (
    ...     current_precision, matmul, product_precision)
    >>> A = torch.full((2, 3), 1.0 / 3.0)
    >>> with product_precision("bf16"):
    ...     current_precision(), matmul(A, A.T).dtype
    ('bf16', torch.float32)
    >>> current_precision()
    'highest'
    """
    if precision not in PRECISIONS:
        raise ValueError(
            f"precision must be one of {PRECISIONS}; got {precision!r}. Use "
            "'highest' for products in the data's dtype."
        )
    token = _PRECISION.set(precision)
    name, saved = _tf32_state()
    try:
        if precision == "tf32":
            setattr(
                torch.backends.cuda.matmul,
                name,
                "tf32" if name == "fp32_precision" else True,
            )
        yield precision
    finally:
        setattr(torch.backends.cuda.matmul, name, saved)
        _PRECISION.reset(token)


def matmul(A: Tensor, B: Tensor, *, out: Tensor | None = None) -> Tensor:
    """``A @ B`` at the precision in force (dense operands; ``out`` as torch's).

    Only ``"bf16"`` changes what this computes; TF32 is torch's own switch.
    """
    if (
        _PRECISION.get() == "bf16"
        and A.dtype == torch.float32
        and B.dtype == torch.float32
        and A.layout == torch.strided
        and B.layout == torch.strided
    ):
        prod = _bf16_matmul(A, B)
        if out is None:
            return prod
        return out.copy_(prod)
    return torch.matmul(A, B) if out is None else torch.matmul(A, B, out=out)


def _bf16_matmul(A: Tensor, B: Tensor) -> Tensor:
    a, b = A.to(torch.bfloat16), B.to(torch.bfloat16)
    if A.device.type == "cuda" and A.dim() == 2 and B.dim() == 2:
        # Tensor cores: bfloat16 inputs, float32 accumulation and output.
        try:
            return torch.mm(a, b, out_dtype=torch.float32)
        except (TypeError, RuntimeError, NotImplementedError):
            pass
    # Elsewhere the same arithmetic, emulated: the inputs rounded to bfloat16, the
    # product in float32. A bfloat16 output would round every entry of the cross
    # terms to 8 bits, which on its own moved the reached error by 4% (below).
    return torch.matmul(a.to(torch.float32), b.to(torch.float32))
