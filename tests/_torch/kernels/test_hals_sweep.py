"""The fused HALS sweep kernel against independent references.

Without a GPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1``,
set here before the kernel is first compiled); with one it runs on CUDA tensors.
The references are a numpy coordinate descent written from the unscaled problem
(so ``_scaled_system``'s folding of the penalties is checked too), the KKT
conditions of the regularised nonnegative least squares, and the torch
reference of the same stopping rule.
"""

import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    # Must precede the kernel's first import: triton.jit reads it when decorating.
    os.environ.setdefault("TRITON_INTERPRET", "1")

pytest.importorskip(
    "triton",
    reason="triton is not installed (pip install sknmf[gpu]): the fused kernels "
    "are not checked",
)

from sknmf._torch.kernels import fused_sweeps, reference_sweeps, usable  # noqa: E402
from sknmf._torch.solvers.hals import _scaled_system  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {
    torch.float32: dict(rtol=2e-5, atol=2e-6),
    torch.float64: dict(rtol=1e-12, atol=1e-14),
}


def _problem(k, m, p, dtype, seed=0, zero_component=False):
    """Codes block ``Wt`` (k x m) with the statistics of a random ``X`` and ``H``."""
    rng = np.random.default_rng(seed)
    X = rng.random((m, p))
    H = rng.random((k, p))
    if zero_component:
        H[1] = 0.0
    Wt = rng.random((k, m))
    return Wt, H @ H.T, H @ X.T


def _numpy_cd(Wt, G, R, l1, l2, n_sweeps):
    """Coordinate descent on 0.5 w'Gw - r'w + l1 sum(w) + 0.5 l2 |w|^2, w >= 0."""
    W = Wt.copy()
    for _ in range(n_sweeps):
        for t in range(W.shape[0]):
            denom = G[t, t] + l2
            if denom <= 0:
                continue
            rest = G[t] @ W - G[t, t] * W[t]
            W[t] = np.maximum(0.0, (R[t] - l1 - rest) / denom)
    return W


def _scaled(G, R, l1, l2, dtype):
    T = dict(dtype=dtype, device=DEVICE)
    return _scaled_system(torch.tensor(G, **T), torch.tensor(R, **T), l1, l2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "k, m, l1, l2", [(7, 50, 0.0, 0.0), (7, 50, 0.3, 0.5), (33, 20, 0.1, 0.0)]
)
def test_fixed_sweeps_match_numpy_coordinate_descent(dtype, k, m, l1, l2):
    Wt, G, R = _problem(k, m, 20, dtype, zero_component=l2 == 0.0)
    Gs, Rs = _scaled(G, R, l1, l2, dtype)
    F = torch.tensor(Wt, dtype=dtype, device=DEVICE)
    assert usable(F, Gs, Rs)
    n = fused_sweeps(F, Gs, Rs, 3, early_stop=False)
    assert n == 3
    expected = _numpy_cd(Wt, G, R, l1, l2, 3)
    np.testing.assert_allclose(F.cpu().numpy(), expected, **TOL[dtype])
    if l2 == 0.0:
        # A component whose Gram diagonal is zero is left as it was.
        np.testing.assert_allclose(F[1].cpu().numpy(), Wt[1], **TOL[dtype])


@pytest.mark.slow  # 100 interpreted launches: ~8 s each on a busy CPU
@pytest.mark.parametrize(
    "dtype, l1, l2", [(torch.float32, 0.0, 0.0), (torch.float64, 0.2, 0.4)]
)
def test_many_sweeps_reach_the_kkt_point(dtype, l1, l2):
    k, m = 4, 20
    Wt, G, R = _problem(k, m, 30, dtype, seed=1)
    Gs, Rs = _scaled(G, R, l1, l2, dtype)
    F = torch.tensor(Wt, dtype=dtype, device=DEVICE)
    fused_sweeps(F, Gs, Rs, 100, early_stop=False)
    W = F.cpu().numpy().astype(np.float64)
    assert (W >= 0).all()
    grad = G @ W - R + l1 + l2 * W
    scale = np.abs(R).max()
    tol = 1e-4 if dtype == torch.float32 else 1e-9
    # KKT of min over w >= 0: gradient >= 0 everywhere, = 0 where w > 0.
    assert grad.min() >= -tol * scale
    assert np.abs(grad[W > 1e-6 * W.max()]).max() <= tol * scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("l1, l2", [(0.0, 0.0), (0.1, 0.2)])
def test_early_stop_matches_the_torch_reference(dtype, l1, l2):
    # Wide H-block-like factor (few components, many programs) and a stop well
    # before the budget: the device-side test must stop where the host's does.
    k, m = 5, 40
    Wt, G, R = _problem(k, m, 12, dtype, seed=2)
    Gs, Rs = _scaled(G, R, l1, l2, dtype)
    F = torch.tensor(Wt, dtype=dtype, device=DEVICE)
    ref = F.clone()
    n_ref = reference_sweeps(ref, Gs, Rs, 20, delta=0.3)
    assert 1 < n_ref < 20
    fused_sweeps(F, Gs, Rs, 20, delta=0.3)
    torch.testing.assert_close(F, ref, **TOL[dtype])
    # One more sweep than the reference's count would have moved it.
    extra = torch.tensor(Wt, dtype=dtype, device=DEVICE)
    fused_sweeps(extra, Gs, Rs, n_ref + 1, early_stop=False)
    assert not torch.allclose(extra, ref, **TOL[dtype])


def test_strided_factor_is_updated_in_place():
    # The layout of H in the H block may be a view: any strides are honoured.
    k, m = 4, 50
    Wt, G, R = _problem(k, m, 10, torch.float64, seed=3)
    Gs, Rs = _scaled(G, R, 0.0, 0.0, torch.float64)
    base = torch.tensor(Wt.T.copy(), dtype=torch.float64, device=DEVICE)
    F = base.T  # (k, m) with column-major strides
    fused_sweeps(F, Gs, Rs, 2, early_stop=False)
    np.testing.assert_allclose(
        base.T.cpu().numpy(), _numpy_cd(Wt, G, R, 0.0, 0.0, 2), rtol=1e-12
    )


def test_hals_step_with_fused_sweeps_matches_the_torch_path(monkeypatch):
    # Both blocks of an outer iteration (W: samples, H: features) through the
    # kernel, with penalties, against the torch sweeps on the same problem
    # (small enough that the CPU path too tests the whole block at once).
    from sknmf._torch.solvers import hals

    g = torch.Generator().manual_seed(4)
    X = torch.rand(60, 30, generator=g, dtype=torch.float64)
    W0 = torch.rand(60, 4, generator=g, dtype=torch.float64)
    H0 = torch.rand(4, 30, generator=g, dtype=torch.float64)
    reg = dict(l1_reg_W=0.01, l2_reg_W=0.02, l1_reg_H=0.03, l2_reg_H=0.01)
    W_ref, H_ref = W0.clone(), H0.clone()
    for _ in range(2):
        hals.hals_step(X, W_ref, H_ref, **reg)

    def fused(F, Gs, Rs, max_inner, early_stop=True):
        return fused_sweeps(
            F, Gs, Rs, max_inner, delta=hals._DELTA, early_stop=early_stop
        )

    monkeypatch.setattr(hals, "_sweeps", fused)
    W, H = W0.clone().to(DEVICE), H0.clone().to(DEVICE)
    Xd = X.to(DEVICE)
    for _ in range(2):
        hals.hals_step(Xd, W, H, **reg)
    np.testing.assert_allclose(W.cpu().numpy(), W_ref.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(H.cpu().numpy(), H_ref.numpy(), rtol=1e-10, atol=1e-13)
