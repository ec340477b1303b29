"""Where the fused kernels apply, and the torch paths used everywhere else.

These need neither a GPU nor triton: on CPU the HALS sweeps must stay the torch
reference path, and the GPU's torch fallback (stopping test read every few
sweeps) must do whole sweeps of the reference and stop within a few of its point.
"""

import numpy as np
import pytest
import torch

from sknmf._torch import kernels
from sknmf._torch.kernels import hals_sweep, reference_sweeps, usable
from sknmf._torch.solvers import hals
from sknmf._torch.solvers.hals import _scaled_system, _sweeps_checked_every


def _system(k=5, m=60, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(m, 15, generator=g, dtype=dtype)
    H = torch.rand(k, 15, generator=g, dtype=dtype)
    Wt = torch.rand(k, m, generator=g, dtype=dtype)
    Gs, Rs = _scaled_system(H @ H.T, (X @ H.T).T, 0.05, 0.1)
    return Wt, Gs, Rs


def test_cpu_sweeps_never_call_the_kernel(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("the fused kernel was called on CPU")

    monkeypatch.setattr(kernels, "fused_sweeps", boom)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # even where it could run
    g = torch.Generator().manual_seed(0)
    X = torch.rand(40, 12, generator=g, dtype=torch.float64)
    W = torch.rand(40, 3, generator=g, dtype=torch.float64)
    H = torch.rand(3, 12, generator=g, dtype=torch.float64)
    before = hals.frobenius_objective(X, W, H)
    hals.hals_step(X, W, H)
    assert hals.frobenius_objective(X, W, H) < before


def test_usable_refuses_what_the_kernel_does_not_support(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    F = torch.rand(4, 10)
    assert not usable(F)  # CPU tensor, no interpreter
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not usable(F.half())  # dtype
    assert not usable(torch.rand(300, 10))  # too many components for registers
    assert not usable(F, torch.rand(4, 4, dtype=torch.float64))  # mixed dtypes
    # Stubbed: importing the kernel now would compile it for the interpreter.
    monkeypatch.setattr(hals_sweep, "triton_available", lambda: False)
    assert not usable(F)
    monkeypatch.setattr(hals_sweep, "triton_available", lambda: True)
    assert usable(F) and usable(F.double())
    # The kernel's offsets are 32-bit: the span of a view decides.
    assert hals_sweep._span(torch.empty(2, 2**30, device="meta")) == 2**31
    assert hals_sweep._span(torch.empty(3, 5).T) == 15
    monkeypatch.setenv("SKNMF_FUSED_KERNELS", "0")
    assert not usable(F)


def test_fused_sweeps_without_triton_raises(monkeypatch):
    monkeypatch.setattr(hals_sweep, "triton_available", lambda: False)
    with pytest.raises(RuntimeError, match="needs triton"):
        hals_sweep.fused_sweeps(
            torch.rand(2, 3), torch.zeros(2, 2), torch.rand(2, 3), 1
        )


@pytest.mark.parametrize("max_inner", [1, 3, 20])
def test_gpu_fallback_does_reference_sweeps_and_stops_near_its_point(max_inner):
    Wt, Gs, Rs = _system()
    n_ref = reference_sweeps(Wt.clone(), Gs, Rs, max_inner, delta=hals._DELTA)
    F = Wt.clone()
    n = _sweeps_checked_every(F, Gs, Rs, max_inner, early_stop=True)
    assert n_ref <= n <= min(max_inner, n_ref + hals._CHECK_EVERY - 1)
    fixed = Wt.clone()
    reference_sweeps(fixed, Gs, Rs, n, early_stop=False)
    np.testing.assert_allclose(F.numpy(), fixed.numpy(), rtol=1e-12, atol=1e-15)


def test_gpu_fallback_without_early_stop_runs_the_full_count():
    Wt, Gs, Rs = _system(seed=1)
    F, fixed = Wt.clone(), Wt.clone()
    assert _sweeps_checked_every(F, Gs, Rs, 7, early_stop=False) == 7
    reference_sweeps(fixed, Gs, Rs, 7, early_stop=False)
    np.testing.assert_allclose(F.numpy(), fixed.numpy(), rtol=1e-12, atol=1e-15)
