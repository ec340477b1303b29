"""The methods the suite compares, behind one small interface.

A method knows how to

- ``prepare(X)``: turn the float64 data set into the input a user would hand it
  (e.g. float32), outside every timing;
- ``fit(X, k, n_iter)``: fit from scratch with exactly ``n_iter`` iterations
  (init included, ``tol=0``) and return ``(W, H)`` as numpy arrays; this is what
  the timed repetitions call, end to end;
- ``trace(X, k, ...)``: the error after every iteration and the time spent so
  far, with the error evaluations left out of the clock. White-box methods
  instrument their own loop; black-box ones (estimators) refit with growing
  ``max_iter``;
- ``product_flops`` and ``products``: the flops of the matrix products of one
  iteration and a callable running exactly those products, for GFLOP/s.

Every method starts from scikit-learn's default initialisation for these shapes
(``nndsvda``), so the curves differ by the solver alone.
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

# ---------------------------------------------------------------- errors


def frobenius_error(X, W, H) -> float:
    """``||X - W H||_F`` in float64 (Gram form: no dense temporary for sparse X)."""
    W = np.asarray(W, dtype=np.float64)
    H = np.asarray(H, dtype=np.float64)
    if sp.issparse(X):
        X = X.astype(np.float64)
        sq_x = float(X.multiply(X).sum())
        cross = float(np.vdot(np.asarray(X.T @ W).T, H))
    else:
        X = np.asarray(X, dtype=np.float64)
        sq_x = float(np.vdot(X, X))
        cross = float(np.vdot(W.T @ X, H))
    sq = sq_x - 2.0 * cross + float(np.vdot(W.T @ W, H @ H.T))
    return math.sqrt(max(sq, 0.0))


class TorchError:
    """The same error evaluated in torch float64 (keeps numpy's BLAS idle)."""

    def __init__(self, X, device="cpu"):
        self.X = to_torch(X, torch.float64, device)
        vals = self.X.values if sp.issparse(X) else self.X
        self.sq_x = float(torch.linalg.vector_norm(vals)) ** 2

    def __call__(self, W, H) -> float:
        from sknmf._torch.solvers.hals import _wt_x

        W = W.to(torch.float64)
        H = H.to(torch.float64)
        cross = float(torch.vdot(_wt_x(self.X, W.T).flatten(), H.flatten()))
        gram = float(torch.vdot((W.T @ W).flatten(), (H @ H.T).flatten()))
        return math.sqrt(max(self.sq_x - 2.0 * cross + gram, 0.0))


def to_torch(X, dtype, device="cpu"):
    """A dense tensor (sharing memory when it can) or, for sparse X, sknmf's
    ``CSRMatrix`` (what DeepNMF uses: it keeps the transpose's structure, so
    ``W.T @ X`` costs what ``X @ H.T`` costs)."""
    if sp.issparse(X):
        from sknmf._torch.sparse import CSRMatrix

        X = sp.csr_matrix(X, dtype=_np_dtype(dtype), copy=True)
        X.sum_duplicates()
        return CSRMatrix.from_scipy(X, device)
    return torch.from_numpy(np.asarray(X, dtype=_np_dtype(dtype))).to(device)


def _np_dtype(dtype):
    return {torch.float32: np.float32, torch.float64: np.float64}[dtype]


# ---------------------------------------------------------------- traces


@dataclass
class Trace:
    """Errors along one run; ``times[i]`` is the clock after ``iters[i]``."""

    iters: list = field(default_factory=list)
    times: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    stopped: str = ""
    per_iter: float | None = None

    def add(self, it, t, err):
        self.iters.append(int(it))
        self.times.append(float(t))
        self.errors.append(float(err))

    def first_below(self, target):
        for it, t, e in zip(self.iters, self.times, self.errors):
            if e <= target:
                return it, t
        return None, None


#: Seconds of idle time before each end-to-end timed fit (see settle).
SETTLE_SECONDS = 0.25


def settle() -> None:
    """Let the previous library's thread pool go idle before a timed fit.

    After its last call an OpenBLAS pool (numpy, scikit-learn) keeps its
    threads spinning for about a tenth of a second; on a 2-core machine a torch
    fit started meanwhile waits for a core in every parallel region (measured:
    DeepNMF on the digits 0.04 s alone, 0.08-0.14 s right after scikit-learn's
    cd, and cd slowed likewise after torch). Every timed fit of every method
    starts after the same pause, so none pays for the one before it.
    """
    if SETTLE_SECONDS > 0:
        time.sleep(SETTLE_SECONDS)


def _whitebox_trace(init, step, error, max_iter, max_seconds, target, converged=None):
    """Run ``step()`` repeatedly; only ``init`` and ``step`` are on the clock."""
    trace = Trace()
    start = time.perf_counter()
    state = init()
    clock = time.perf_counter() - start
    trace.add(0, clock, error(state))
    durations = []
    trace.stopped = "max_iter"
    for it in range(1, max_iter + 1):
        start = time.perf_counter()
        info = step(state)
        dt = time.perf_counter() - start
        clock += dt
        durations.append(dt)
        err = error(state)
        trace.add(it, clock, err)
        if converged is not None and converged(it, info):
            trace.stopped = "converged"
            break
        if target is not None and err <= target:
            trace.stopped = "target"
            break
        if clock > max_seconds:
            trace.stopped = "time"
            break
    trace.per_iter = float(np.median(durations)) if durations else None
    return trace, state


def _blackbox_trace(method, X, k, max_iter, max_seconds, target):
    """Refit from scratch with growing ``max_iter`` (each fit timed end to end),
    then bisect the first iteration count that reaches ``target``."""
    trace = Trace()
    spent = 0.0
    results = {}

    def run(n):
        nonlocal spent
        settle()
        start = time.perf_counter()
        W, H = method.fit(X, k, n)
        t = time.perf_counter() - start
        spent += t
        results[n] = (t, frobenius_error(X, W, H))
        return results[n]

    n, lo, hi = 1, 0, None
    trace.stopped = "max_iter"
    previous = math.inf
    while n <= max_iter:
        t, err = run(n)
        if target is not None and err <= target:
            hi = n
            trace.stopped = "target"
            break
        if n >= 20 and err >= previous * (1 - 1e-7):
            # More iterations changed nothing: the method stopped on its own tol.
            trace.stopped = "converged"
            break
        previous = err
        lo = n
        # Judge the method by one run, not by the sum of the refits: a fit
        # that alone outlasts the budget without reaching the target loses.
        if t > max_seconds or spent > 10 * max_seconds:
            trace.stopped = "time"
            break
        n = max(n + 1, int(round(n * 1.5)))
    if hi is not None:
        # Bisect to within ~5% so the timed runs do not overpay for coarse steps.
        while hi - lo > max(1, hi // 20) and spent <= 6 * max_seconds:
            mid = (lo + hi) // 2
            if run(mid)[1] <= target:
                hi = mid
            else:
                lo = mid
    for n in sorted(results):
        trace.add(n, *results[n])
    ns = sorted(results)
    if len(ns) >= 2:
        (n1, (t1, _)), (n2, (t2, _)) = (
            (ns[-2], results[ns[-2]]),
            (ns[-1], results[ns[-1]]),
        )
        if n2 > n1 and t2 > t1:
            trace.per_iter = (t2 - t1) / (n2 - n1)
    return trace


# ---------------------------------------------------------------- methods


class Method:
    name = ""
    family = ""
    dtype = np.float64
    device = "cpu"
    whitebox = False

    @classmethod
    def available(cls) -> bool:
        return True

    def prepare(self, X):
        if sp.issparse(X):
            return sp.csr_matrix(X, dtype=self.dtype)
        return np.ascontiguousarray(X, dtype=self.dtype)

    def fit(self, X, k, n_iter):
        raise NotImplementedError

    def trace(self, X, k, *, max_iter, max_seconds, target):
        return _blackbox_trace(self, X, k, max_iter, max_seconds, target)

    def product_flops(self, X, k) -> float:
        """Flops of the two products that touch X and the two Gram matrices."""
        n, p = X.shape
        nnz = X.nnz if sp.issparse(X) else n * p
        return 4.0 * nnz * k + 2.0 * (n + p) * k * k

    def products(self, X, k):
        raise NotImplementedError

    def peak_key(self):
        lib = "numpy" if self.family == "scikit-learn" else "torch"
        key = f"{lib}-{np.dtype(self.dtype).name}"
        return key if self.device == "cpu" else f"{key}-{self.device}"


def _nndsvda(X, k):
    from sklearn.decomposition._nmf import _initialize_nmf

    # nndsvda's randomized SVD draws: seed it so every method starts alike.
    return _initialize_nmf(X, k, init="nndsvda", random_state=0)


class SklearnCD(Method):
    """``NMF(solver="cd")``, scikit-learn's defaults (float64)."""

    name = "sklearn-cd"
    family = "scikit-learn"
    whitebox = True

    def fit(self, X, k, n_iter):
        from sklearn.decomposition import NMF

        est = NMF(k, solver="cd", max_iter=n_iter, tol=0.0, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            W = est.fit_transform(X)
        return W, est.components_

    def trace(self, X, k, *, max_iter, max_seconds, target, tol=None):
        """scikit-learn's ``_fit_coordinate_descent`` loop, instrumented.

        With ``tol`` set it stops exactly where ``NMF(solver="cd", tol=tol)``
        stops (same violation test), which gives the reference error.
        """
        from sklearn.decomposition._nmf import _update_coordinate_descent

        rng = np.random.RandomState(0)  # unused: shuffle=False, as the default
        Xt = X.T

        def init():
            W, H = _nndsvda(X, k)
            return {"W": np.ascontiguousarray(W), "Ht": np.ascontiguousarray(H.T)}

        def step(s):
            v = _update_coordinate_descent(X, s["W"], s["Ht"], 0.0, 0.0, False, rng)
            v += _update_coordinate_descent(Xt, s["Ht"], s["W"], 0.0, 0.0, False, rng)
            return v

        first = {}

        def converged(it, violation):
            if tol is None:
                return False
            if it == 1:
                first["v"] = violation
            return first["v"] == 0 or violation / first["v"] <= tol

        trace, state = _whitebox_trace(
            init,
            step,
            lambda s: frobenius_error(X, s["W"], s["Ht"].T),
            max_iter,
            max_seconds,
            target,
            converged,
        )
        return trace

    def products(self, X, k):
        from sklearn.utils.extmath import safe_sparse_dot

        W, H = _nndsvda(X, k)
        Ht = np.ascontiguousarray(H.T)
        Xt = X.T
        return lambda: (
            safe_sparse_dot(X, Ht),
            safe_sparse_dot(Xt, W),
            Ht.T @ Ht,
            W.T @ W,
        )


class SklearnMU(Method):
    """``NMF(solver="mu")`` on float64."""

    name = "sklearn-mu"
    family = "scikit-learn"
    whitebox = True

    def fit(self, X, k, n_iter):
        from sklearn.decomposition import NMF

        est = NMF(k, solver="mu", max_iter=n_iter, tol=0.0, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            W = est.fit_transform(X)
        return W, est.components_

    def trace(self, X, k, *, max_iter, max_seconds, target):
        from sklearn.decomposition._nmf import _fit_multiplicative_update

        def init():
            W, H = _nndsvda(X, k)
            return {"W": W, "H": H}

        def step(s):
            s["W"], s["H"], *_ = _fit_multiplicative_update(
                X, s["W"], s["H"], "frobenius", max_iter=1, tol=0.0
            )

        trace, _ = _whitebox_trace(
            init,
            step,
            lambda s: frobenius_error(X, s["W"], s["H"]),
            max_iter,
            max_seconds,
            target,
        )
        return trace

    def product_flops(self, X, k):
        n, p = X.shape
        # plus W (H H^T) and (W^T W) H in the denominators
        return super().product_flops(X, k) + 2.0 * (n + p) * k * k

    def products(self, X, k):
        from sklearn.utils.extmath import safe_sparse_dot

        W, H = _nndsvda(X, k)
        return lambda: (
            safe_sparse_dot(X, H.T),
            safe_sparse_dot(W.T, X),
            W @ (H @ H.T),
            (W.T @ W) @ H,
        )


class SklearnMiniBatch(Method):
    """``MiniBatchNMF`` (one iteration = one epoch over the data)."""

    name = "sklearn-minibatch"
    family = "scikit-learn"

    def fit(self, X, k, n_iter):
        from sklearn.decomposition import MiniBatchNMF

        est = MiniBatchNMF(
            k, max_iter=n_iter, tol=0.0, max_no_improvement=None, random_state=0
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            W = est.fit_transform(X)
        return W, est.components_

    def products(self, X, k):
        return SklearnMU().products(X, k)

    def product_flops(self, X, k):
        return SklearnMU().product_flops(X, k)


class TorchNMF(Method):
    """``torchnmf.nmf.NMF`` (multiplicative updates, beta = 2), where installed.

    torchnmf starts from random factors; here it starts from scikit-learn's
    NNDSVDa factors, like every other method. Its model is ``V = H W^T`` with
    ``H`` the codes: the adapter transposes. Float32 (torchnmf allocates its
    parameters in torch's default dtype); a sparse X is passed as a sparse COO
    tensor, which torchnmf accepts.
    """

    name = "torchnmf-float32"
    family = "torchnmf"
    dtype = np.float32

    @classmethod
    def available(cls) -> bool:
        return _import_torchnmf() is not None

    def prepare(self, X):
        X = super().prepare(X)
        # The tensor is built here, outside the clock, like every method's input.
        self._prepared = (X, self._tensor(X))
        return X

    @staticmethod
    def _tensor(X):
        if not sp.issparse(X):
            return torch.from_numpy(X)
        coo = X.tocoo()
        idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
        V = torch.sparse_coo_tensor(
            idx, torch.from_numpy(coo.data), coo.shape, check_invariants=True
        )
        return V.coalesce()

    def fit(self, X, k, n_iter):
        TNMF = _import_torchnmf().NMF
        prepared = getattr(self, "_prepared", (None, None))
        V = prepared[1] if prepared[0] is X else self._tensor(X)
        W0, H0 = _nndsvda(X, k)
        model = TNMF(
            W=torch.from_numpy(np.ascontiguousarray(H0.T)),
            H=torch.from_numpy(np.ascontiguousarray(W0)),
        )
        # tol=0 runs exactly n_iter iterations (it stops only on an increase).
        model.fit(V, beta=2, tol=0.0, max_iter=n_iter)
        return model.H.detach().numpy(), model.W.detach().numpy().T

    def products(self, X, k):
        return TorchMUProducts.make(X, k, torch.float32)

    def product_flops(self, X, k):
        return SklearnMU().product_flops(X, k)


def _import_torchnmf():
    """``torchnmf.nmf``, or None; its import trips torch's deprecation of
    ``torch.jit.script``, which is torchnmf's to fix, not ours to show."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import torchnmf.nmf
        except ImportError:
            return None
    return torchnmf.nmf


class RawHALS(Method):
    """``sknmf._torch.solvers.hals.hals_step`` in a bare loop (no estimator)."""

    family = "sknmf._torch"
    whitebox = True

    def __init__(self, dtype=np.float32, device="cpu"):
        self.dtype = dtype
        self.device = device
        self.name = f"hals-{np.dtype(dtype).name}" + (
            "" if device == "cpu" else f"-{device}"
        )

    @property
    def _tdtype(self):
        return torch.float32 if self.dtype == np.float32 else torch.float64

    def _init(self, X, k):
        W0, H0 = _nndsvda(X, k)
        Xt = to_torch(X, self._tdtype, self.device)
        # Column-major W: each component contiguous, as hals_step prefers.
        W = torch.from_numpy(np.asfortranarray(W0)).to(self.device)
        if self.device != "cpu":
            W = W.T.contiguous().T
        H = torch.from_numpy(np.ascontiguousarray(H0)).to(self.device)
        return Xt, W, H

    def fit(self, X, k, n_iter):
        from sknmf._torch.solvers.hals import hals_step

        Xt, W, H = self._init(X, k)
        for _ in range(n_iter):
            hals_step(Xt, W, H)
        return W.cpu().numpy(), H.cpu().numpy()

    def trace(self, X, k, *, max_iter, max_seconds, target):
        from sknmf._torch.solvers.hals import hals_step

        error = TorchError(X, self.device)

        def init():
            return self._init(X, k)

        def step(s):
            hals_step(*s)
            if self.device != "cpu":
                torch.cuda.synchronize()

        trace, _ = _whitebox_trace(
            init, step, lambda s: error(s[1], s[2]), max_iter, max_seconds, target
        )
        return trace

    def products(self, X, k):
        from sknmf._torch.solvers.hals import _wt_x, _x_ht

        Xt, W, H = self._init(X, k)
        Wt = W.T.contiguous()
        return lambda: (_x_ht(Xt, H), _wt_x(Xt, Wt), H @ H.T, Wt @ Wt.T)


class TorchMUProducts:
    """The products of one Frobenius multiplicative-update iteration, in torch."""

    @staticmethod
    def make(X, k, dtype, device="cpu"):
        W0, H0 = _nndsvda(X, k)
        Xt = to_torch(X, dtype, device)
        W = torch.from_numpy(W0).to(device)
        H = torch.from_numpy(H0).to(device)
        from sknmf._torch.sparse import matmul, tmatmul

        return lambda: (
            matmul(Xt, H.T),
            tmatmul(W, Xt),
            W @ (H @ H.T),
            (W.T @ W) @ H,
        )


def deepnmf_solvers() -> set:
    """The solvers this checkout's DeepNMF accepts."""
    try:
        from sknmf import DeepNMF
    except ImportError:
        return set()
    for c in DeepNMF._parameter_constraints["solver"]:
        if hasattr(c, "options"):
            return set(c.options)
    return set()


class DeepNMFMethod(Method):
    """``sknmf.DeepNMF``, one layer, ``init="nndsvda"``, default ``tol``.

    Timed end to end through ``fit_transform`` (validation, conversion, the
    skorch loop and the final encoding of X included); the error is that of the
    codes it returns with ``components_``.
    """

    family = "sknmf"

    def __init__(self, solver="auto", dtype=np.float32, device="cpu"):
        self.solver = solver
        self.dtype = dtype
        self.device = device
        self.name = f"DeepNMF-{solver}-{np.dtype(dtype).name}" + (
            "" if device == "cpu" else f"-{device}"
        )

    def estimator(self, k, n_iter, **params):
        from sknmf import DeepNMF

        return DeepNMF(
            k,
            solver=self.solver,
            init="nndsvda",
            max_iter=n_iter,
            device=self.device,
            random_state=0,
            **params,
        )

    def fit(self, X, k, n_iter):
        est = self.estimator(k, n_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            W = est.fit_transform(X)
        return W, est.components_

    def _resolved(self):
        if self.solver != "auto":
            return self.solver
        return "hals" if "hals" in deepnmf_solvers() else "mu"

    def products(self, X, k):
        tdtype = torch.float32 if self.dtype == np.float32 else torch.float64
        if self._resolved() == "hals":
            return RawHALS(self.dtype, self.device).products(X, k)
        return TorchMUProducts.make(X, k, tdtype, self.device)

    def product_flops(self, X, k):
        if self._resolved() == "hals":
            return super().product_flops(X, k)
        return SklearnMU().product_flops(X, k)


def deep_epoch_cost(X, k, dtype=np.float32, n_iter=20, solver="auto"):
    """Median seconds per fine-tuning epoch: three layers (k, k/2, k/4) against
    one layer of width k (issue 5: at most 2x)."""
    from sknmf import DeepNMF

    out = {}
    ranks = {"one_layer": k, "three_layers": (k, max(1, k // 2), max(1, k // 4))}
    Xp = np.ascontiguousarray(X, dtype=dtype) if not sp.issparse(X) else X
    for name, nc in ranks.items():
        # One layer has no pretraining (DeepNMF raises on pretrain_max_iter).
        pre = None if isinstance(nc, int) else 5
        est = DeepNMF(
            nc,
            solver=solver,
            max_iter=n_iter,
            pretrain_max_iter=pre,
            tol=0.0,
            random_state=0,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(Xp)
        durs = [float(d) for d in est.history_[:, "dur"]]
        out[name] = float(np.median(durs))
    out["ratio"] = out["three_layers"] / out["one_layer"]
    return out


# ---------------------------------------------------------------- registry


def all_methods(device="cpu", quick=False) -> list[Method]:
    """Every method; ``quick`` keeps one dtype per solver (float32)."""
    methods = [SklearnCD(), RawHALS(np.float32)]
    if not quick:
        methods.append(RawHALS(np.float64))
    methods += [SklearnMU(), SklearnMiniBatch()]
    solvers = deepnmf_solvers()
    for solver in ("auto", "hals", "mu", "adam"):
        if solver not in solvers or (quick and solver in ("hals", "adam")):
            continue
        dtypes = (np.float32,)
        if solver in ("hals", "mu") and not quick:
            dtypes = (np.float32, np.float64)
        methods += [DeepNMFMethod(solver, dt) for dt in dtypes]
    if TorchNMF.available():
        methods.append(TorchNMF())
    if device.startswith("cuda"):
        methods.append(RawHALS(np.float32, device))
        if "auto" in solvers:
            methods.append(DeepNMFMethod("auto", np.float32, device))
    return methods


def make_method(name: str) -> Method:
    device = "cuda" if name.endswith("-cuda") else "cpu"
    for m in all_methods(device):
        if m.name == name:
            return m
    raise KeyError(name)


def save_matrix(X, path):
    if sp.issparse(X):
        sp.save_npz(path, sp.csr_matrix(X))
    else:
        np.save(path, X)


def load_matrix(path):
    if str(path).endswith(".npz"):
        return sp.load_npz(path).tocsr()
    return np.load(path)
