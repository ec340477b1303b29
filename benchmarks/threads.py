"""Threads on a busy machine: default-thread fits against one-thread fits (issue 16).

On a machine where another process holds a core (a browser beside a notebook,
``GridSearchCV(n_jobs=...)``, a CI runner), a parallel region whose threads must
all reach a barrier waits for the thread that the scheduler parked: small
parallel regions then cost a time slice each, and a fit that takes a second on
one thread can take a minute on two. This script measures it, every fit in a
fresh process so that nothing (torch's thread pool, numpy's BLAS pool, a warm
cache) carries over:

* **Conditions.** ``idle``; ``load``: a second process burns one core for the
  whole measurement.
* **Settings.** ``one``: ``OMP_NUM_THREADS=1`` etc. (what a careful user sets);
  ``default``: nothing set, the package sizes its threads itself (the current
  rule); ``unsized``: nothing set and the package's rule switched off, i.e.
  torch's default of one thread per core (the behaviour before issue 16).
* **Fits.** ``DeepNMF`` on 8x8x3 patches of ``china.jpg`` (the issue's case:
  8000x192, 32 components, 100 iterations, ``tol=0``, right after a
  scikit-learn ``NMF`` fit that leaves numpy's BLAS pool warm), a 3-layer fit,
  and larger problems on both sides of the work threshold.

The table gives the median of ``--reps`` fits per cell (settings interleaved,
so drifts of the machine hit all of them alike) and the ratio of each setting to
``one`` in the same condition. The issue's bar: ``default`` within 1.3x of
``one`` under load, and no slower than ``unsized`` on an idle machine.

Usage::

    python benchmarks/threads.py                # everything (~10 minutes on 2 cores)
    python benchmarks/threads.py --quick        # the issue's case and one large fit
    python benchmarks/threads.py --out results/ # also write threads.json there
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name: (n_samples, patch side, n_components, max_iter). Work of the main
# product = n_samples * 3 * side**2 * max(n_components).
CASES = {
    "patches-32": (8000, 8, 32, 100),
    "patches-64-32-16": (8000, 8, (64, 32, 16), 60),
    "patches-128": (20000, 8, 128, 30),
    "patches16-128": (20000, 16, 128, 15),
    "tiny": (500, 4, 4, 5),  # the test suite's smoke run
}
QUICK = ("patches-32", "patches16-128")
SETTINGS = ("one", "default", "unsized")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _patches(n: int, side: int):
    import numpy as np
    from sklearn.datasets import load_sample_image
    from sklearn.feature_extraction.image import extract_patches_2d

    img = load_sample_image("china.jpg")
    P = extract_patches_2d(img, (side, side), max_patches=n, random_state=0)
    return np.ascontiguousarray(P.reshape(n, -1).astype(np.float32) / 255.0)


def _worker(case: str, setting: str) -> dict:
    """One measurement, in this (fresh) process."""
    import contextlib
    import warnings

    import numpy as np
    from sklearn.decomposition import NMF

    import sknmf.decomposition._deep_nmf as facade
    from sknmf import DeepNMF

    if setting == "unsized":
        # Neither the work threshold nor the load: torch's own thread count.
        facade.threads_for = lambda *args, **kwargs: contextlib.nullcontext()
    n, side, ranks, max_iter = CASES[case]
    X = _patches(n, side)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The sequence: a scikit-learn fit first, numpy's BLAS pool warm.
        NMF(8, max_iter=20, init="nndsvda").fit(X[:2000].astype(np.float64))
        model = DeepNMF(ranks, max_iter=max_iter, tol=0, random_state=0)
        start = time.perf_counter()
        model.fit(X)
        seconds = time.perf_counter() - start
    import torch

    return {"seconds": seconds, "torch_threads_after": torch.get_num_threads()}


def _run_one(case: str, setting: str) -> float:
    env = {k: v for k, v in os.environ.items() if k not in _THREAD_VARS}
    if setting == "one":
        env.update(dict.fromkeys(_THREAD_VARS, "1"))
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(
        [sys.executable, __file__, "--worker", case, setting],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["seconds"]


class _Burner:
    """A second process keeping one core busy while the block runs."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        time.sleep(0.5)
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def measure(cases, reps: int, conditions=("idle", "load")) -> list[dict]:
    rows = []
    for condition in conditions:
        for case in cases:
            times = {s: [] for s in SETTINGS}
            for _ in range(reps):
                for setting in SETTINGS:
                    if condition == "load":
                        with _Burner():
                            t = _run_one(case, setting)
                    else:
                        t = _run_one(case, setting)
                    times[setting].append(t)
            med = {s: statistics.median(v) for s, v in times.items()}
            rows.append(
                {
                    "condition": condition,
                    "case": case,
                    "work": _work(case),
                    "median_seconds": med,
                    "all_seconds": times,
                    "ratio_to_one": {s: med[s] / med["one"] for s in SETTINGS},
                }
            )
            print(_row(rows[-1]), flush=True)
    return rows


def _work(case: str) -> int:
    n, side, ranks, _ = CASES[case]
    width = max(ranks) if isinstance(ranks, tuple) else ranks
    return n * 3 * side * side * width


def _row(r: dict) -> str:
    med, ratio = r["median_seconds"], r["ratio_to_one"]
    cells = " | ".join(f"{med[s]:7.2f} s ({ratio[s]:4.2f}x)" for s in SETTINGS)
    return f"| {r['condition']:4} | {r['case']:17} | {r['work']:.1e} | {cells} |"


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES))
    parser.add_argument("--conditions", nargs="+", default=["idle", "load"])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--worker", nargs=2, metavar=("CASE", "SETTING"))
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps(_worker(*args.worker)))
        return []
    cases = args.cases or (
        QUICK if args.quick else tuple(c for c in CASES if c != "tiny")
    )
    print(f"| cond | case              | work    | {' | '.join(SETTINGS)} |")
    print("|---|---|---|" + "---|" * len(SETTINGS))
    rows = measure(cases, args.reps, tuple(args.conditions))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "threads.json").write_text(json.dumps(rows, indent=1))
    return rows


if __name__ == "__main__":
    main()
