"""The benchmark suite runs end to end on toy sizes (no timing is asserted)."""

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import data as bdata  # noqa: E402
from benchmarks import measure as bmeasure  # noqa: E402
from benchmarks import methods as bmethods  # noqa: E402
from benchmarks import run as brun  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Sparse CSR tensor support:UserWarning")


def test_instrumented_cd_is_sklearn_cd():
    """The reference loop stops where NMF(solver="cd") stops, at its error."""
    from sklearn.decomposition import NMF

    ds = bdata.synthetic(200, 30, 3)
    trace = bmethods.SklearnCD().trace(
        ds.X, 3, max_iter=500, max_seconds=np.inf, target=None, tol=1e-4
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = NMF(3, solver="cd", max_iter=500).fit(ds.X)
    assert trace.stopped == "converged"
    assert trace.iters[-1] == est.n_iter_
    assert trace.errors[-1] == pytest.approx(est.reconstruction_err_, rel=1e-10)
    # Errors are nonincreasing along coordinate descent, and the clock moves on.
    assert all(b <= a * (1 + 1e-12) for a, b in zip(trace.errors, trace.errors[1:]))
    assert all(b >= a for a, b in zip(trace.times, trace.times[1:]))


def test_error_helpers_agree():
    ds = bdata.sparse_tfidf(100, 60, 0.1, 4)
    rng = np.random.default_rng(0)
    W, H = rng.random((100, 4)), rng.random((4, 60))
    dense = np.linalg.norm(ds.X.toarray() - W @ H)
    assert bmethods.frobenius_error(ds.X, W, H) == pytest.approx(dense, rel=1e-9)
    assert bmethods.frobenius_error(ds.X.toarray(), W, H) == pytest.approx(dense)
    torch_err = bmethods.TorchError(ds.X)
    import torch

    assert torch_err(torch.from_numpy(W), torch.from_numpy(H)) == pytest.approx(
        dense, rel=1e-9
    )


def test_suite_runs_on_tiny_sizes(tmp_path, capsys):
    report = brun.main(
        [
            "--tiny",
            "--reps",
            "2",
            "--settle",
            "0.01",
            "--no-memory",
            "--datasets",
            "synthetic",
            "sparse",
            "--methods",
            "hals-float32",
            "sklearn-mu",
            "sklearn-minibatch",
            "--out",
            str(tmp_path),
        ]
    )
    out = capsys.readouterr().out
    assert "sklearn-cd" in out and "hals-float32" in out and "Targets" in out
    saved = json.loads((tmp_path / "results.json").read_text())
    assert (tmp_path / "error_vs_time.png").stat().st_size > 1000
    assert saved["machine"]["logical_cores"] >= 1
    assert {"torch-float32", "numpy-float64"} <= set(saved["matmul_peak_gflops"])
    names = [d["dataset"] for d in report["datasets"]]
    assert names == ["synthetic", "sparse"]
    for ds in saved["datasets"]:
        ref = ds["reference"]
        assert ref["target"] == pytest.approx(1.01 * ref["error"])
        hals = ds["methods"]["hals-float32"]
        # HALS is cd's algorithm: it gets to the target, and the timed runs
        # (fresh fits with that many iterations) really end below it.
        assert hals["iters_to_target"] is not None
        assert len(hals["times"]) == 2
        assert hals["final_error_ratio"] <= 1.01 + 1e-6
        assert hals["speedup_vs_cd"]["min"] <= hals["speedup_vs_cd"]["max"]
        assert hals["product_gflops"] > 0
        for e in ds["methods"].values():
            tr = e["trace"]
            assert len(tr["iters"]) == len(tr["times"]) == len(tr["errors"]) >= 1


def test_memory_is_measured_in_a_child(tmp_path):
    ds = bdata.synthetic(400, 50, 4)
    path = str(tmp_path / "X.npy")
    bmethods.save_matrix(ds.X, path)
    mem = bmeasure.measure_memory("hals-float32", path, 4, 5)
    assert "error" not in mem, mem
    assert mem["X_bytes"] == ds.X.astype(np.float32).nbytes
    assert mem["factors_bytes"] == (400 * 4 + 4 * 50) * 4
    assert mem["rss_peak_extra"] >= 0 and mem["tracemalloc_peak"] >= 0


@pytest.mark.filterwarnings("ignore:torch.chain_matmul is deprecated:UserWarning")
def test_torchnmf_adapter_runs_multiplicative_updates_from_the_shared_start():
    """torchnmf, started from the NNDSVDa factors every method gets, behaves like
    scikit-learn's multiplicative updates from that start (same rule; torchnmf
    updates the components before the codes, so the iterates differ slightly)."""
    pytest.importorskip("torchnmf")
    import scipy.sparse as sp
    from sklearn.decomposition import NMF

    ds = bdata.synthetic(300, 40, 4)
    method = bmethods.TorchNMF()
    assert method.available()
    X = method.prepare(ds.X)
    W0, H0 = bmethods._nndsvda(X, 4)
    start = bmethods.frobenius_error(X, W0, H0)
    W, H = method.fit(X, 4, 60)
    assert W.shape == (300, 4) and H.shape == (4, 40)
    assert (W >= 0).all() and (H >= 0).all()
    ours = bmethods.frobenius_error(X, W, H)
    ref = NMF(4, init="custom", solver="mu", max_iter=60, tol=0)
    W_ref = ref.fit_transform(
        X.astype(np.float64), W=W0.astype(np.float64), H=H0.astype(np.float64)
    )
    expected = bmethods.frobenius_error(X, W_ref, ref.components_)
    assert ours < start
    assert ours == pytest.approx(expected, rel=0.02)
    # The sparse path (a COO tensor) fits the same model.
    Xs = method.prepare(sp.csr_matrix(ds.X))
    Ws, Hs = method.fit(Xs, 4, 60)
    assert bmethods.frobenius_error(Xs, Ws, Hs) == pytest.approx(ours, rel=1e-3)


def test_deep_epoch_cost_runs():
    # The suite reports a failed measurement and goes on: this catches it here.
    X = np.random.RandomState(0).rand(60, 12)
    out = bmethods.deep_epoch_cost(X, 4, n_iter=3)
    assert out["one_layer"] > 0 and out["three_layers"] > 0


@pytest.mark.slow
def test_threads_benchmark_runs(tmp_path):
    from benchmarks import threads as bthreads

    argv = ["--cases", "tiny", "--reps", "1", "--conditions", "load"]
    rows = bthreads.main([*argv, "--out", str(tmp_path)])
    assert [r["condition"] for r in rows] == ["load"]
    for r in rows:
        assert set(r["median_seconds"]) == {"one", "default", "unsized"}
        assert all(t > 0 for t in r["median_seconds"].values())
    assert json.loads((tmp_path / "threads.json").read_text()) == rows
