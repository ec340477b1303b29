"""DeepNMF on Dask arrays: overhead per iteration, chunk count, client memory.

Run on demand (never from the tests)::

    python benchmarks/distributed.py            # the sizes of issue 14 (minutes)
    python benchmarks/distributed.py --quick    # small sizes (a smoke run)
    python -m benchmarks.distributed --only memory

Three measurements, each on a ``distributed.LocalCluster`` of 2 worker
processes with 1 thread each, X generated on the workers (a low-rank product
plus noise, ``dask.array``), float32:

1. **Overhead.** Time per iteration of the distributed fit of a 40000×1000
   array (8 row chunks) against the in-memory fit of the same matrix with 2
   torch threads, for HALS and MU, from the same custom start. The time per
   iteration is the median of skorch's per-epoch ``dur`` in ``history_`` (the
   initialisation and final encoding excluded). Runs alternate (in-memory,
   Dask, in-memory, Dask, ...) so drifts of the machine hit both alike.
2. **Chunks.** Time per iteration of the same fit as the number of chunks
   doubles (fixed total size): what each chunk costs in scheduling.
3. **Client memory.** Peak resident memory of this (the client's) process
   during a fit of a 200000×1000 float32 array whose chunks are created on
   the workers: ``ru_maxrss`` (the kernel's own peak, which no sampling can
   miss) before and after the fit, against X's size.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

# Run as a script, this file's folder comes first on sys.path, where this
# file's name would hide the ``distributed`` package: put the repository there.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

RANK = 10


def _dask_X(n, p, chunk, seed=0):
    import dask.array as da

    rng = np.random.default_rng(seed)
    H = rng.random((RANK, p))
    W = da.random.default_rng(seed).random((n, RANK), chunks=(chunk, RANK))
    noise = da.random.default_rng(seed + 1).random((n, p), chunks=(chunk, p))
    return (W @ H + 0.1 * noise).astype(np.float32)


def _start(n, p, seed=2):
    rng = np.random.default_rng(seed)
    W = rng.random((n, RANK)).astype(np.float32) + 0.1
    H = rng.random((RANK, p)).astype(np.float32) + 0.1
    return W, H


def _per_iter(model) -> float:
    durs = list(model.history_[:, "dur"])
    return statistics.median(durs[1:] if len(durs) > 2 else durs)


def overhead(n, p, chunks, iters, reps, solvers):
    import torch

    from sknmf import DeepNMF

    Xd = _dask_X(n, p, n // chunks).persist()
    X = Xd.compute()
    W, H = _start(n, p)
    rows = []
    for solver in solvers:
        params = dict(
            n_components=RANK, init="custom", solver=solver, max_iter=iters, tol=0
        )
        local_t, dask_t = [], []
        for _ in range(reps):
            threads = torch.get_num_threads()
            torch.set_num_threads(2)
            try:
                local = DeepNMF(**params).fit(X, W=W, H=H)
            finally:
                torch.set_num_threads(threads)
            local_t.append(_per_iter(local))
            dist = DeepNMF(**params).fit(Xd, W=W, H=H)
            dask_t.append(_per_iter(dist))
        row = dict(
            solver=solver,
            shape=[n, p],
            chunks=chunks,
            in_memory_s=statistics.median(local_t),
            dask_s=statistics.median(dask_t),
            in_memory_all=local_t,
            dask_all=dask_t,
            error_in_memory=local.reconstruction_err_,
            error_dask=dist.reconstruction_err_,
        )
        row["ratio"] = row["dask_s"] / row["in_memory_s"]
        rows.append(row)
        print(
            f"overhead {solver:5s} {n}x{p} {chunks} chunks: in-memory (2 threads) "
            f"{row['in_memory_s'] * 1e3:.0f} ms/iter, Dask (2x1) "
            f"{row['dask_s'] * 1e3:.0f} ms/iter, ratio {row['ratio']:.2f}",
            flush=True,
        )
    return rows


def chunk_scaling(n, p, chunk_counts, iters, solver):
    from sknmf import DeepNMF

    W, H = _start(n, p)
    rows = []
    for c in chunk_counts:
        Xd = _dask_X(n, p, n // c).persist()
        params = dict(
            n_components=RANK, init="custom", solver=solver, max_iter=iters, tol=0
        )
        model = DeepNMF(**params).fit(Xd, W=W, H=H)
        t = _per_iter(model)
        rows.append(dict(chunks=c, rows_per_chunk=n // c, s_per_iter=t))
        print(f"chunks {c:3d} ({n // c} rows each): {t * 1e3:.0f} ms/iter", flush=True)
    return rows


def client_memory(n, p, chunk, iters):
    from sknmf import DeepNMF

    Xd = _dask_X(n, p, chunk)
    x_bytes = n * p * 4
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    # The peak so far should be about the current size: else an earlier spike
    # could hide the fit's (then say so).
    current = _current_rss()
    t0 = time.perf_counter()
    model = DeepNMF(RANK, init="random", solver="hals", max_iter=iters, tol=0).fit(Xd)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    grew = after - before
    print(
        f"client memory: X {x_bytes / 2**20:.0f} MiB on the workers; client RSS "
        f"{current / 2**20:.0f} MiB before, peak "
        f"RSS {before / 2**20:.0f} -> {after / 2**20:.0f} MiB (+{grew / 2**20:.1f} "
        f"MiB, {grew / x_bytes:.3f} of X) over a {iters}-iteration fit ({wall:.0f} s)",
        flush=True,
    )
    return dict(
        shape=[n, p],
        chunk_rows=chunk,
        x_mib=x_bytes / 2**20,
        rss_before_mib=current / 2**20,
        peak_before_mib=before / 2**20,
        peak_after_mib=after / 2**20,
        growth_fraction_of_X=grew / x_bytes,
        iterations=model.n_iter_,
        wall_s=wall,
    )


def _current_rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=["overhead", "chunks", "memory"])
    parser.add_argument("--out", default="benchmarks/results/distributed.json")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    from distributed import Client, LocalCluster

    q = args.quick
    results = {}
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        Client(cluster),
    ):
        if "memory" in args.only:
            # First, so that no earlier step's peak hides this one's.
            n = 20_000 if q else 200_000
            results["memory"] = client_memory(n, 1000, n // 20, 3)
        if "overhead" in args.only:
            n = 4_000 if q else 40_000
            results["overhead"] = overhead(
                n, 1000, 8, 10 if q else 15, args.reps, ["hals", "mu"]
            )
        if "chunks" in args.only:
            n = 4_000 if q else 40_000
            results["chunks"] = chunk_scaling(n, 1000, [2, 4, 8, 16, 32], 10, "mu")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
