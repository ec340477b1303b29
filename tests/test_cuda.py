"""GPU checks: run wherever CUDA is present, skipped (visibly) elsewhere.

The CPU results are the reference: the same algorithm on the same data must give
the same factors on the GPU, up to the reordering of floating-point sums.
"""

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_digits

from sknmf import DeepNMF

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning"),
]


@pytest.fixture(scope="module")
def X():
    return load_digits().data[:500].astype(np.float64)


@pytest.mark.parametrize("n_components", [8, (16, 8, 4)])
@pytest.mark.parametrize("beta_loss", ["frobenius", "kullback-leibler"])
def test_cuda_matches_cpu_float64(X, n_components, beta_loss):
    kw = dict(beta_loss=beta_loss, max_iter=30, tol=0, random_state=0)
    cpu = DeepNMF(n_components, device="cpu", **kw).fit(X)
    gpu = DeepNMF(n_components, device="cuda", **kw).fit(X)
    # Deep models amplify the reordering of sums over 30 iterations (seen: 1.4e-6).
    rel = 1e-6 if isinstance(n_components, int) else 1e-5
    assert gpu.reconstruction_err_ == pytest.approx(cpu.reconstruction_err_, rel=rel)
    deep = not isinstance(n_components, int)
    # Components of deep models have unit row sums: compare entries absolutely.
    tol = dict(rtol=0, atol=5e-4) if deep else dict(rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(gpu.components_, cpu.components_, **tol)
    Z = gpu.transform(X)
    assert isinstance(Z, np.ndarray) and Z.dtype == np.float64
    Z_cpu = cpu.transform(X)
    if deep:
        # 30 unconverged iterations of a nonconvex deep solve: codes may differ
        # where the loss is flat, so compare how well they rebuild X.
        err_gpu = np.linalg.norm(X - gpu.inverse_transform(Z))
        err_cpu = np.linalg.norm(X - cpu.inverse_transform(Z_cpu))
        assert err_gpu == pytest.approx(err_cpu, rel=1e-3)
    else:
        np.testing.assert_allclose(Z, Z_cpu, rtol=1e-4, atol=1e-6)


def test_cuda_float32_sparse_and_adam(X):
    X32 = X.astype(np.float32)
    # Same input kind on both sides: HALS sizes its inner sweeps by sparsity.
    Xs = sp.csr_matrix(X32)
    gpu = DeepNMF(8, device="cuda", max_iter=20, random_state=0).fit(Xs)
    cpu = DeepNMF(8, device="cpu", max_iter=20, random_state=0).fit(Xs)
    assert gpu.components_.dtype == np.float32
    assert gpu.reconstruction_err_ == pytest.approx(cpu.reconstruction_err_, rel=1e-3)
    adam = DeepNMF(
        8, solver="adam", batch_size=128, max_epochs=5, device="cuda", random_state=0
    ).fit(X32)
    assert np.isfinite(adam.components_).all() and (adam.components_ >= 0).all()


def test_cuda_model_pickles_and_predicts_on_cpu(X):
    import pickle

    gpu = DeepNMF((8, 4), device="cuda", max_iter=10, random_state=0).fit(X)
    clone = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_allclose(clone.transform(X), gpu.transform(X))
    cpu_copy = pickle.loads(pickle.dumps(gpu)).set_params(device="cpu")
    np.testing.assert_allclose(cpu_copy.transform(X), gpu.transform(X), rtol=1e-5)


def _fused_available():
    import torch

    from sknmf._torch.kernels import usable

    return torch.cuda.is_available() and usable(torch.zeros(2, 2, device="cuda"))


@pytest.mark.parametrize("dtype_name", ["float32", "float64"])
def test_cuda_fused_sweeps_match_cpu_reference_without_host_sync(
    dtype_name, monkeypatch
):
    # The HALS sweeps on CUDA go through the fused kernel (when triton imports)
    # and never wait for the device; their result is the CPU reference's.
    import torch

    from sknmf._torch import kernels
    from sknmf._torch.kernels import reference_sweeps
    from sknmf._torch.solvers import hals

    if not _fused_available():
        pytest.skip("triton is not installed: the fused kernel is not checked")
    dtype = getattr(torch, dtype_name)
    calls = []
    real = kernels.fused_sweeps

    def spy(*args, **kwargs):
        calls.append(args[0].shape)
        return real(*args, **kwargs)

    monkeypatch.setattr(kernels, "fused_sweeps", spy)
    g = torch.Generator().manual_seed(0)
    k, m, p = 100, 5000, 300
    X = torch.rand(m, p, generator=g, dtype=torch.float64)
    H = torch.rand(k, p, generator=g, dtype=torch.float64)
    Wt = torch.rand(k, m, generator=g, dtype=torch.float64)
    Gs, Rs = hals._scaled_system(H @ H.T, (X @ H.T).T, 0.01, 0.02)
    # The reference in the same dtype, so both take the same stopping decisions.
    ref = Wt.to(dtype).clone()
    reference_sweeps(ref, Gs.to(dtype), Rs.to(dtype), 12, delta=hals._DELTA)
    F = Wt.to(dtype).cuda()
    Gs_d, Rs_d = Gs.to(dtype).cuda(), Rs.to(dtype).cuda()
    hals._sweeps(F, Gs_d, Rs_d, 12)  # compiles the kernel
    F = Wt.to(dtype).cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        hals._sweeps(F, Gs_d, Rs_d, 12)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert len(calls) == 2
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    np.testing.assert_allclose(
        F.double().cpu().numpy(), ref.numpy(), rtol=tol, atol=tol
    )


def test_cuda_torch_fallback_and_tf32_reach_the_same_error(X, monkeypatch):
    # The torch sweeps (kernel switched off) and TF32 products: same model quality.
    from sknmf._torch.kernels.precision import product_precision

    X32 = X.astype(np.float32)
    kw = dict(max_iter=50, tol=0, random_state=0, device="cuda")
    base = DeepNMF(8, **kw).fit(X32).reconstruction_err_
    monkeypatch.setenv("SKNMF_FUSED_KERNELS", "0")
    fallback = DeepNMF(8, **kw).fit(X32).reconstruction_err_
    monkeypatch.delenv("SKNMF_FUSED_KERNELS")
    with product_precision("tf32"):
        tf32 = DeepNMF(8, **kw).fit(X32).reconstruction_err_
    assert fallback == pytest.approx(base, rel=1e-2)
    assert tf32 == pytest.approx(base, rel=1e-2)
