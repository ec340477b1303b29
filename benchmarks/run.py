"""Time to scikit-learn's NMF error: sknmf against scikit-learn, on one machine.

For every data set, scikit-learn's ``NMF(solver="cd")`` is first run with its
defaults (``tol=1e-4``) until it converges: its error plus 1% is the target.
Then each method is traced (error after every iteration, clock without the
error evaluations) to find how many iterations it needs to reach the target,
and is timed end to end (init and conversions included, ``tol=0``) for that many
iterations, all methods alternating within each repetition (A B C A B C ...).

Usage::

    python benchmarks/run.py            # the full suite (tens of minutes)
    python benchmarks/run.py --quick    # smaller data, a few minutes

Results: a table on stdout, ``results.json`` and ``error_vs_time.png`` in
``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
import warnings
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make the repository root importable.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from benchmarks import data as bdata
from benchmarks import measure
from benchmarks import methods as bmethods
from benchmarks.report import HEADLINE, format_table, plot_traces, targets_summary

SIZES = {
    # reference max_iter, matmul size for the peak, default repetitions, methods
    # whose memory is measured (None: all; each needs a fresh interpreter)
    "full": {"ref_max_iter": 5000, "peak_size": 4096, "reps": 3, "memory": None},
    "quick": {"ref_max_iter": 2000, "peak_size": 2048, "reps": 3, "memory": 1},
    "tiny": {"ref_max_iter": 300, "peak_size": 256, "reps": 2, "memory": 1},
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="smaller data sets")
    size.add_argument("--tiny", action="store_true", help="toy sizes (for tests)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions")
    parser.add_argument("--datasets", nargs="*", default=None, help="subset by name")
    parser.add_argument("--methods", nargs="*", default=None, help="subset by name")
    parser.add_argument(
        "--device",
        default="auto",
        help="'cpu', 'cuda' or 'auto' (adds CUDA variants where a GPU is present)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip memory runs")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="a method's trace stops after this many times scikit-learn cd's "
        "time to target (it is then reported as not reaching the target); "
        "default 2, 1.5 with --quick",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=bmethods.SETTLE_SECONDS,
        help="idle seconds before each end-to-end timed fit, so that the previous "
        "method's spinning thread pool does not slow the next (default 0.25)",
    )
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    parser.add_argument(
        "--from-json",
        default=None,
        help="re-render the table and figure of a saved results.json; run nothing",
    )
    return parser.parse_args(argv)


def _median(values):
    return float(np.median(values)) if len(values) else None


def _ratio_stats(num, den):
    """min/median/max of the paired ratios num[i] / den[i]."""
    ratios = [a / b for a, b in zip(num, den) if b > 0]
    if not ratios:
        return None
    return {
        "min": float(np.min(ratios)),
        "median": float(np.median(ratios)),
        "max": float(np.max(ratios)),
    }


def run_dataset(ds, methods, args, cfg, peaks, workdir, log):
    X = ds.X
    k = ds.n_components
    result = {
        "dataset": ds.name,
        "description": ds.description,
        "shape": list(X.shape),
        "nnz": int(X.nnz) if hasattr(X, "nnz") else int(np.prod(X.shape)),
        "n_components": k,
        "X_bytes_float64": ds.nbytes,
        "methods": {},
    }

    # 1. The reference: scikit-learn cd, defaults, run to its own convergence.
    log(f"[{ds.name}] reference: NMF(solver='cd') to tol=1e-4 ...")
    cd = bmethods.SklearnCD()
    ref = cd.trace(
        X, k, max_iter=cfg["ref_max_iter"], max_seconds=math.inf, target=None, tol=1e-4
    )
    ref_err = ref.errors[-1]
    target = 1.01 * ref_err
    result["reference"] = {
        "error": ref_err,
        "n_iter": ref.iters[-1],
        "time": ref.times[-1],
        "stopped": ref.stopped,
        "target": target,
    }
    log(
        f"[{ds.name}]   error {ref_err:.6g} after {ref.iters[-1]} iterations, "
        f"{ref.times[-1]:.2f} s ({ref.stopped}); target {target:.6g}"
    )
    _, cd_time = ref.first_below(target)
    budget = max(args.budget * cd_time, 1.0)

    # 2. Traces: iterations each method needs to reach the target.
    prepared, traces = {}, {}
    for m in methods:
        prepared[m.name] = m.prepare(X)
        if m.name == cd.name:
            traces[m.name] = ref
            continue
        log(f"[{ds.name}] trace {m.name} ...")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                traces[m.name] = m.trace(
                    prepared[m.name],
                    k,
                    max_iter=cfg["ref_max_iter"],
                    max_seconds=budget,
                    target=target,
                )
        except Exception as exc:  # a broken method must not sink the suite
            log(f"[{ds.name}]   {m.name} failed: {type(exc).__name__}: {exc}")
            result["methods"][m.name] = {"failed": f"{type(exc).__name__}: {exc}"}
    methods = [m for m in methods if m.name in traces]
    # 3. Timed repetitions, alternating methods within each repetition.
    n_iter = {}
    for m in methods:
        it, _ = traces[m.name].first_below(target)
        # A start already below the target still costs one iteration to time.
        n_iter[m.name] = None if it is None else max(1, it)
    timed = {m.name: [] for m in methods}
    final_err = {m.name: [] for m in methods}
    for rep in range(args.reps):
        for m in methods:
            if n_iter[m.name] is None:
                continue
            bmethods.settle()
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                W, H = m.fit(prepared[m.name], k, n_iter[m.name])
            timed[m.name].append(time.perf_counter() - start)
            final_err[m.name].append(bmethods.frobenius_error(X, W, H))
        log(f"[{ds.name}] repetition {rep + 1}/{args.reps} done")

    # 4. Matrix-product rates and 5. peak memory.
    matrix_path = None
    if not args.no_memory:
        suffix = ".npz" if hasattr(X, "nnz") else ".npy"
        matrix_path = str(Path(workdir) / f"{ds.name}{suffix}")
        bmethods.save_matrix(X, matrix_path)
    cd_times = timed[cd.name]
    # The peak right beside the products' timings: on a shared machine the load
    # moves, and a peak taken minutes earlier would not be comparable.
    local_peak = measure.matmul_peak(cfg["peak_size"])
    headline = next((n for n in HEADLINE if n in traces), None)
    for m in methods:
        tr = traces[m.name]
        entry = {
            "family": m.family,
            "dtype": np.dtype(m.dtype).name,
            "device": m.device,
            "iters_to_target": n_iter[m.name],
            "times": timed[m.name],
            "median_time": _median(timed[m.name]),
            "speedup_vs_cd": _ratio_stats(cd_times, timed[m.name])
            if m.name != cd.name
            else None,
            "final_error_ratio": (
                _median(final_err[m.name]) / ref_err if final_err[m.name] else None
            ),
            "best_error_ratio": min(tr.errors) / ref_err,
            "trace_stopped": tr.stopped,
            "time_per_iter": tr.per_iter,
            "trace": {"iters": tr.iters, "times": tr.times, "errors": tr.errors},
        }
        flops = m.product_flops(prepared[m.name], k)
        try:
            func = m.products(prepared[m.name], k)
            t_prod = measure.best_time(func, repeat=3, device=m.device)
            entry["product_gflops"] = flops / t_prod / 1e9
            peak = max(peaks.get(m.peak_key(), 0.0), local_peak.get(m.peak_key(), 0.0))
            entry["product_pct_peak"] = (
                100.0 * entry["product_gflops"] / peak if peak else None
            )
            entry["product_time"] = t_prod
        except Exception as exc:  # a rate is a bonus; never sink the suite
            entry["product_error"] = f"{type(exc).__name__}: {exc}"
        if tr.per_iter:
            entry["iter_gflops"] = flops / tr.per_iter / 1e9
            if "product_time" in entry:
                entry["product_share"] = entry["product_time"] / tr.per_iter
        wanted = cfg["memory"] is None or m.name in (headline, cd.name)
        if cfg["memory"] == 1:
            wanted = m.name == headline
        if matrix_path is not None and wanted:
            mem_iters = n_iter[m.name] or max(1, min(tr.iters[-1], 50))
            log(f"[{ds.name}] memory {m.name} ...")
            mem = measure.measure_memory(m.name, matrix_path, k, mem_iters)
            if "rss_peak_extra" in mem:
                base = mem["X_bytes"] + mem["factors_bytes"]
                mem["peak_ratio"] = (mem["X_bytes"] + mem["rss_peak_extra"]) / base
                if sys.platform.startswith("linux"):
                    live = measure.measure_memory(
                        m.name, matrix_path, k, mem_iters, live=True
                    )
                    if "rss_peak_extra" in live:
                        mem["live_peak_extra"] = live["rss_peak_extra"]
                        mem["live_peak_ratio"] = (
                            mem["X_bytes"] + live["rss_peak_extra"]
                        ) / base
            entry["memory"] = mem
        result["methods"][m.name] = entry
    result["matmul_peak_local"] = local_peak

    # 6. Three layers against one layer of the first layer's width, per epoch.
    if bmethods.deepnmf_solvers():
        log(f"[{ds.name}] DeepNMF epoch cost, three layers vs one ...")
        try:
            result["deep_epoch_cost"] = bmethods.deep_epoch_cost(X, k)
        except Exception as exc:
            log(f"[{ds.name}]   failed: {type(exc).__name__}: {exc}")
            result["deep_epoch_cost"] = {"failed": f"{type(exc).__name__}: {exc}"}
    return result


def main(argv=None):
    args = parse_args(argv)
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        plot_traces(report["datasets"], out / "error_vs_time.png")
        print(format_table(report))
        print(targets_summary(report))
        return report
    size = "tiny" if args.tiny else "quick" if args.quick else "full"
    cfg = SIZES[size]
    bmethods.SETTLE_SECONDS = args.settle
    if args.reps is None:
        args.reps = cfg["reps"]
    if args.budget is None:
        args.budget = 2.0 if size == "full" else 1.5
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    started = time.perf_counter()

    def log(msg):
        print(
            f"{time.perf_counter() - started:7.1f}s {msg}", file=sys.stderr, flush=True
        )

    info = measure.machine_info()
    info["size"] = size
    info["reps"] = args.reps
    info["settle_seconds"] = args.settle
    log(
        f"machine: {info['cpu']}, {info['logical_cores']} cores, torch "
        f"{info['torch']} ({info['torch_blas']}, {info['torch_threads']} threads)"
    )
    peaks = measure.matmul_peak(cfg["peak_size"])
    if device.startswith("cuda"):
        peaks.update(measure.matmul_peak(cfg["peak_size"], device))
    log("matmul peak GFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))

    methods = bmethods.all_methods(device, quick=size != "full")
    if args.methods:
        methods = [
            m for m in methods if m.name in args.methods or m.name == "sklearn-cd"
        ]
    datasets = bdata.load(size)
    if args.datasets:
        names = [d.name for d in datasets]
        datasets = [d for d in datasets if d.name in args.datasets]
        if not datasets:
            sys.exit(
                f"benchmarks/run.py: error: --datasets {' '.join(args.datasets)} "
                f"matches none of the {size} data sets: {', '.join(names)}"
            )

    results = []
    with tempfile.TemporaryDirectory() as workdir:
        for ds in datasets:
            results.append(run_dataset(ds, methods, args, cfg, peaks, workdir, log))
    info["load_average_end"] = measure._loadavg()
    info["wall_time"] = time.perf_counter() - started
    report = {"machine": info, "matmul_peak_gflops": peaks, "datasets": results}
    (out / "results.json").write_text(json.dumps(report, indent=1))
    wrote = [out / "results.json"]
    try:
        plot_traces(results, out / "error_vs_time.png")
        wrote.append(out / "error_vs_time.png")
    except ImportError as exc:  # matplotlib is in the bench extra, not required
        log(f"no figure ({exc}); re-render later with --from-json")
    print(format_table(report))
    print(targets_summary(report))
    log(f"wrote {' and '.join(map(str, wrote))} in {info['wall_time']:.0f} s")
    return report


if __name__ == "__main__":
    main()
