"""Deep NMF fits: time to convergence and each layer's error (issue 15).

Two tables, printed as markdown and saved as JSON:

1. **Convergence.** Default deep fits (``DeepNMF(ranks)``, Frobenius and KL) at
   ``max_iter`` 200 and 1000: iterations of the fine-tuning, time of the whole
   ``fit``, whether a ``ConvergenceWarning`` was raised; next to deep HALS
   without its extrapolation, the previous default (HALS pretraining,
   multiplicative fine-tuning: ``solver="mu", pretrain_solver="hals"``; for
   KL, plain multiplicative fine-tuning, ``solver="mu"``, next to the default
   over-relaxed one) and a one-layer fit of width
   ``r1`` run to convergence, the yardstick of the issue (3-layer fit at most
   3x its time for Frobenius, 5x for KL). That fit stops by scikit-learn's
   rule, relative to its initialisation's error, while the fine-tuning's
   reference is its pretrained start: a second yardstick continues the
   one-layer fit under the same rule as the fine-tuning (from where it
   stopped, that point its reference), and every deep row gives its ratio
   to both.
2. **Layer errors.** ``sqrt(2 D(W(l-1) | Wl Hl))`` of every layer for the
   layer-wise (multilayer, pretrained) solution and after joint fine-tuning
   (deep HALS, and multiplicative updates at 1000 iterations), on the planted
   two-layer data of the test suite, the digits and sample-image patches,
   with the fine-tuning's time, and when deep HALS reaches the final
   (weighted) error of the multiplicative fine-tuning from the same start.

Every fit runs once, one thread, in this process, methods of a data set one
after the other: on a shared machine compare within a table, not across runs.

Usage::

    python benchmarks/deep.py                 # everything (tens of minutes)
    python benchmarks/deep.py --quick         # digits and planted data only
    python benchmarks/deep.py --out results/  # also write deep.json there
    python benchmarks/deep.py --tables layers --data china --china-setups 2
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from skorch.callbacks import Callback

from sknmf import DeepNMF
from sknmf._torch.solvers import deep_hals


def planted(seed=0, n=300, m=60, r1=10, r2=4):
    """The planted data of ``tests/decomposition``: ``X = W2 H2 H1`` exactly."""
    rng = np.random.RandomState(seed)
    H1 = rng.rand(r1, m) ** 4
    H2 = rng.rand(r2, r1) ** 4
    H2 /= H2.sum(1, keepdims=True)
    W2 = rng.rand(n, r2) ** 2 * 10
    return W2 @ H2 @ H1


def digits():
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float64)


def china_patches(n=20000):
    """``n`` random 8x8x3 patches of ``china.jpg``, scaled to [0, 1]."""
    from sklearn.datasets import load_sample_image
    from sklearn.feature_extraction.image import extract_patches_2d

    img = load_sample_image("china.jpg")
    P = extract_patches_2d(img, (8, 8), max_patches=n, random_state=0)
    return np.ascontiguousarray(P.reshape(n, -1).astype(np.float64) / 255.0)


def fit(X, ranks, fit_params=None, **params):
    """Fit once; returns the model, its time and whether it warned."""
    model = DeepNMF(ranks, random_state=0, **params)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        model.fit(X, **(fit_params or {}))
        seconds = time.perf_counter() - start
    warned = any("iterations" in str(w.message) for w in caught)
    return model, seconds, warned


def _split(model):
    """Seconds of the pretraining, and milliseconds per iteration of the last
    stage (the fine-tuning of a deep model, the fit of a one-layer one), from
    the histories' per-epoch durations."""
    pre = getattr(model, "pretrain_histories_", None) or []
    deep = len(model.layer_components_) > 1
    pre_s = sum(float(np.sum(h[:, "dur"])) for h in pre) if deep else 0.0
    last = float(np.sum(model.history_[:, "dur"]))
    return pre_s, 1000.0 * last / max(model.n_iter_, 1)


@contextlib.contextmanager
def _extrapolation(on: bool):
    """Deep HALS with or without its extrapolation (a first step of zero
    never grows), for the side-by-side rows."""
    saved = deep_hals._BETA0
    deep_hals._BETA0 = saved if on else 0.0
    try:
        yield
    finally:
        deep_hals._BETA0 = saved


def convergence_rows(name, X, ranks, beta, iters):
    rows = []
    one, t_one, w_one = fit(X, ranks[0], beta_loss=beta, max_iter=5000)
    rows.append(
        dict(
            data=name,
            model=f"DeepNMF({ranks[0]})",
            beta=beta,
            solver="default",
            max_iter=5000,
            n_iter=one.n_iter_,
            seconds=t_one,
            converged=not w_one,
            ms_per_iter=_split(one)[1],
        )
    )
    print(_row(rows[-1]), flush=True)
    # The same one-layer fit held to the fine-tuning's rule: continued from
    # where scikit-learn's rule stopped it, with that point as the reference
    # (a deep model's fine-tuning starts from its pretrained layers, whose
    # error is its reference; the one-layer fit's reference is its
    # initialisation's error, often far larger, e.g. nndsvda's with many
    # components).
    W1 = one.transform(X)
    cont, t_cont, w_cont = fit(
        X,
        ranks[0],
        beta_loss=beta,
        max_iter=5000,
        init="custom",
        fit_params=dict(W=W1, H=one.components_.copy()),
    )
    strict = t_one + t_cont
    rows.append(
        dict(
            data=name,
            model=f"DeepNMF({ranks[0]})",
            beta=beta,
            solver="default, then held to the fine-tuning's rule",
            max_iter=5000,
            n_iter=one.n_iter_ + cont.n_iter_,
            seconds=strict,
            converged=not (w_one or w_cont),
            ms_per_iter=_split(cont)[1],
            layer_errors=[round(float(cont.reconstruction_err_), 4)],
        )
    )
    print(_row(rows[-1]), flush=True)
    methods = [("default", {})]
    if beta == "frobenius":
        methods.append(("deep HALS, no extrapolation", {"_plain": True}))
        methods.append(("previous (mu, pretrain hals)", dict(solver="mu")))
        methods[-1][1]["pretrain_solver"] = "hals"
    else:
        # The previous default fine-tuning for KL and 0 <= beta < 2: plain
        # multiplicative updates (the default is now their over-relaxed form,
        # "relaxed_mu").
        methods.append(("previous (mu)", dict(solver="mu")))
    for max_iter in iters:
        for label, params in methods:
            params = dict(params)
            with _extrapolation(not params.pop("_plain", False)):
                model, t, warned = fit(
                    X, ranks, beta_loss=beta, max_iter=max_iter, **params
                )
            rows.append(
                dict(
                    data=name,
                    model=f"DeepNMF({ranks})",
                    beta=beta,
                    solver=label,
                    max_iter=max_iter,
                    n_iter=model.n_iter_,
                    seconds=t,
                    converged=not warned,
                    ratio_to_one_layer=t / t_one,
                    ratio_to_one_layer_same_rule=t / strict,
                    layer_errors=[round(e, 4) for e in model.layer_errors_],
                    pretraining_seconds=_split(model)[0],
                    ms_per_iter=_split(model)[1],
                )
            )
            print(_row(rows[-1]), flush=True)
    return rows


def layer_rows(name, X, ranks, n_setups=4):
    rows = []
    setups = [
        ("hals", "deep HALS", {}),
        ("hals", "MU", dict(solver="mu", pretrain_solver="hals")),
        ("mu", "deep HALS", dict(pretrain_solver="mu")),
        ("mu", "MU", dict(solver="mu")),
    ]
    histories = {}
    for pre, ft, params in setups[:n_setups]:
        # A callback makes the nets evaluate the loss every epoch (the
        # error-vs-time column reads it), not only at the stopping rule's.
        model, t, warned = fit(
            X, ranks, max_iter=1000, callbacks=[Callback()], **params
        )
        error = np.asarray(model.history_[:, "error"], dtype=float)
        elapsed = np.cumsum(np.asarray(model.history_[:, "dur"], dtype=float))
        histories[pre, ft] = error, elapsed
        rows.append(
            dict(
                data=name,
                ranks=list(ranks),
                pretraining=pre,
                fine_tuning=ft,
                n_iter=model.n_iter_,
                seconds=t,
                fine_tuning_seconds=float(elapsed[-1]),
                converged=not warned,
                pretrained=[round(e, 4) for e in model.pretrain_layer_errors_],
                fine_tuned=[round(e, 4) for e in model.layer_errors_],
            )
        )
        r = rows[-1]
        reach = ""
        if ft == "MU" and (pre, "deep HALS") in histories:
            # The same pretraining gives the same layer weights, so the two
            # fine-tunings' weighted errors compare directly.
            err, el = histories[pre, "deep HALS"]
            hit = np.flatnonzero(err <= error[-1])
            if hit.size:
                r["deep_hals_reaches_mu_final"] = dict(
                    epoch=int(hit[0]) + 1, seconds=float(el[hit[0]])
                )
                reach = f"deep HALS: epoch {hit[0] + 1}, {el[hit[0]]:.2f} s"
            else:
                reach = "deep HALS: never"
        print(
            f"| {name} | {pre} | {ft} | {r['n_iter']} | {t:.1f} s | "
            f"{elapsed[-1]:.1f} s | {r['pretrained']} | {r['fine_tuned']} | "
            f"{reach} |",
            flush=True,
        )
    return rows


def _row(r):
    return (
        f"| {r['data']} | {r['model']} {r['beta']} | {r['solver']} | "
        f"{r['max_iter']} | {r['n_iter']} | {r['seconds']:.1f} s | "
        f"{'yes' if r['converged'] else 'no'} | "
        f"{r.get('ratio_to_one_layer', 1.0):.1f}x | "
        f"{r.get('ratio_to_one_layer_same_rule', 1.0):.2f}x | "
        f"{r.get('pretraining_seconds', 0.0):.2f} s | {r['ms_per_iter']:.1f} ms | "
        f"{r.get('layer_errors', '')} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="digits and planted only")
    parser.add_argument("--out", type=Path, default=None, help="folder for deep.json")
    parser.add_argument(
        "--tables", nargs="+", default=["convergence", "layers"], help="which tables"
    )
    parser.add_argument(
        "--data",
        nargs="+",
        default=["planted", "digits", "china"],
        help="data sets (the convergence table has no planted data)",
    )
    parser.add_argument(
        "--china-setups",
        type=int,
        default=4,
        help="layer-table setups on the patches (2: HALS pretraining only)",
    )
    parser.add_argument(
        "--beta",
        nargs="+",
        default=["frobenius", "kullback-leibler"],
        help="divergences of the convergence table",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = {"convergence": [], "layers": []}
    if "convergence" in args.tables:
        print(
            "| data | model | solver | max_iter | n_iter_ | fit time | converged "
            "| / one layer | / one layer, same rule | pretraining "
            "| per iteration (last stage) | layer errors "
            "|\n|---|---|---|---|---|---|---|---|---|---|---|---|",
            flush=True,
        )
        jobs = [("digits", digits, (32, 16, 8), "frobenius")]
        # The getting-started page's model.
        jobs.append(("digits", digits, (32, 8), "frobenius"))
        jobs.append(("digits", digits, (32, 16, 8), "kullback-leibler"))
        if not args.quick:
            jobs.append(("china", china_patches, (64, 32, 16), "frobenius"))
            jobs.append(
                ("china", lambda: china_patches(5000), (32, 16, 8), "kullback-leibler")
            )
        # Other betas (issue 15, item 2), on positive data (beta <= 0 needs
        # X > 0); not in the default --beta list (``--beta 1.5 0.5
        # itakura-saito``): a deep iteration of these costs about 10x a
        # one-layer one (the coupled codes' safeguarded Newton solve).
        for b in ("1.5", "0.5", "itakura-saito"):
            jobs.append(("digits + 1", lambda: digits() + 1.0, (32, 16, 8), b))
        # The first fit of a process pays one-time costs (imports, torch's
        # kernels): not the yardstick's.
        fit(digits()[:300], (8, 4), max_iter=20)
        for name, load, ranks, beta in jobs:
            if beta not in args.beta or name.split()[0] not in args.data:
                continue
            X = load()
            known = beta in ("frobenius", "kullback-leibler", "itakura-saito")
            iters = (200, 1000) if beta in ("frobenius", "kullback-leibler") else (200,)
            beta = beta if known else float(beta)
            out["convergence"] += convergence_rows(name, X, ranks, beta, iters)
    if "layers" in args.tables:
        print(
            "\n| data | pretraining | fine-tuning | n_iter_ | fit time | "
            "fine-tuning time | layer-wise errors | fine-tuned errors | "
            "MU's final error reached by |\n|---|---|---|---|---|---|---|---|---|",
            flush=True,
        )
        jobs = [("planted", planted, (10, 4)), ("digits", digits, (32, 16, 8))]
        if not args.quick:
            jobs.append(("china", china_patches, (64, 32, 16)))
        for name, load, ranks in jobs:
            if name not in args.data:
                continue
            n = args.china_setups if name == "china" else 4
            out["layers"] += layer_rows(name, load(), ranks, n)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "deep.json").write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
