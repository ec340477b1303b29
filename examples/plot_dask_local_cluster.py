"""
==========================================
Fitting a Dask array on a local cluster
==========================================

:class:`sknmf.DeepNMF` fits a ``dask.array`` the way it fits a NumPy array: the
row chunks of ``X`` stay on the workers of the current ``distributed.Client``,
and each iteration only ships the weights out and small statistics back (see
:ref:`larger_than_one_machine`). This example starts a
``distributed.LocalCluster`` of 2 workers with 1 thread each, creates the data
on the workers, fits a model, and compares it with the in-memory fit.

To keep the example fast the workers are threads of this process
(``processes=False``): starting worker processes takes seconds, and everything
below works unchanged with ``processes=True`` or with any other cluster.
"""

# %%
# A cluster and data made on it
# -----------------------------
# Every chunk of ``X`` is created by a task on a worker (here a low-rank
# nonnegative product plus noise, seeded per chunk), so the client never holds
# ``X``: with a real cluster the same code fits matrices larger than any one
# machine.
import warnings

import dask.array as da
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster

from sknmf import DeepNMF

warnings.filterwarnings("ignore", category=UserWarning)

cluster = LocalCluster(
    n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
)
client = Client(cluster)

n_rows, n_features, rank, chunk_rows = 4000, 60, 6, 500
H_true = np.random.default_rng(0).random((rank, n_features))


def make_chunk(block_info=None):
    (start, stop), _ = block_info[None]["array-location"]
    rng = np.random.default_rng(start)
    W = rng.random((stop - start, rank))
    return W @ H_true + 0.05 * rng.random((stop - start, n_features))


X = da.map_blocks(
    make_chunk,
    chunks=((chunk_rows,) * (n_rows // chunk_rows), (n_features,)),
    dtype=np.float64,
)
print(X)

# %%
# Fit, on the cluster
# -------------------
# The same estimator, the same parameters. Initialisation (NNDSVDa) runs on a
# randomized SVD of the chunks; then one distributed iteration per epoch of the
# usual skorch loop, so ``history_``, callbacks and the tolerance stop behave
# as in memory.
model = DeepNMF(rank, random_state=0).fit(X)
print(
    f"{model.n_iter_} iterations, reconstruction error {model.reconstruction_err_:.3f}"
)

# %%
# ``transform`` of a Dask array is lazy: one task per chunk, the weights sent
# once. Nothing is computed until asked.
codes = model.transform(X)
print(codes)
print(codes[:3].compute().round(3))

# %%
# The same model in memory
# ------------------------
# With this small ``X`` we can also fit in memory and compare: the same
# iterations on the same data, from nearly the same start (in memory, a matrix
# this small gets an exact SVD; the Dask fit always takes a randomized one).
X_local = X.compute()
local = DeepNMF(rank, random_state=0).fit(X_local)

fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot(local.history_[:, "error"], label="in memory")
ax.plot(model.history_[:, "error"], "--", label="Dask, 8 chunks on 2 workers")
ax.set_title("Error per iteration")
ax.set(xlabel="iteration", ylabel="error $\\sqrt{2 D}$", yscale="log")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# A model fitted on Dask is an ordinary fitted estimator: it transforms NumPy
# arrays too (each chunk's codes are those of its rows in memory), and it
# pickles without the cluster.
first = model.transform(X_local[:chunk_rows])
print(np.abs(first - codes[:chunk_rows].compute()).max())

client.close()
cluster.close()
