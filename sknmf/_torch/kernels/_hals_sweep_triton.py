"""The Triton source of the fused HALS sweep (compiled only when triton is present).

Kept apart from :mod:`.hals_sweep` so that importing the package never imports
triton; see that module for the algorithm, the launch and the torch reference.
"""

from __future__ import annotations

try:
    import triton
    import triton.language as tl
except ImportError:
    # Importable without triton (doctest collection): the kernel is then absent
    # and hals_sweep.triton_available() is False.
    triton = None


def _kernel(
    F,
    Gs,
    Rs,
    partial,
    changes,
    prev_change,
    delta2,
    k,
    m,
    sf0,
    sf1,
    sg0,
    sg1,
    sr0,
    sr1,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    STOP: tl.constexpr,
):
    # One program owns BLOCK_N columns of F (k x m) and runs one Gauss-Seidel
    # sweep over all k components on them, the block held in registers: F is read
    # and written once per sweep instead of once per component.
    pid = tl.program_id(0)
    go = True
    if STOP:
        # The stopping test of the previous sweep, decided on the device: every
        # program reads the same two sums (the first sweep's change and the
        # previous one's; +inf before the second sweep), so all of them stop
        # together and no host synchronisation is needed. Sweeps skipped add
        # nothing to `changes`, so the later launches skip too.
        prev = tl.load(prev_change)
        first = tl.load(changes)
        go = prev > delta2 * first
    if go:
        rows = tl.arange(0, BLOCK_K)
        cols = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < k
        cmask = cols < m
        mask = rmask[:, None] & cmask[None, :]
        f = tl.load(F + rows[:, None] * sf0 + cols[None, :] * sf1, mask=mask, other=0.0)
        f0 = f
        for t in range(0, k):
            g = tl.load(Gs + t * sg0 + rows * sg1, mask=rmask, other=0.0)
            r = tl.load(Rs + t * sr0 + cols * sr1, mask=cmask, other=0.0)
            new = tl.maximum(r - tl.sum(g[:, None] * f, axis=0), 0.0)
            f = tl.where(rows[:, None] == t, new[None, :], f)
        tl.store(F + rows[:, None] * sf0 + cols[None, :] * sf1, f, mask=mask)
        if STOP:
            d = tl.where(mask, f - f0, 0.0)
            tl.store(partial + pid, tl.sum(tl.sum(d * d, axis=1), axis=0))


if triton is not None:
    hals_sweep_kernel = triton.jit(_kernel)
