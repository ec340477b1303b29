"""DeepNMF.fit on Dask arrays, on a LocalCluster of 2 worker processes.

The reference is the in-memory fit from the same factors: the distributed
iteration is the same solver protocol with the statistics summed over chunks,
so the two agree to rounding. One cluster serves the whole module (starting one
takes seconds); the module is slow on a loaded 2-core machine.
"""

import os
import pickle
import signal

import numpy as np
import pytest
from skorch.callbacks import Callback

from sknmf import DeepNMF

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings(
        "ignore::sklearn.exceptions.ConvergenceWarning",
        "ignore::DeprecationWarning",
        "ignore::ResourceWarning",
        "ignore::UserWarning",
    ),
]

N, P = 400, 30


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


@pytest.fixture(scope="module")
def X():
    return np.random.default_rng(0).random((N, P))


def _custom(ranks, seed=1):
    rng = np.random.default_rng(seed)
    rr = [ranks] if isinstance(ranks, int) else list(ranks)
    widths = [P, *rr[:-1]]
    W = [rng.random((N, r)) + 0.1 for r in rr]
    H = [rng.random((r, w)) + 0.1 for r, w in zip(rr, widths)]
    return (W[0], H[0]) if isinstance(ranks, int) else (W, H)


def _chunked(X):
    return da.from_array(X, chunks=(N // 8, P))  # 8 row chunks


@pytest.mark.parametrize(
    "ranks, beta, loss",
    [
        (5, "frobenius", "layer"),
        ((8, 5, 3), "frobenius", "layer"),
        (5, "kullback-leibler", "layer"),
        ((8, 5, 3), "kullback-leibler", "layer"),
        ((8, 5, 3), "kullback-leibler", "data"),
        ((8, 5, 3), "itakura-saito", "data"),
    ],
)
def test_fit_equals_in_memory_fit(client, X, ranks, beta, loss):
    W, H = _custom(ranks)
    params = dict(
        n_components=ranks,
        init="custom",
        solver="mu",
        beta_loss=beta,
        loss=loss,
        max_iter=15,
        tol=0,
        alpha_W=0.01,
        alpha_H=0.02,
        l1_ratio=0.5,
    )
    if not isinstance(ranks, int):
        params["pretrain_max_iter"] = 5
    Xp = X + 0.05 if beta == "itakura-saito" else X
    local = DeepNMF(**params).fit(Xp, W=W, H=H)
    dist = DeepNMF(**params).fit(_chunked(Xp), W=W, H=H)
    for a, b in zip(local.layer_components_, dist.layer_components_):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())
    assert dist.n_iter_ == local.n_iter_
    np.testing.assert_allclose(
        dist.reconstruction_err_, local.reconstruction_err_, rtol=1e-6
    )
    np.testing.assert_allclose(dist.layer_errors_, local.layer_errors_, rtol=1e-6)
    np.testing.assert_allclose(dist.layer_weights_, local.layer_weights_, rtol=1e-6)
    # The same skorch loop: one history row per distributed iteration.
    np.testing.assert_allclose(
        dist.history_[:, "error"], local.history_[:, "error"], rtol=1e-6
    )
    # An ordinary fitted model: numpy in, numpy out.
    np.testing.assert_allclose(
        dist.transform(Xp), local.transform(Xp), rtol=1e-5, atol=1e-8
    )


# HALS decides its codes' sweep counts on the first rows of the data (1024
# here: hals._sample_columns), so its data must have more rows than that for
# 8 chunks to matter; rows of very different scales make chunks that decided
# on their own take other steps.
N_HALS = 1024 + 7 * 64


def _hals_data():
    rng = np.random.default_rng(2)
    return rng.random((N_HALS, P)) * rng.random((N_HALS, 1)) ** 3 + 0.01


@pytest.mark.parametrize(
    "ranks, chunks",
    [
        (6, N_HALS // 8),  # the sample's rows merged from chunks 0-5 and split
        ((8, 5, 3), N_HALS // 8),
        ((8, 5, 3), (1024,) + (64,) * 7),  # chunk 0 is the sample: 8 chunks run
    ],
)
def test_hals_fit_equals_in_memory_fit(client, ranks, chunks):
    # The default Frobenius solver: HALS (pretraining of every layer) and deep
    # HALS (fine-tuning). Each codes step's sweep counts are decided on the
    # sample chunk with the whole data's budget and followed by the other
    # chunks, so every chunk takes the in-memory steps: equal up to the
    # summation order of the statistics summed over chunks (1e-6, as MU).
    X = _hals_data()
    rng = np.random.default_rng(3)
    rr = [ranks] if isinstance(ranks, int) else list(ranks)
    W = [rng.random((N_HALS, r)) + 0.1 for r in rr]
    H = [rng.random((r, w)) + 0.1 for r, w in zip(rr, [P, *rr[:-1]])]
    if isinstance(ranks, int):
        W, H = W[0], H[0]
    # One layer stops on the tolerance (after 20 iterations); the deep fit is
    # cut at 40 of its ~230 (a slow test already).
    max_iter = 300 if isinstance(ranks, int) else 40
    params = dict(
        n_components=ranks,
        init="custom",
        max_iter=max_iter,
        tol=1e-3,
        alpha_W=0.001,
        alpha_H=0.002,
        l1_ratio=0.5,
    )
    if not isinstance(ranks, int):
        params["pretrain_max_iter"] = 10
    local = DeepNMF(**params).fit(X, W=W, H=H)
    dist = DeepNMF(**params).fit(da.from_array(X, chunks=(chunks, P)), W=W, H=H)
    assert dist.n_iter_ == local.n_iter_
    assert isinstance(ranks, tuple) or local.n_iter_ < max_iter  # tol acted
    for a, b in zip(local.layer_components_, dist.layer_components_):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6 * np.abs(a).max())
    np.testing.assert_allclose(
        dist.reconstruction_err_, local.reconstruction_err_, rtol=1e-6
    )
    np.testing.assert_allclose(dist.layer_errors_, local.layer_errors_, rtol=1e-6)
    for h_dist, h_local in [(dist.history_, local.history_)] + list(
        zip(dist.pretrain_histories_, local.pretrain_histories_)
    ):
        np.testing.assert_allclose(
            np.asarray(h_dist[:, "train_loss"], dtype=float),
            np.asarray(h_local[:, "train_loss"], dtype=float),
            rtol=1e-6,
        )


class _StopAt(Callback):
    """Stops training the skorch way (as EarlyStopping does)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) >= self.epoch:
            raise KeyboardInterrupt


def test_skorch_loop_tolerance_callbacks_history(client, X, capsys):
    W, H = _custom(5)
    params = dict(n_components=5, init="custom", solver="mu", max_iter=500, tol=1e-3)
    local = DeepNMF(**params).fit(X, W=W, H=H)
    dist = DeepNMF(**params, verbose=1).fit(_chunked(X), W=W, H=H)
    # The tolerance stop acts as in memory.
    assert dist.n_iter_ == local.n_iter_ < 500
    assert len(dist.history_) == dist.n_iter_
    assert "error" in capsys.readouterr().out  # skorch's epoch log
    stopped = DeepNMF(**params, callbacks=[_StopAt(7)]).fit(_chunked(X), W=W, H=H)
    assert stopped.n_iter_ == 7


def test_init_same_seed_same_model(client, X):
    Xd = _chunked(X)
    for init in ("nndsvda", "random"):
        a = DeepNMF(5, init=init, random_state=3, max_iter=30).fit(Xd)
        b = DeepNMF(5, init=init, random_state=3, max_iter=30).fit(Xd)
        # Equal up to rounding: the chunks are new arrays each fit, and MKL's
        # results depend on their memory alignment in the last bits.
        np.testing.assert_allclose(a.components_, b.components_, rtol=1e-9)
        ref = DeepNMF(5, init=init, random_state=3, max_iter=30).fit(X)
        assert a.reconstruction_err_ < 1.05 * ref.reconstruction_err_
    c = DeepNMF(5, init="random", random_state=4, max_iter=30).fit(Xd)
    assert not np.allclose(c.components_, b.components_)


def test_fitted_on_dask_pickles_and_transforms_numpy(client, X):
    model = DeepNMF((6, 3), random_state=0, max_iter=20).fit(_chunked(X))
    again = pickle.loads(pickle.dumps(model))
    assert again.net_.driver is None
    np.testing.assert_allclose(again.transform(X), model.transform(X))
    codes = model.fit_transform(_chunked(X))
    assert isinstance(codes, da.Array)
    # Each chunk is encoded as the in-memory transform encodes those rows.
    by_chunk = np.concatenate(
        [model.transform(X[i : i + N // 8]) for i in range(0, N, N // 8)]
    )
    np.testing.assert_allclose(codes.compute(), by_chunk, rtol=1e-9)


def _unreadable(block):
    raise OSError("disk gone: cannot read this chunk")


def test_bad_data_raises_the_readers_error(client, X):
    bad = _chunked(X).map_blocks(_unreadable, dtype=X.dtype)
    with pytest.raises(OSError, match="disk gone"):
        DeepNMF(5, max_iter=5).fit(bad)
    with pytest.raises(ValueError, match="Negative values"):
        DeepNMF(5, max_iter=5).fit(_chunked(X - 0.5))


class _KillWorker(Callback):
    """Kills (SIGKILL) one worker process of the current client at an epoch."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) == self.epoch:
            c = distributed.Client.current()
            pids = c.run(os.getpid)
            os.kill(pids[sorted(pids)[0]], signal.SIGKILL)


def test_fit_survives_a_killed_worker(client, X):
    Xd = _chunked(X)
    params = dict(n_components=6, solver="mu", max_iter=40, tol=0, random_state=0)
    calm = DeepNMF(**params).fit(Xd)
    hit = DeepNMF(**params, callbacks=[_KillWorker(10)]).fit(Xd)
    assert hit.n_worker_losses_ >= 1
    assert hit.n_iter_ == 40
    assert abs(hit.reconstruction_err_ / calm.reconstruction_err_ - 1) < 0.01
    client.wait_for_workers(2, timeout=60)
