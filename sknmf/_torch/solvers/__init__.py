"""The solver protocol (DESIGN.md §3a) and the registry of solvers.

Every NMF solver here has one shape:

- **row-local work** (:meth:`Solver.update_codes`): given the weights
  ``H1..HL``, update the codes ``W1..WL`` of a block of rows; rows never talk to
  each other, except through a solver's **shared decision**: a few numbers
  decided on the first :meth:`Solver.codes_sample_rows` rows of the data and
  followed by all rows (HALS's number of sweeps), so that a block gets the
  steps it gets inside the whole data when it is handed the decision;
- **statistics** (:meth:`Solver.statistics`): from a block, small tensors that
  add up over blocks (``r × r'`` or ``r × n_features``, never
  ``n_samples``-sized);
- **weight update** (:meth:`Solver.update_weights`): new ``H``s from the
  statistics summed over blocks, or folded over mini-batches with a forget
  factor (:meth:`Solver.fold`, the online rule);
- **loss** (:meth:`Solver.loss`): the objective after the step, from the
  block's own products where the solver can.

:func:`iterate` is one iteration written once in those terms; the skorch net
(:mod:`sknmf._torch.nets`) calls it for every fit, transform and partial_fit.
A new solver is one module with a :class:`Solver` subclass and one line in
:data:`SOLVERS`. Nothing outside a solver's module branches on its name.
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..divergence import squared_norm
from ..init import constant_codes, data_mean
from ..objective import Problem, Regularization, objective


class Solver:
    """Base class of the solvers: the protocol, with the defaults they share.

    A solver instance serves one training stage (a fit, a layer's pretraining,
    an encoding). Per-stage buffers and caches live in the ``state`` dict that
    :meth:`start` returns; they are dropped with it at the end of the stage.

    Parameters
    ----------
    problem : Problem
        Divergence, objective form, layer weights and penalties.
    """

    #: The name in :data:`SOLVERS`.
    name: ClassVar[str] = ""
    #: Epochs between two checks of the stopping rule when only codes move
    #: (``transform``). scikit-learn checks every 10 iterations.
    codes_check_every: ClassVar[int] = 10
    #: Keys of the state that :meth:`update_weights` sets and every block's
    #: :meth:`update_codes` reads (deep HALS's extrapolation step). In memory
    #: the state is one dict; a distributed fit sends these values of the
    #: client's state with the weights.
    client_state_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, problem: Problem, **options):
        # Options of other solvers (e.g. Adam's ``lr``) do not concern this one.
        self.problem = problem
        self.options = options

    @classmethod
    def for_problem(cls, problem: Problem, *, batched: bool, **options) -> Solver:
        """The solver that runs this solver's algorithm on ``problem``.

        Raises a ``ValueError`` naming the fix when the algorithm cannot solve
        it; may return another solver where the algorithm hands a problem over
        (documented in that solver's module).
        """
        return cls(problem, **options)

    # -- per-stage set-up ------------------------------------------------
    def start(self, X, Ws, Hs, *, update_H: bool) -> dict:
        """State of a stage: ``||X||²`` when the loss needs it, caches, buffers."""
        return {"update_H": update_H}

    def codes_layout(self, W: torch.Tensor) -> torch.Tensor:
        """The memory layout the solver updates codes in (default: as given)."""
        return W

    def codes_sample_rows(self, ranks) -> int:
        """How many leading rows decide the codes step's shared decision.

        ``ranks`` are the widths of the codes the step updates. 0 (the
        default): the codes step is row-local, no decision is shared. Else
        :meth:`update_codes` decides something on the first
        ``min(n_rows, codes_sample_rows(ranks))`` rows of the block it is
        given (stored as ``state["codes_decision"]``, small and picklable)
        that every row follows; given ``state["given_decision"]`` it follows
        that instead of deciding. So a caller splitting the data into blocks
        (a Dask fit) runs the block of the leading rows first and hands its
        decision to the others, and sets ``state["data_shape"] = (nnz,
        n_rows)`` of the whole data where a solver reads the data's size
        (default: the block's own). A block then gets exactly the steps it
        gets inside the whole data.
        """
        return 0

    def initial_codes(self, X, H: torch.Tensor, reg: Regularization | None):
        """Deterministic start of the codes of ``X`` for fixed ``H`` (transform)."""
        return constant_codes(X.shape[0], H.shape[0], data_mean(X), H)

    def reg(self, state: dict):
        """The penalties of the current block (a mini-batch carries its share
        of the weights' penalty: :meth:`Regularization.scaled`)."""
        reg = state.get("reg")
        return self.problem.reg if reg is None else reg

    def block_problem(self, state: dict) -> Problem:
        return self.problem.with_reg(self.reg(state))

    # -- the iteration ---------------------------------------------------
    def update_codes(self, X, Ws: list, Hs: list, state: dict) -> None:
        """Row-local: update ``Ws`` (in place on the list) for fixed ``Hs``
        (but for a shared decision: :meth:`codes_sample_rows`)."""
        raise NotImplementedError

    def weight_phases(self) -> list[list[int]]:
        """Groups of layers whose weights are updated together.

        The statistics of a group are taken with the weights of the earlier
        groups already updated. Default: all layers at once.
        """
        return [list(range(self.problem.n_layers))]

    def statistics(self, X, Ws, Hs, layers, state) -> dict:
        """``{layer: {name: tensor}}``, each tensor a sum over the block's rows."""
        raise NotImplementedError

    def fold(self, running: dict | None, stats: dict, rho: float, Hs, reg) -> dict:
        """Online rule: running statistics ``rho * running + stats``.

        ``reg`` is the batch's regularisation, for solvers that fold the
        penalties' terms into the statistics.
        """
        out = dict(running or {})
        for l, s in stats.items():
            past = out.get(l)
            out[l] = (
                s
                if past is None
                else {name: rho * past[name] + t for name, t in s.items()}
            )
        return out

    def update_weights(self, layers, stats, Hs, state, *, online=False) -> None:
        """New ``Hs[l]`` for ``l`` in ``layers`` (in place on the list)."""
        raise NotImplementedError

    def loss(self, X, Ws, Hs, stats, state):
        """``(total, terms)`` of the objective after the step (``total`` with
        the penalties, ``terms`` the ``D_l`` without their ``λ_l``)."""
        return objective(X, Ws, Hs, self.block_problem(state))

    # -- persistence across partial_fit calls ---------------------------
    def online_state(self, state) -> dict | None:
        """What an online learner keeps between batches besides statistics."""
        return None


def iterate(
    solver: Solver,
    X,
    Ws: list,
    Hs: list,
    state: dict,
    *,
    running: dict | None = None,
    rho: float | None = None,
    reg=None,
    need_loss: bool = True,
):
    """One iteration on a block: codes, then weights phase by phase, then the loss.

    ``reg`` is the block's regularisation (None: the problem's). With ``rho``
    set, the weights follow the online rule: the block's statistics are folded
    into ``running`` (returned) before the update.

    ``need_loss=False`` skips the loss (a transform checks it only every few
    epochs) and returns None for it.

    Returns
    -------
    total, terms, running
    """
    stats: dict = {}
    state["reg"] = reg
    solver.update_codes(X, Ws, Hs, state)
    if state["update_H"]:
        for layers in solver.weight_phases():
            s = solver.statistics(X, Ws, Hs, layers, state)
            stats.update(s)
            if rho is not None:
                running = solver.fold(running, s, rho, Hs, reg)
                s = {l: running[l] for l in layers}
            solver.update_weights(layers, s, Hs, state, online=rho is not None)
    if not need_loss:
        state.pop("codes_products", None)
        return None, None, running
    total, terms = solver.loss(X, Ws, Hs, stats, state)
    return total, terms, running


def cached_squared_norm(X, state: dict) -> float:
    """``||X||²`` of this block, computed once for a block seen every epoch.

    The loss in Gram form needs it every epoch; the full batch is the same
    tensor each time, mini-batches are new ones.
    """
    if state.get("sq_norm_of") is not X:
        state["sq_norm_of"] = X
        state["sq_norm"] = squared_norm(X)
    return state["sq_norm"]


from .adam import AdamSolver  # noqa: E402
from .deep_hals import DeepHALSSolver  # noqa: E402
from .hals import HALSSolver  # noqa: E402
from .mu import MUSolver  # noqa: E402
from .relaxed_mu import RelaxedMUSolver  # noqa: E402

#: Name → solver class. A new solver is one module and one line here.
SOLVERS: dict[str, type[Solver]] = {
    "hals": HALSSolver,
    "mu": MUSolver,
    "adam": AdamSolver,
    "deep_hals": DeepHALSSolver,
    "relaxed_mu": RelaxedMUSolver,
}


def auto_solver(problem: Problem, *, batched: bool) -> str:
    """``solver="auto"``: Adam on mini-batches, HALS for Frobenius, over-relaxed
    MU for a deep layer-centric fit with ``0 <= beta < 2`` (measured faster
    than MU for Itakura-Saito, 0.5, KL and 1.5), MU otherwise (one-layer fits
    stay scikit-learn's ``mu`` iteration)."""
    if batched:
        return "adam"
    if 0.0 <= problem.beta < 2.0 and problem.deep and problem.loss == "layer":
        return "relaxed_mu"
    return "hals" if problem.beta == 2.0 else "mu"


def make_solver(name: str, problem: Problem, *, batched: bool, **options) -> Solver:
    """The solver ``name`` (or ``"auto"``) set up for ``problem``."""
    if name == "auto":
        name = auto_solver(problem, batched=batched)
    if name not in SOLVERS:
        raise ValueError(f"Unknown solver {name!r}; expected one of {list(SOLVERS)}.")
    return SOLVERS[name].for_problem(problem, batched=batched, **options)


__all__ = [
    "SOLVERS",
    "AdamSolver",
    "DeepHALSSolver",
    "HALSSolver",
    "MUSolver",
    "Problem",
    "RelaxedMUSolver",
    "Solver",
    "auto_solver",
    "iterate",
    "make_solver",
]
