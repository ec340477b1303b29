"""Initialisation of a chunked target: randomized SVD and NNDSVD, local scheduler."""

import numpy as np
import pytest
import torch

from sknmf import DeepNMF

da = pytest.importorskip("dask.array")

from sknmf.distributed._cluster import Cluster  # noqa: E402
from sknmf.distributed._fit import load_rows  # noqa: E402
from sknmf.distributed._init import randomized_left  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def test_randomized_svd_of_chunks_matches_numpy():
    rng = np.random.default_rng(0)
    # Exactly rank 6: the range finder recovers the leading triplets to rounding.
    X = rng.random((300, 6)) @ rng.random((6, 40))
    rows = load_rows(da.from_array(X, chunks=(37, 40)), Cluster(None), "cpu", False)
    rows.codes = [None] * len(rows.xs)
    Ub, S, Vt = randomized_left(rows, 0, 4, torch.Generator().manual_seed(0), 40)
    _, S_ref, Vt_ref = np.linalg.svd(X, full_matrices=False)
    np.testing.assert_allclose(S.numpy(), S_ref[:4], rtol=1e-9)
    # Right singular vectors up to sign.
    np.testing.assert_allclose(
        np.abs(np.sum(Vt.numpy() * Vt_ref[:4], axis=1)), 1.0, rtol=1e-9
    )


@pytest.mark.parametrize("init", ["nndsvd", "nndsvda", "nndsvdar", "random"])
def test_inits_like_in_memory(init):
    rng = np.random.default_rng(1)
    # Rank 4 = n_components: the randomized SVD is exact there, as the
    # in-memory one (an eigendecomposition at this size) is.
    X = rng.random((200, 4)) @ rng.random((4, 15))
    params = dict(
        n_components=4, init=init, solver="mu", random_state=0, max_iter=1, tol=0
    )
    dist = DeepNMF(**params).fit(da.from_array(X, chunks=(30, 15)))
    local = DeepNMF(**params).fit(X)
    # One iteration from the start: the NNDSVD variants start from the same
    # SVD (to rounding); nndsvdar's and random's draws differ.
    rtol = 1e-6 if init in ("nndsvd", "nndsvda") else 0.1
    np.testing.assert_allclose(
        dist.reconstruction_err_, local.reconstruction_err_, rtol=rtol
    )
    if init in ("nndsvd", "nndsvda"):
        np.testing.assert_allclose(
            dist.components_, local.components_, rtol=1e-6, atol=1e-9
        )


def test_no_client_uses_the_local_scheduler():
    from sknmf.distributed._cluster import current_client

    assert current_client() is None
    X = np.random.default_rng(2).random((90, 10))
    model = DeepNMF((5, 2), random_state=0, max_iter=10).fit(
        da.from_array(X, chunks=30)
    )
    assert model.components_.shape == (2, 10)
    with pytest.raises(ValueError, match="batch_size"):
        DeepNMF(3, batch_size=10).fit(da.from_array(X, chunks=30))
    unknown = da.from_array(X, chunks=30)[da.from_array(X[:, 0] > 0.5, chunks=30)]
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        DeepNMF(3).fit(unknown)


def test_sparse_chunks_fit_like_in_memory():
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(3)
    dense = rng.random((160, 20)) * (rng.random((160, 20)) < 0.3)
    Xs = sp.csr_matrix(dense)
    Xd = da.from_array(dense, chunks=(20, 20)).map_blocks(sp.csr_matrix)
    W = rng.random((160, 4)) + 0.1
    H = rng.random((4, 20)) + 0.1
    for beta in ("frobenius", "kullback-leibler"):
        params = dict(
            n_components=4,
            init="custom",
            solver="mu",
            beta_loss=beta,
            max_iter=10,
            tol=0,
        )
        local = DeepNMF(**params).fit(Xs, W=W, H=H)
        dist = DeepNMF(**params).fit(Xd, W=W, H=H)
        np.testing.assert_allclose(dist.components_, local.components_, rtol=1e-6)


def test_dask_fit_evaluates_the_loss_only_where_it_is_read(monkeypatch):
    # As in memory (sknmf._torch.nets.loss_period): with tol > 0 and nobody
    # watching, the chunks compute their divergences only at the first and
    # last epochs and at the stopping rule's; the iterates do not change.
    from sknmf.distributed import _chunks

    calls = []
    original = _chunks.loss
    monkeypatch.setattr(
        _chunks, "loss", lambda *a: calls.append(1) or original(*a), raising=True
    )
    rng = np.random.default_rng(5)
    X = rng.random((80, 12))
    W = rng.random((80, 3)) + 0.1
    H = rng.random((3, 12)) + 0.1
    params = dict(
        n_components=3,
        init="custom",
        solver="mu",
        beta_loss="kullback-leibler",
        max_iter=25,
        tol=1e-12,
    )
    local = DeepNMF(**params).fit(X, W=W, H=H)
    dist = DeepNMF(**params).fit(da.from_array(X, chunks=(20, 12)), W=W, H=H)
    epochs = [h["epoch"] for h in dist.history_ if "error" in h]
    assert epochs == [1, 10, 20, 25]
    assert epochs == [h["epoch"] for h in local.history_ if "error" in h]
    assert len(calls) == 4 * 4  # four epochs, four chunks
    assert np.isnan(dist.history_[:, "train_loss"]).sum() == 21
    np.testing.assert_allclose(dist.components_, local.components_, rtol=1e-6)
    np.testing.assert_allclose(
        dist.history_[-1, "error"], local.history_[-1, "error"], rtol=1e-6
    )


def test_sparse_chunks_hals_fit_like_in_memory():
    # HALS on CSR chunks of very different densities: the codes' sweep budget
    # reads the nonzeros of the whole matrix (handed to every chunk) and the
    # sweep counts are decided on the first 1024 rows (hals._sample_columns),
    # which Dask's rechunk gathers from chunks 0-2 into one chunk.
    sp = pytest.importorskip("scipy.sparse")
    rng = np.random.default_rng(4)
    density = np.repeat([0.05, 0.6, 0.2, 0.9], 400)[:, None]
    dense = rng.random((1600, 60)) * (rng.random((1600, 60)) < density)
    Xs = sp.csr_matrix(dense)
    Xd = da.from_array(dense, chunks=(400, 60)).map_blocks(sp.csr_matrix)
    W = rng.random((1600, 4)) + 0.1
    H = rng.random((4, 60)) + 0.1
    params = dict(n_components=4, init="custom", solver="hals", max_iter=20, tol=0)
    local = DeepNMF(**params).fit(Xs, W=W, H=H)
    dist = DeepNMF(**params).fit(Xd, W=W, H=H)
    np.testing.assert_allclose(dist.components_, local.components_, rtol=1e-6)
    np.testing.assert_allclose(
        dist.reconstruction_err_, local.reconstruction_err_, rtol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(dist.history_[:, "train_loss"], dtype=float),
        np.asarray(local.history_[:, "train_loss"], dtype=float),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    "chunks, rows, expected",
    [
        ((184,) * 8, 1024, (1024, 80, 184, 184)),  # leading chunks merged, one split
        ((1024,) + (64,) * 7, 1024, (1024,) + (64,) * 7),  # already so
        ((3000, 1000), 1024, (1024, 1976, 1000)),  # the first chunk split
        ((184,) * 8, 5000, (1472,)),  # fewer rows than the sample: one chunk
        ((184,) * 8, 0, (184,) * 8),  # no shared decision: the user's chunks
    ],
)
def test_sample_first_puts_the_leading_rows_in_chunk_0(chunks, rows, expected):
    from sknmf.distributed._fit import sample_first

    X = np.arange(sum(chunks) * 3, dtype=float).reshape(-1, 3)
    Xs = sample_first(da.from_array(X, chunks=(chunks, 3)), rows)
    assert Xs.chunks[0] == expected
    np.testing.assert_array_equal(Xs.compute(), X)
