"""The suite's table, the issue's targets, and the error-versus-time figure."""

from __future__ import annotations

from pathlib import Path

# The method the targets of issue 5 are about, best first: the estimator's
# default one-layer solver on float32 input, else the raw solver it calls.
HEADLINE = ("DeepNMF-auto-float32", "DeepNMF-hals-float32", "hals-float32")


def _fmt(value, spec=".3g", none="-"):
    return none if value is None else format(value, spec)


def _ratio(stats):
    if not stats:
        return "-"
    return f"{stats['min']:.2f}/{stats['median']:.2f}/{stats['max']:.2f}"


def _mib(nbytes):
    return nbytes / 2**20


def format_table(report) -> str:
    m = report["machine"]
    lines = [
        "",
        f"Machine: {m['cpu']}, {m['logical_cores']} logical cores, "
        f"{m.get('memory_gib', '?')} GiB; torch {m['torch']} "
        f"({m['torch_blas']}, {m['torch_threads']} threads), numpy {m['numpy']}, "
        f"scikit-learn {m['scikit-learn']}; load average "
        f"{m.get('load_average_start')} -> {m.get('load_average_end')}",
        "Matmul peak (GFLOP/s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in report["matmul_peak_gflops"].items()),
        f"Size: {m['size']}, {m['reps']} timed repetitions per method, methods "
        "alternating within each repetition.",
        "",
        "time: median end-to-end seconds to reach scikit-learn cd's converged "
        "error +1% (init included);",
        "speedup: sklearn-cd time / method time, paired per repetition, "
        "min/median/max; prod: GFLOP/s of one iteration's matrix products "
        "(% of the matmul peak of that library and dtype);",
        "iter GF/s: the same flops over the whole iteration; mem: peak RSS of one "
        "fit (X included) in MiB and as a multiple of X + W + H.",
    ]
    header = (
        f"{'method':<24}{'iters':>6}{'time s':>9}{'speedup':>18}{'s/iter':>10}"
        f"{'prod GF/s':>16}{'iter GF/s':>10}{'mem MiB (x; live x)':>27}{'err/ref':>9}"
    )
    for ds in report["datasets"]:
        ref = ds["reference"]
        lines += [
            "",
            f"== {ds['dataset']}: {ds['description']}; shape {tuple(ds['shape'])}, "
            f"k={ds['n_components']}; sklearn cd converged to {ref['error']:.6g} in "
            f"{ref['n_iter']} iterations ({ref['time']:.2f} s); target "
            f"{ref['target']:.6g}",
        ]
        if ds.get("matmul_peak_local"):
            lines.append(
                "matmul peak beside this data set's product timings (GFLOP/s): "
                + ", ".join(f"{k} {v:.0f}" for k, v in ds["matmul_peak_local"].items())
            )
        lines += [header, "-" * len(header)]
        for name, e in ds["methods"].items():
            if "failed" in e:
                lines.append(f"{name:<24} FAILED: {e['failed'][:90]}")
                continue
            if e["iters_to_target"] is None:
                it = f">{e['trace']['iters'][-1]}"
                tt = "not reached"
            else:
                it = str(e["iters_to_target"])
                tt = _fmt(e["median_time"])
            prod = "-"
            if e.get("product_gflops") is not None:
                prod = f"{e['product_gflops']:.1f}"
                if e.get("product_pct_peak") is not None:
                    prod += f" ({e['product_pct_peak']:.0f}%)"
            mem = "-"
            mm = e.get("memory", {})
            if "rss_peak_extra" in mm:
                total = mm["X_bytes"] + mm["rss_peak_extra"]
                mem = f"{_mib(total):.0f} ({mm['peak_ratio']:.2f}x)"
                if "live_peak_ratio" in mm:
                    mem = mem[:-1] + f"; {mm['live_peak_ratio']:.2f}x)"
            err = e["final_error_ratio"] or e["best_error_ratio"]
            lines.append(
                f"{name:<24}{it:>6}{tt:>9}{_ratio(e['speedup_vs_cd']):>18}"
                f"{_fmt(e['time_per_iter'], '.3g'):>10}{prod:>16}"
                f"{_fmt(e.get('iter_gflops'), '.1f'):>10}{mem:>27}{err:>9.4f}"
            )
        deep = ds.get("deep_epoch_cost")
        if deep and "failed" in deep:
            lines.append(f"DeepNMF epoch cost: FAILED: {deep['failed'][:90]}")
        elif deep:
            lines.append(
                f"DeepNMF seconds per epoch: one layer k={ds['n_components']} "
                f"{deep['one_layer']:.4g}, three layers {deep['three_layers']:.4g} "
                f"(ratio {deep['ratio']:.2f})"
            )
    return "\n".join(lines)


def _headline(ds):
    for name in HEADLINE:
        if name in ds["methods"] and "failed" not in ds["methods"][name]:
            return name, ds["methods"][name]
    return None, None


def targets_summary(report) -> str:
    """Issue 5's targets, checked on this run's numbers."""
    lines = ["", "Targets (issue 5, section 2):"]
    for ds in report["datasets"]:
        name, e = _headline(ds)
        if e is None:
            continue
        need = {"photo": 3.0, "synthetic": 3.0, "digits": 1.0}.get(ds["dataset"])
        if need is not None:
            sp = e["speedup_vs_cd"]
            got = sp["median"] if sp else None
            ok = got is not None and got >= need
            lines.append(
                f"  {ds['dataset']:<10} {name}: time to target {_fmt(got, '.2f')}x "
                f"shorter than sklearn cd (median; need >= {need:g}x) "
                f"{'MET' if ok else 'MISSED'}"
            )
        if ds["dataset"] in ("photo", "synthetic") and e.get("product_pct_peak"):
            pct = e["product_pct_peak"]
            lines.append(
                f"  {ds['dataset']:<10} {name}: matrix products at {pct:.0f}% of "
                f"the matmul peak (need >= 60%) {'MET' if pct >= 60 else 'MISSED'}"
            )
        deep = ds.get("deep_epoch_cost")
        if deep and "ratio" in deep:
            r = deep["ratio"]
            lines.append(
                f"  {ds['dataset']:<10} DeepNMF three layers cost {r:.2f}x one layer "
                f"per epoch (need <= 2x) {'MET' if r <= 2 else 'MISSED'}"
            )
        mem = e.get("memory", {})
        if "peak_ratio" in mem:
            r = mem["peak_ratio"]
            lines.append(
                f"  {ds['dataset']:<10} {name}: peak memory {r:.2f}x (X + factors) "
                f"(need <= 3x) {'MET' if r <= 3 else 'MISSED'}"
            )
        if "live_peak_ratio" in mem:
            r = mem["live_peak_ratio"]
            lines.append(
                f"  {ds['dataset']:<10} {name}: peak memory in use {r:.2f}x "
                "(X + factors; glibc returning freed blocks at once) "
                f"(need <= 3x) {'MET' if r <= 3 else 'MISSED'}"
            )
    return "\n".join(lines)


def plot_traces(results, path: Path) -> None:
    """Error relative to scikit-learn cd's converged error, over time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.8 * n, 4.0), squeeze=False)
    for ax, ds in zip(axes[0], results):
        ref = ds["reference"]["error"]
        lowest = 1.0
        for name, e in ds["methods"].items():
            if "trace" not in e:
                continue
            tr = e["trace"]
            pts = [(t, err / ref) for t, err in zip(tr["times"], tr["errors"]) if t > 0]
            if pts:
                xs, ys = zip(*pts)
                lowest = min(lowest, min(ys))
                style = "-" if e["family"] != "sknmf" else "--"
                ax.plot(xs, ys, style, label=name, marker="." if len(xs) < 40 else None)
        ax.axhline(1.01, color="k", ls=":", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylim(max(0.5, 0.98 * lowest), 3.0)
        ax.set_title(f"{ds['dataset']} {tuple(ds['shape'])}, k={ds['n_components']}")
        ax.set_xlabel("seconds (init included)")
        ax.set_ylabel("error / sklearn-cd converged error")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("dotted: the target (sklearn cd's error + 1%)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
