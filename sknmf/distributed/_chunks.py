"""What runs on the workers: one row chunk of ``X`` and the codes of its rows.

Two small dicts per chunk stay where they were computed (DESIGN.md §8): the
data ``x`` (``X``, a dense tensor or :class:`~sknmf._torch.sparse.CSRMatrix`,
and its number of rows ``n``), loaded once; and the chunk's ``codes`` state:
``W`` (the codes of every layer trained so far), the solver's per-stage
``state``, ``stats`` (the statistics of the current iteration, which the
solver's loss reuses) and ``out`` (what the client collects: statistics to
sum). Tasks take both, so the cluster runs them where the data lies. A codes
step's shared decision (the solver protocol's ``codes_decision``) made on the
sample chunk is handed to the others' tasks as ``given``.

Every function here is a task of :mod:`sknmf.distributed._fit`: module-level
(picklable), pure (it returns a new dict and never modifies its inputs, so a
task that the cluster re-runs gives the same result), and written only in the
terms of the solver protocol (:mod:`sknmf._torch.solvers`).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch

from .._torch.divergence import beta_divergence
from .._torch.objective import chain, normalize_rows, objective
from .._torch.sparse import CSRMatrix


def _register_sizes() -> None:
    """Tell Dask what tensors weigh (it counts ~80 bytes for any torch tensor).

    The scheduler moves a task to an idle worker when it thinks the inputs
    are cheap to send: with a chunk's state (X, codes) counted as a few
    hundred bytes it stole the small tasks that read a chunk's state (``pick``)
    and shipped the state, ~0.1 s each at 40000 x 1000 on 8 chunks. This module
    is imported wherever its tasks run, so the sizes are known on every worker.
    """
    try:
        from dask.sizeof import sizeof
    except ImportError:  # pragma: no cover - dask is optional
        return

    @sizeof.register(torch.Tensor)
    def _tensor(t) -> int:
        return int(t.element_size() * t.nelement())

    @sizeof.register(CSRMatrix)
    def _csr(A) -> int:
        return sum(_tensor(t) for t in (A.crow, A.col, A.values))


_register_sizes()


def load(block, dtype: str, device: str, check_zeros: bool) -> dict:
    """A chunk from a block of the Dask array, checked as the in-memory fit checks X.

    The checks run here, on the worker, so that the client never reads X:
    negative values raise scikit-learn's message; ``check_zeros`` (beta <= 0)
    refuses zeros as the in-memory fit does.
    """
    if sp.issparse(block):
        block = sp.csr_matrix(block, dtype=dtype)
        if not block.has_canonical_format:
            block = block.copy()
            block.sum_duplicates()
        values = block.data
        has_zero = block.nnz < block.shape[0] * block.shape[1]
    else:
        block = np.ascontiguousarray(block, dtype=dtype)
        values = block
        has_zero = False
    if values.size and not np.all(np.isfinite(values)):
        raise ValueError("Input X contains NaN or infinity.")
    if values.size and values.min() < 0:
        raise ValueError("Negative values in data passed to DeepNMF (input X)")
    if check_zeros and (has_zero or (values.size and values.min() == 0)):
        raise ValueError(
            "When beta_loss <= 0 and X contains zeros, the solver may diverge. "
            "Please add small values to X, or use a positive beta_loss."
        )
    if sp.issparse(block):
        X = CSRMatrix.from_scipy(block, device)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            X = torch.from_numpy(block).to(device)
    return {"X": X, "n": block.shape[0]}


def set_codes(blocks: list, dtype: str, device: str) -> dict:
    """Codes state from given blocks (``init="custom"``), one per layer."""
    return {
        "W": [torch.as_tensor(np.array(b, dtype=dtype), device=device) for b in blocks]
    }


def _ref(X) -> torch.Tensor:
    return X.values if isinstance(X, CSRMatrix) else X


def target_of(x: dict, chunk: dict, l: int):
    """What layer ``l`` approximates: X for the first layer, else the codes above."""
    return x["X"] if l == 0 else chunk["W"][l - 1]


def shape_info(x: dict, chunk: dict, l: int) -> dict:
    """Summable facts of layer ``l``'s target: rows, stored entries, sum."""
    T = target_of(x, chunk, l)
    sparse = isinstance(T, CSRMatrix)
    nnz = T.nnz if sparse else T.numel()
    total = float(T.sum()) if sparse else float(T.sum(dtype=torch.float64))
    return {"n": T.shape[0], "nnz": nnz, "sum": total, "sparse": sparse}


def start(x: dict, chunk: dict, spec, w, facts: dict | None = None) -> dict:
    """The stage's per-chunk solver state (``spec`` says which layers train).

    ``facts`` are state entries of the whole target that the solver would
    otherwise take from the chunk (``data_shape``: the solver protocol's
    :meth:`~sknmf._torch.solvers.Solver.codes_sample_rows`).
    """
    out = dict(chunk)
    W = list(chunk["W"])
    Ws = [spec.solver.codes_layout(W[l]) for l in spec.layers]
    for l, Wl in zip(spec.layers, Ws):
        W[l] = Wl
    out["W"] = W
    T = target_of(x, chunk, spec.layers[0])
    state = spec.solver.start(T, Ws, spec.weights(w), update_H=True)
    state.update(facts or {})
    out["state"] = state
    out["stats"] = {}
    out.pop("out", None)
    return out


def codes_and_statistics(
    x: dict, chunk: dict, spec, w, layers: list, first: bool, given=None
):
    """One weight phase of an iteration on the chunk.

    ``first``: the codes of the stage's layers are updated (row-local) before
    the statistics of ``layers`` are taken; later phases take statistics only.
    The statistics land in ``out`` for the reduction and in ``stats`` for the
    chunk's own loss. ``given`` is the codes step's shared decision made on
    the sample chunk (None: this chunk decides; its decision lands in
    ``decision``).
    """
    chunk = _committed(chunk)
    out = dict(chunk)
    W, stats, s, decision = _step(x, chunk, spec, w, layers, first, given)
    out.update(W=W, stats=stats, out=s, decision=decision)
    return out


def _step(x, chunk, spec, w, layers, first, given=None):
    solver = spec.solver
    T = target_of(x, chunk, spec.layers[0])
    Ws = [chunk["W"][l].clone() for l in spec.layers]
    Hs = spec.weights(w)
    state = chunk["state"]
    state["reg"] = spec.reg_of(x["n"])
    decision = None
    with torch.no_grad():
        if first:
            state.update(w.client_state)
            state["given_decision"] = given
            solver.update_codes(T, Ws, Hs, state)
            decision = state.pop("codes_decision", None)
            stats = {}
        else:
            stats = dict(chunk["stats"])
        s = solver.statistics(T, Ws, Hs, layers, state)
    stats.update(s)
    W = list(chunk["W"])
    for l, Wl in zip(spec.layers, Ws):
        W[l] = Wl
    # What travels is on the CPU: the client may have no GPU.
    return W, stats, _cpu(s), decision


def _cpu(stats):
    if isinstance(stats, dict):
        return {k: _cpu(v) for k, v in stats.items()}
    return stats.cpu() if isinstance(stats, torch.Tensor) else stats


def _committed(chunk: dict) -> dict:
    """The chunk with its step ahead (:func:`loss_and_next`) taken."""
    ahead = chunk.get("ahead")
    if ahead is None:
        return chunk
    out = {k: v for k, v in chunk.items() if k != "ahead"}
    out["W"], out["stats"] = ahead
    return out


def loss_and_next(
    x: dict, chunk: dict, spec, w, layers: list, need_loss: bool = True, given=None
) -> dict:
    """The chunk's loss after this iteration (None unless ``need_loss``), and
    the next iteration's first phase computed ahead (one trip to the workers
    per iteration).

    The codes ahead stay aside (``ahead``) until the next iteration takes
    them, so a stage that stops here keeps the codes of its last weights.
    ``out`` holds the loss and the statistics ahead; ``given`` and
    ``decision`` as in :func:`codes_and_statistics`.
    """
    chunk = _committed(chunk)
    out = dict(chunk)
    value = loss(x, chunk, spec, w) if need_loss else None
    W, stats, s, out["decision"] = _step(x, chunk, spec, w, layers, True, given)
    out["ahead"] = (W, stats)
    # Both add up over chunks: one reduction brings the loss and the next
    # iteration's statistics to the client.
    out["out"] = {"loss": value, "stats": s}
    return out


def loss(x: dict, chunk: dict, spec, w) -> tuple[float, list]:
    """The solver's loss on the chunk after the step: ``(total, terms)`` as floats.

    The chunk's regularisation carries its share of the weights' penalty, so
    the totals of all chunks add up to the objective of the whole array.
    """
    T = target_of(x, chunk, spec.layers[0])
    Ws = [chunk["W"][l] for l in spec.layers]
    state = chunk["state"]
    state["reg"] = spec.reg_of(x["n"])
    with torch.no_grad():
        total, terms = spec.solver.loss(T, Ws, spec.weights(w), chunk["stats"], state)
    return float(total), [float(t) for t in terms]


def objective_of(x: dict, chunk: dict, spec, w) -> tuple[float, list]:
    """The objective of the chunk before any step (the stopping rule's start)."""
    T = target_of(x, chunk, spec.layers[0])
    Ws = [chunk["W"][l] for l in spec.layers]
    problem = spec.solver.problem.with_reg(spec.reg_of(x["n"]))
    with torch.no_grad():
        total, terms = objective(T, Ws, spec.weights(w), problem)
    return float(total), [float(t) for t in terms]


def finish(x: dict, chunk: dict) -> dict:
    """The chunk without the stage's state and statistics."""
    drop = ("state", "stats", "out", "ahead", "loss", "decision")
    return {k: v for k, v in chunk.items() if k not in drop}


def rescale(chunk: dict, l: int, w) -> dict:
    """Codes of layer ``l`` absorbing the scale of ``H``'s rows (simplex rows)."""
    out = dict(chunk)
    W = list(chunk["W"])
    H = w.Hs[0]
    W[l], _ = normalize_rows(W[l], H.to(W[l].device))
    out["W"] = W
    return out


def layer_terms(x: dict, chunk: dict, w, beta: float) -> list:
    """Each layer's layer-centric divergence on the chunk (floats, summable)."""
    X, Ws = x["X"], chunk["W"]
    Hs = _on(w, _ref(X))
    with torch.no_grad():
        return [
            float(beta_divergence(X if l == 0 else Ws[l - 1], Ws[l], Hs[l], beta))
            for l in range(len(Hs))
        ]


def reconstruction(x: dict, chunk: dict, w, beta: float) -> float:
    """``D(X | WL HL ⋯ H1)`` on the chunk (summable)."""
    Hs = _on(w, _ref(x["X"]))
    with torch.no_grad():
        comp = chain(Hs, 0, len(Hs))
        return float(beta_divergence(x["X"], chunk["W"][-1], comp, beta))


def rebuild(x: dict, w, solvers: list, n_sweeps: int) -> dict:
    """A lost chunk's codes, recomputed from its X and the current weights.

    Layer by layer, each from its solver's deterministic start, refined by
    ``n_sweeps`` row-local code updates for the fixed weights: what the chunk
    would hold had it followed the fit, up to the codes' own convergence.
    """
    W = []
    target = x["X"]
    Hs = _on(w, _ref(target))
    with torch.no_grad():
        for H, solver in zip(Hs, solvers):
            Wl = solver.codes_layout(
                solver.initial_codes(target, H, solver.problem.reg)
            )
            state = solver.start(target, [Wl], [H], update_H=False)
            Ws = [Wl]
            for _ in range(n_sweeps):
                solver.update_codes(target, Ws, [H], state)
            state.pop("codes_products", None)
            W.append(Ws[0])
            target = Ws[0]
    return {"W": W}


def _on(w, ref: torch.Tensor) -> list:
    """The broadcast weights on the chunk's device."""
    return [H.to(ref.device) for H in w.Hs]


def add(a, b):
    """Sum of two statistics (nested dicts of tensors, lists or numbers)."""
    if a is None:
        return b
    if isinstance(a, dict):
        return {k: add(a[k], b[k]) for k in a}
    if isinstance(a, (list, tuple)):
        return type(a)(add(x, y) for x, y in zip(a, b))
    if isinstance(a, bool):
        return a or b
    return a + b


def add_all(*parts):
    """Sum of small results (see :func:`add`)."""
    total = None
    for p in parts:
        total = add(total, p)
    return total


def identity(value):
    return value


def pick(chunk: dict, key: str):
    """One entry of a chunk (what a reduction starts from)."""
    return chunk[key]


class Weights:
    """The weights broadcast to the workers once per update (on the CPU), with
    the values of the client's state named by the solver's ``client_state_keys``."""

    def __init__(self, Hs, client_state: dict | None = None):
        self.Hs = [H.detach().cpu() for H in Hs]
        self.client_state = dict(client_state or {})


class StageSpec:
    """What a stage's tasks need: the solver, which codes train, the penalties.

    ``layers`` are the indices of the chunk's codes the stage updates (a
    layer's pretraining: one; the fine-tuning: all); the first one's target is
    X or the codes above it. ``reg`` is the problem's regularisation for all
    ``n_total`` rows: a chunk carries its share of the weights' penalty.
    """

    def __init__(self, solver, layers, n_total: int, device: str = "cpu"):
        self.solver = solver
        self.layers = list(layers)
        self.reg = solver.problem.reg
        self.n_total = n_total
        self.device = device

    def reg_of(self, n: int):
        return None if self.reg is None else self.reg.scaled(n / self.n_total)

    def weights(self, w) -> list:
        return [H.to(self.device) for H in w.Hs]
