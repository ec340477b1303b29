"""The fused HALS sweep: all ``k`` components of a block of columns in one launch.

HALS updates a ``k x m`` factor ``F`` (``W.T`` in the W block, ``H`` in the H block)
one component at a time, ``F[t] = max(0, Rs[t] - Gs[t] @ F)`` with ``Gs[t, t] = 0``
(the Gram matrix and the cross term pre-divided by the Gram diagonal, the
regularisation folded in by :func:`sknmf._torch.solvers.hals._scaled_system`). The
torch path does that as ``k`` matrix-vector products over all ``m`` columns per
sweep: ``2k`` kernel launches, each reading the whole factor. The columns are
independent given ``Gs`` and ``Rs`` (a row of W, a feature of H), so one Triton
program can take ``BLOCK_N`` of them through all ``k`` components in registers: one
launch per sweep, ``F`` read and written once.

The stopping rule is Gillis & Glineur's, as in ``_sweeps``: stop after the sweep
whose change ``||F_new - F_old||`` is at most ``delta`` times the first sweep's,
measured over the whole factor. The kernel stores each program's squared change,
a torch sum (deterministic, no atomics) gives the sweep's total, and the next
launch reads it and the first sweep's on the device: all programs skip together,
so a stopped solve costs only the remaining empty launches and the host never
waits. The rule is therefore evaluated exactly where the torch path on CUDA
evaluates it (one block covering all columns), up to the order of the sums.

:func:`reference_sweeps` is the torch reference of :func:`fused_sweeps` (same
arithmetic, same rule); :func:`usable` says when the kernel applies.
"""

from __future__ import annotations

import math
import os

import torch
from torch import Tensor

__all__ = ["fused_sweeps", "reference_sweeps", "triton_available", "usable"]

# Register budget of one program: the block (and its copy for the stopping test)
# lives in registers, BLOCK_K * BLOCK_N elements each. Beyond _MAX_K components
# the block spills: the torch path is used instead.
_MAX_K = 256
_ELEMS = {torch.float32: 4096, torch.float64: 2048}
_MIN_BLOCK_N = 16
# Tiles were checked free of register spills for sm_90 with 4 warps (ptxas of
# triton 3.9: 228 registers at 128 x 32 float32, 173 at 128 x 16 float64); the
# warps and tiles are not tuned on a GPU yet.
_NUM_WARPS = 4
# Aim for at least this many programs, so a narrow factor (the H block's
# n_features columns) still fills the streaming multiprocessors.
_MIN_PROGRAMS = 512

_kernel = None


def triton_available() -> bool:
    """Whether triton imports (cached after the first successful call)."""
    global _kernel
    if _kernel is None:
        try:
            from ._hals_sweep_triton import hals_sweep_kernel
        except ImportError:
            return False
        _kernel = hals_sweep_kernel
    return True


def _interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def usable(F: Tensor, Gs: Tensor | None = None, Rs: Tensor | None = None) -> bool:
    """Whether :func:`fused_sweeps` supports these tensors here.

    True for float32/float64 tensors with at most 256 components and fewer
    than ``2**31`` elements, on a CUDA
    device (or on CPU under ``TRITON_INTERPRET=1``), when triton imports and the
    environment does not set ``SKNMF_FUSED_KERNELS=0`` (the switch back to the
    torch path, for comparisons and as an escape hatch).
    """
    if os.environ.get("SKNMF_FUSED_KERNELS", "1") == "0":
        return False
    if F.dtype not in _ELEMS or F.dim() != 2 or F.shape[0] > _MAX_K:
        return False
    if any(T is not None and T.dtype != F.dtype for T in (Gs, Rs)):
        return False
    # The kernel's offsets are 32-bit.
    if any(T is not None and _span(T) >= 2**31 for T in (F, Rs)):
        return False
    if F.device.type != "cuda" and not (F.device.type == "cpu" and _interpreted()):
        return False
    return triton_available()


def _span(T: Tensor) -> int:
    """One past the largest element offset of a 2-D view."""
    return sum((n - 1) * st for n, st in zip(T.shape, T.stride())) + 1


def _tiles(k: int, m: int, dtype: torch.dtype) -> tuple[int, int]:
    block_k = max(2, 1 << (k - 1).bit_length())
    block_n = max(_MIN_BLOCK_N, _ELEMS[dtype] // block_k)
    while block_n > _MIN_BLOCK_N and -(-m // block_n) < _MIN_PROGRAMS:
        block_n //= 2
    return block_k, block_n


def fused_sweeps(
    F: Tensor,
    Gs: Tensor,
    Rs: Tensor,
    max_inner: int,
    *,
    delta: float = 0.3,
    early_stop: bool = True,
) -> int:
    """Up to ``max_inner`` HALS sweeps of ``F`` in place, one fused launch each.

    Parameters
    ----------
    F : Tensor of shape (k, m)
        Nonnegative factor, updated in place (any strides).
    Gs : Tensor of shape (k, k)
        Scaled Gram matrix with a zero diagonal (``_scaled_system``).
    Rs : Tensor of shape (k, m)
        Scaled cross term, regularisation folded in.
    max_inner : int
        Most sweeps.
    delta : float, default=0.3
        Stop after the sweep whose change is at most ``delta`` times the first's.
    early_stop : bool, default=True
        False runs exactly ``max_inner`` sweeps.

    Returns
    -------
    n_launched : int
        The sweeps launched, ``max_inner``: those after the stopping point are
        skipped on the device, and reading how many would synchronise.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.kernels import fused_sweeps, usable
    >>> usable(torch.rand(4, 100, dtype=torch.float16))  # no half kernel
    False
    """
    if not triton_available():
        raise RuntimeError("fused_sweeps needs triton: pip install sknmf[gpu]")
    k, m = F.shape
    if m == 0 or k == 0 or max_inner < 1:
        return 0
    block_k, block_n = _tiles(k, m, F.dtype)
    n_prog = -(-m // block_n)
    grid = (n_prog,)
    stop = bool(early_stop) and max_inner > 1
    dev = F.device
    if stop:
        partial = torch.zeros((max_inner, n_prog), dtype=F.dtype, device=dev)
        # changes[i] is sweep i+1's squared change; the last slot holds +inf, the
        # "previous change" the first launch sees (nothing to compare yet), so the
        # kernel does no index arithmetic.
        changes = torch.zeros(max_inner + 1, dtype=F.dtype, device=dev)
        changes[max_inner] = math.inf
    else:
        partial = changes = torch.zeros(1, dtype=F.dtype, device=dev)
    delta2 = float(delta) ** 2
    for it in range(1, max_inner + 1):
        prev = changes[it - 2] if stop and it >= 2 else changes[-1]
        _kernel[grid](
            F,
            Gs,
            Rs,
            partial[it - 1] if stop else partial,
            changes,
            prev,
            delta2,
            k,
            m,
            F.stride(0),
            F.stride(1),
            Gs.stride(0),
            Gs.stride(1),
            Rs.stride(0),
            Rs.stride(1),
            BLOCK_K=block_k,
            BLOCK_N=block_n,
            STOP=stop,
            num_warps=_NUM_WARPS,
        )
        if stop and it < max_inner:
            torch.sum(partial[it - 1], dim=0, out=changes[it - 1])
    return max_inner


def reference_sweeps(
    F: Tensor,
    Gs: Tensor,
    Rs: Tensor,
    max_inner: int,
    *,
    delta: float = 0.3,
    early_stop: bool = True,
) -> int:
    """The torch reference of :func:`fused_sweeps`: same sweeps, same stopping rule.

    Returns the number of sweeps done (this one reads the change on the host).

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.kernels import reference_sweeps
    >>> Gs = torch.tensor([[0.0, 0.5], [0.5, 0.0]], dtype=torch.float64)
    >>> Rs = torch.tensor([[1.0], [1.0]], dtype=torch.float64)
    >>> F = torch.zeros(2, 1, dtype=torch.float64)
    >>> reference_sweeps(F, Gs, Rs, 1)
    1
    >>> F.flatten().tolist()
    [1.0, 0.5]
    """
    first = None
    done = 0
    while done < max_inner:
        old = F.clone()
        for t in range(F.shape[0]):
            F[t] = torch.clamp(Rs[t] - Gs[t] @ F, min=0.0)
        done += 1
        if not early_stop:
            continue
        change = float(torch.sum((F - old) ** 2))
        if first is None:
            first = change
        if change <= delta * delta * first:
            break
    return done
