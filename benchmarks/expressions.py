"""Facial-expression sequences: the default pipeline against linear baselines.

Person-wise 5-fold cross-validation (:class:`~sklearn.model_selection.GroupKFold`, so
every test face is a stranger) on the hard synthetic set
(``make_expression_videos(300, setting="hard")``: 300 videos of 4 frames of 48x48
pixels, 7 classes, 1 to 6 videos per person), and on its onset/offset variant (the
same 7 expressions appearing or fading, labelled by direction only).

Run on demand (not a test)::

    OMP_NUM_THREADS=1 python benchmarks/expressions.py             # main table
    OMP_NUM_THREADS=1 python benchmarks/expressions.py --section rnn --seeds 0 1 2
    OMP_NUM_THREADS=1 python benchmarks/expressions.py --section encoders
    OMP_NUM_THREADS=1 python benchmarks/expressions.py --section timing

The frame encoder is unsupervised, so each fold's encoder is fitted once and its codes
are shared by every sequence model and baseline of that fold. The main table puts the
default pipeline and the strong linear baseline (the last-minus-first codes of the same
fold's encoder, standardised, logistic regression) side by side on the same splits,
data seed by data seed, with the difference per seed. Beside them: the previous
default (a logistic path and one held-out part choosing the epochs), the network
without a path, and one reference row that is not linear: small MLPs (``alpha=1``,
averaged over 3 initialisations) on the standardised last-minus-first codes, i.e. the
default's path alone, without the recurrence.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from sknmf import DeepNMF, ExpressionRNN, FrameEncoder, ImagePatches
from sknmf.datasets import make_expression_videos
from sknmf.datasets._expressions import HARD_CLASSES

N_SEQUENCES = 300
SUBJECT_VARIATION = None  # None: the hard setting's own (2.0); --subject-variation


def hard_set(seed: int, task: str = "classes"):
    """``(X, y, groups)``: the 7 classes, or onset vs offset of the same 7."""
    kwargs = dict(setting="hard", subject_variation=SUBJECT_VARIATION)
    if task == "classes":
        return make_expression_videos(N_SEQUENCES, random_state=seed, **kwargs)
    classes = [f"{e}-{d}" for d in ("onset", "offset") for e in HARD_CLASSES]
    X, y, groups = make_expression_videos(
        N_SEQUENCES, classes=classes, random_state=seed, **kwargs
    )
    return X, np.char.rpartition(y.astype(str), "-")[:, 2], groups


# Sequence features for the linear baselines ------------------------------------------


def time_average(seq):
    return seq.mean(axis=1)


def last_minus_first(seq):
    return seq[:, -1] - seq[:, 0]


def linear(C=1.0):
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=3000))


# Experiments --------------------------------------------------------------------------

RNN_VARIANTS = {
    "defaults": {},
    "inputs=frames": {"inputs": "frames"},
    "inputs=both": {"inputs": "both"},
    "scale_inputs=global": {"scale_inputs": "global"},
    "scale_inputs=none": {"scale_inputs": "none"},
    "weight_decay=0": {"weight_decay": 0.0},
    "weight_decay=1e-3": {"weight_decay": 1e-3},
    "weight_decay=1e-2": {"weight_decay": 1e-2},
    "weight_decay=1e-1": {"weight_decay": 1e-1},
    "optimizer=adamw wd=1e-2": {"optimizer": "adamw", "weight_decay": 1e-2},
    "skip=False": {"skip": False},
    "skip_hidden=None (logistic path)": {"skip_hidden": None},
    "cv=None (one held-out part)": {"cv": None},
    "skip_n_inits=1": {"skip_n_inits": 1},
    "skip_n_inits=5": {"skip_n_inits": 5},
    "cv=5": {"cv": 5},
    "previous default (logistic path, one held-out part)": {
        "skip_hidden": None,
        "cv": None,
    },
    "early_stopping=False": {"early_stopping": False},
    "skip=False, early_stopping=False": {"skip": False, "early_stopping": False},
    "skip_C=0.1": {"skip_C": 0.1},
    "skip_C=10": {"skip_C": 10.0},
    "dropout=0.3": {"dropout": 0.3},
    "bidirectional": {"bidirectional": True},
    "hidden_size=32": {"hidden_size": 32},
    "hidden_size=128": {"hidden_size": 128},
    "max_epochs=30": {"max_epochs": 30},
    "max_epochs=120": {"max_epochs": 120},
    "lr=3e-3": {"lr": 3e-3},
    "cell=lstm": {"cell": "lstm"},
    "motion=False": {"motion": False},
    "bi+dropout0.3+lr3e-3": {"bidirectional": True, "dropout": 0.3, "lr": 3e-3},
    "average of 5 seeds": {"seed_average": 5},
    "bi+dropout0.3 avg5": {"bidirectional": True, "dropout": 0.3, "seed_average": 5},
    "older defaults (no path, no early stopping)": {
        "skip": False,
        "early_stopping": False,
    },
    "old defaults (frames, global scale)": {
        "inputs": "frames",
        "scale_inputs": "global",
        "weight_decay": 0.0,
        "early_stopping": False,
        "skip": False,
    },
}

ENCODERS = {
    "DeepNMF(64)": lambda: DeepNMF(64, random_state=0),
    "DeepNMF(32)": lambda: DeepNMF(32, random_state=0),
    "DeepNMF(128)": lambda: DeepNMF(128, random_state=0),
    "DeepNMF((64, 32))": lambda: DeepNMF((64, 32), random_state=0),
    "DeepNMF((128, 64))": lambda: DeepNMF((128, 64), random_state=0),
    "DeepNMF(64, KL)": lambda: DeepNMF(
        64, beta_loss="kullback-leibler", random_state=0
    ),
    "DeepNMF(64, IS)": lambda: DeepNMF(64, beta_loss="itakura-saito", random_state=0),
    "ImagePatches(12) + DeepNMF(16)": lambda: Pipeline(
        [("patches", ImagePatches(12)), ("nmf", DeepNMF(16, random_state=0))]
    ),
    "ImagePatches(16) + DeepNMF(32)": lambda: Pipeline(
        [("patches", ImagePatches(16)), ("nmf", DeepNMF(32, random_state=0))]
    ),
    "PCA(64)": lambda: PCA(64, random_state=0),
}


def cross_validate(X, y, groups, encoder_factory, models, n_splits=5):
    """Accuracy of each model (a function of fold data) over person-wise folds."""
    scores = {name: [] for name in models}
    for train, test in GroupKFold(n_splits).split(X, y, groups):
        encoder = FrameEncoder(encoder_factory())
        codes_train = encoder.fit_transform(X[train])
        codes_test = encoder.transform(X[test])
        fold = (codes_train, y[train], codes_test, y[test], X[train], X[test])
        for name, model in models.items():
            scores[name].append(model(*fold))
    return {name: float(np.mean(s)) for name, s in scores.items()}


def rnn_model(params, seed=0):
    params = dict(params)
    n_seeds = params.pop("seed_average", 1)

    def run(c_train, y_train, c_test, y_test, *_):
        proba = 0.0
        for k in range(n_seeds):
            rnn = ExpressionRNN(random_state=seed + k, **params).fit(c_train, y_train)
            proba = proba + rnn.predict_proba(c_test)
        return float(np.mean(rnn.classes_[np.argmax(proba, axis=1)] == y_test))

    return run


def baseline(features, C=1.0, on="codes"):
    def run(c_train, y_train, c_test, y_test, x_train, x_test):
        if on == "pixels":
            c_train = x_train.reshape(len(x_train), x_train.shape[1], -1)
            c_test = x_test.reshape(len(x_test), x_test.shape[1], -1)
        model = linear(C).fit(features(c_train), y_train)
        return model.score(features(c_test), y_test)

    return run


def mlp_baseline(features, alpha=1.0, n_inits=3):
    """Order-blind non-linear reference: small MLPs (averaged over initialisations)."""

    def run(c_train, y_train, c_test, y_test, *_):
        proba = 0.0
        for k in range(n_inits):
            model = make_pipeline(
                StandardScaler(),
                MLPClassifier((64,), alpha=alpha, max_iter=2000, random_state=k),
            ).fit(features(c_train), y_train)
            proba = proba + model.predict_proba(features(c_test))
        return float(np.mean(model.classes_[np.argmax(proba, axis=1)] == y_test))

    return run


BASELINES = {
    "time-average codes -> logistic": baseline(time_average),
    "last-minus-first codes -> logistic": baseline(last_minus_first),
    "last-minus-first pixels -> logistic(C=0.1)": baseline(
        last_minus_first, C=0.1, on="pixels"
    ),
    # Not a linear baseline: the strongest order-blind read-out of the codes found so
    # far (issue 12), for reference beside the sequence model.
    "last-minus-first codes -> MLP(64, alpha=1), 3 inits": mlp_baseline(
        last_minus_first
    ),
}


def table(title, rows, seeds):
    print(f"\n{title}  (person-wise 5-fold CV accuracy; data seeds {seeds})")
    width = max(len(r) for r in rows) + 2
    print(f"{'model':<{width}}" + "".join(f"{'seed ' + str(s):>9}" for s in seeds)
          + f"{'mean':>8}")  # fmt: skip
    for name, values in rows.items():
        sign = "+" if name.startswith("default minus") else ""
        cells = "".join(f"{v:>{sign}9.3f}" for v in values)
        print(f"{name:<{width}}{cells}{np.mean(values):>{sign}8.3f}", flush=True)


DEFAULT = "FrameEncoder(DeepNMF(64)) -> ExpressionRNN()"
STRONG = "last-minus-first codes -> logistic"


def section_main(seeds):
    for task in ("classes", "onset/offset"):
        rows = {}
        for seed in seeds:
            X, y, groups = hard_set(seed, "classes" if task == "classes" else "dir")
            models = {
                DEFAULT: rnn_model({}),
                "  previous default (logistic path, one held-out part)": rnn_model(
                    RNN_VARIANTS["previous default (logistic path, one held-out part)"]
                ),
                "  same, skip=False (no path)": rnn_model({"skip": False}),
            }
            models.update(BASELINES)
            for name, score in cross_validate(
                X, y, groups, ENCODERS["DeepNMF(64)"], models
            ).items():
                rows.setdefault(name, []).append(score)
        rows["default minus strong linear baseline"] = list(
            np.subtract(rows[DEFAULT], rows[STRONG])
        )
        table(f"hard set, {task}", rows, seeds)


def section_rnn(seeds, variants):
    for task in ("classes", "onset/offset"):
        rows = {}
        for seed in seeds:
            X, y, groups = hard_set(seed, "classes" if task == "classes" else "dir")
            models = {name: rnn_model(RNN_VARIANTS[name]) for name in variants}
            for name, score in cross_validate(
                X, y, groups, ENCODERS["DeepNMF(64)"], models
            ).items():
                rows.setdefault(name, []).append(score)
        table(f"ExpressionRNN settings on DeepNMF(64) codes, {task}", rows, seeds)


def section_encoders(seeds, encoders):
    rows = {}
    for seed in seeds:
        X, y, groups = hard_set(seed)
        for enc in encoders:
            start = time.perf_counter()
            scores = cross_validate(
                X,
                y,
                groups,
                ENCODERS[enc],
                {
                    "rnn": rnn_model({}),
                    "lmf": BASELINES["last-minus-first codes -> logistic"],
                },
            )
            secs = (time.perf_counter() - start) / 5
            rows.setdefault(f"{enc} -> ExpressionRNN()", []).append(scores["rnn"])
            rows.setdefault(f"{enc} -> last-minus-first logistic", []).append(
                scores["lmf"]
            )
            print(f"  {enc}: {secs:.1f} s per fold (encoder + both models)", flush=True)
    table("frame encoders, hard set, 7 classes", rows, seeds)


def section_timing(repeats=3):
    """Wall and CPU seconds of the default pipeline's fit (CPU time is what a free
    core would take; wall time also counts the other jobs of a shared machine)."""
    X, y, _ = hard_set(0)
    walls, cpus = [], []
    for _ in range(repeats):
        pipe = Pipeline(
            [
                ("frames", FrameEncoder(DeepNMF(64, random_state=0))),
                ("rnn", ExpressionRNN(random_state=0)),
            ]
        )
        start, cpu = time.perf_counter(), time.process_time()
        pipe.fit(X, y)
        walls.append(time.perf_counter() - start)
        cpus.append(time.process_time() - cpu)
    print(
        f"\ndefault pipeline fit on {X.shape}: wall "
        + ", ".join(f"{t:.1f}" for t in walls)
        + " s; CPU "
        + ", ".join(f"{t:.1f}" for t in cpus)
        + f" s (torch threads: {torch.get_num_threads()}; load average "
        + ", ".join(f"{v:.1f}" for v in os.getloadavg())
        + ")"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--section",
        choices=["main", "rnn", "encoders", "timing", "all"],
        default="main",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--variants", nargs="+", default=list(RNN_VARIANTS))
    parser.add_argument("--encoders", nargs="+", default=list(ENCODERS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--subject-variation", type=float, default=None)
    args = parser.parse_args(argv)
    global SUBJECT_VARIATION
    SUBJECT_VARIATION = args.subject_variation
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    if args.section in ("main", "all"):
        section_main(args.seeds)
    if args.section in ("rnn", "all"):
        section_rnn(args.seeds, args.variants)
    if args.section in ("encoders", "all"):
        section_encoders(args.seeds, args.encoders)
    if args.section in ("timing", "all"):
        section_timing()


if __name__ == "__main__":
    main()
