"""DeepNMF and deep_nmf: the scikit-learn facade over the stages of :mod:`sknmf._torch`.

Parameters are validated here and turned into a
:class:`~sknmf._torch.objective.Problem` and loop settings; the numerical work
is the stages' (:mod:`sknmf._torch.stages`), each a skorch net run.
"""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from numbers import Integral, Real

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_non_negative, validate_data
from skorch.callbacks import Callback

from .. import distributed
from .._torch.divergence import beta_divergence, beta_loss_to_float, squared_norm
from .._torch.init import initialize_nmf
from .._torch.nets import Stage
from .._torch.objective import Problem, Regularization, chain
from .._torch.solvers import SOLVERS, auto_solver, make_solver
from .._torch.sparse import CSRMatrix
from .._torch.stages import encode, fine_tune, layer_terms_of, online_step, pretrain
from .._utils import (
    check_device,
    make_generator,
    seed_from_random_state,
    threads_for,
    unchanged_on_failure,
    warn_unused_factors,
)
from ..distributed import is_dask_array
from ._ranks import check_ranks
from ._validation import (
    check_codes,
    check_custom_factors,
    safe_scale,
    scaled_tensor,
    unscale_codes,
)

_SOLVERS = {"auto", *SOLVERS}
_MAX_LAYER_WEIGHT = 1e6
_BLOCK = 1 << 20  # entries per float64 block when summing over X
# Below this many multiply-adds in the main product a fit runs on one thread:
# measured on 2 idle cores, one and two threads tie up to ~4e7 (6000x192, k=32),
# two win 15% at 3e8; under load one thread avoids stalls at every barrier.
_SINGLE_THREAD_WORK = 1 << 26


class DeepNMF(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Deep (multilayer) nonnegative matrix factorisation.

    With an integer ``n_components`` this is classic NMF, ``X ≈ W H``, computed
    exactly like :class:`sklearn.decomposition.NMF` (same beta-divergences, inits,
    regularisation and multiplicative updates). With a sequence
    ``(r1, ..., rL)`` it fits ``X ≈ W1 H1``, ``W1 ≈ W2 H2``, ...,
    ``W(L-1) ≈ WL HL``, so ``X ≈ WL HL ⋯ H1``: layer-wise pretraining, then joint
    fine-tuning of all factors on the layer-centric loss
    ``Σ_l λ_l D(W(l-1) | Wl Hl)`` (``W0 = X``) or the data-centric loss
    ``Σ_l λ_l D(X | Wl Hl ⋯ H1)``. In deep models the rows of every ``Hl`` sum to
    one, which removes the scale degeneracy of the deep terms.

    The training loop runs in a skorch net (``net_``): epochs, callbacks, progress
    bar and ``history_``.

    Parameters
    ----------
    n_components : int, sequence of int, "auto" or None, default=None
        Rank of each layer, non-increasing. None means ``n_features``;
        ``"auto"`` takes the ranks from the ``H`` given with ``init="custom"``
        (``n_features`` without them), as scikit-learn does.
    beta_loss : {"frobenius", "kullback-leibler", "itakura-saito"} or float, \
            default="frobenius"
        Beta-divergence to minimise. Values ``<= 0`` reject data with zeros.
    init : {"random", "nndsvd", "nndsvda", "nndsvdar", "custom"}, default=None
        Initialisation of every layer during pretraining, as in scikit-learn. None
        is ``"nndsvda"`` when the rank allows it, else ``"random"``. ``"custom"``
        takes ``W`` and ``H`` from :meth:`fit`.
    solver : {"auto", "mu", "relaxed_mu", "hals", "deep_hals", "adam"}, default="auto"
        ``"mu"``: multiplicative updates, monotone on the full batch (with an L2
        penalty and beta < 2 the rule is scikit-learn's, which is not a strict
        majorisation, so monotonicity is then not guaranteed). ``"hals"``:
        accelerated hierarchical ALS (Gillis & Glineur 2012), Frobenius loss
        only; it fits one-layer models, each layer's pretraining and the
        layer-centric fine-tuning of deep models (block coordinate descent,
        ``"deep_hals"``; the data-centric loss and mini-batches of deep models
        use multiplicative updates).
        ``"relaxed_mu"``: multiplicative updates over-relaxed where their
        majoriser allows it (still monotone), any ``beta_loss``; on
        mini-batches and with ``loss="data"`` it runs ``"mu"``.
        ``"adam"``: codes by multiplicative updates, weights by projected Adam
        steps. With ``batch_size`` set, ``"mu"`` and ``"hals"`` follow the
        online rule (running statistics weighted by ``forget_factor``, as
        :class:`sklearn.decomposition.MiniBatchNMF`). ``"auto"``: ``"hals"``
        for the Frobenius loss on full batches, ``"adam"`` when ``batch_size``
        is set, ``"relaxed_mu"`` for the fine-tuning of a deep model with
        ``0 <= beta_loss < 2`` and ``loss="layer"`` (one-layer fits and each
        layer's pretraining keep ``"mu"``, scikit-learn's iteration),
        ``"mu"`` otherwise; in :meth:`partial_fit`, what a full-batch fit
        picks (the online rule of ``"relaxed_mu"``, and of ``"hals"`` in deep
        models, is ``"mu"``'s).
    loss : {"layer", "data"}, default="layer"
        Joint objective of the fine-tuning (deep models only).
    layer_weights : array-like of shape (n_layers,), default=None
        The ``λ_l``. None makes every term equal at the start of fine-tuning
        (``λ_1 = 1``, ``λ_l = D_1 / D_l``), so no layer dominates and the
        penalties keep the scale they have in scikit-learn.
    max_iter : int, default=200
        Maximum number of iterations of :meth:`transform` (and of the encoding
        of each :meth:`partial_fit` batch), and of the training stages unless
        ``max_epochs`` is set.
    tol : float, default=1e-4
        Stop when the error decreased by less than ``tol`` times the initial error
        over 10 iterations (scikit-learn's rule). 0 runs ``max_iter`` iterations.
        Each stage of a deep model (every layer's pretraining, then the joint
        fine-tuning) applies it from its own start. The fine-tuning starts from
        the pretrained layers, whose error is usually far below that of an
        initialisation (nndsvda's in particular, with many components), so it
        is held to a stricter standard than a one-layer fit with the same
        ``tol``.
        Mini-batch training (``batch_size`` set) reads ``sqrt(2 F)`` instead of
        the error, ``F`` the penalised objective it minimises: with penalties
        the error can rise while the fit still makes progress. Without
        penalties both are the same.
    pretrain_max_iter : int, default=None
        Epochs of each layer's pretraining in deep models; None uses
        ``max_epochs`` (or ``max_iter``) in :meth:`fit` and no pretraining (the
        initialisation only) on the first :meth:`partial_fit` batch. One-layer
        models have no pretraining: setting it raises.
    pretrain_solver : str or None, default=None
        Solver of each layer's pretraining in deep models, one of ``solver``'s
        values; None uses ``solver``. ``"mu"`` fits each layer less exactly
        than HALS, which leaves the joint fine-tuning room to recover a deep
        structure: on data that is exactly low-rank, HALS pretraining fits the
        first layer with codes the deeper layers cannot follow (their weight
        ``λ_l`` then vanishes). Setting it where nothing is pretrained (one layer,
        ``pretrain_max_iter=0``, or :meth:`partial_fit` without
        ``pretrain_max_iter``) raises.
    alpha_W : float, default=0.0
        Penalty on the codes, scaled by the width of what they approximate
        (``n_features`` for the first layer), as in scikit-learn.
    alpha_H : float or "same", default="same"
        Penalty on the weights, scaled by ``n_samples``.
    l1_ratio : float, default=0.0
        Share of L1 in the penalties.
    batch_size : int, default=None
        Rows per mini-batch (in :meth:`partial_fit`: of each online step over
        the given batch); None trains on the full batch.
    max_epochs : int, default=None
        Epochs (passes over the data) of each training stage of :meth:`fit`;
        None uses ``max_iter``. In :meth:`partial_fit`, passes of the online
        rule over the batch (default 1).
    lr : float, default=1e-2
        Learning rate of ``solver="adam"`` (relative: the weights' rows sum to
        one in deep models); the other solvers have no step size.
    device : str or torch.device, default="cpu"
        ``"cpu"`` or ``"cuda"``.
    forget_factor : float, default=0.7
        Weight of the past in the running statistics of the online rule
        (:meth:`partial_fit`, and mini-batch fits with ``solver="mu"`` or
        ``"hals"``), as in :class:`sklearn.decomposition.MiniBatchNMF`.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation and batch order.
    verbose : int, default=0
        1 shows a progress bar and the loss of each epoch.
    callbacks : list of skorch callbacks, default=None
        Extra callbacks for every skorch loop the model runs (training stages,
        transform, partial_fit), e.g.
        ``skorch.callbacks.EarlyStopping(monitor="train_loss")``. Copied, never
        modified. A callback stops a loop by raising ``KeyboardInterrupt``
        (skorch's convention); a real Ctrl-C still interrupts the program.

    Attributes
    ----------
    components_ : ndarray of shape (r_L, n_features)
        ``HL ⋯ H1``, the dictionary of the deepest codes.
    layer_components_ : list of ndarray
        ``[H1, ..., HL]``, ``Hl`` of shape (r_l, r_(l-1)).
    n_components_ : int
        ``r_L``.
    reconstruction_err_ : float
        ``sqrt(2 D(X | WL components_))`` on the training codes, as scikit-learn.
    layer_errors_ : list of float
        ``sqrt(2 D(W(l-1) | Wl Hl))`` per layer on the training codes.
    pretrain_layer_errors_ : list of float
        The same errors after layer-wise pretraining, before fine-tuning.
    n_iter_ : int
        Iterations of the joint fine-tuning (of the only layer when shallow).
    history_ : skorch.History
        Loss (``train_loss``, penalties included) and ``error`` per epoch of the
        last training stage. With ``tol > 0`` and neither ``verbose`` nor
        ``callbacks``, they are evaluated only at the first and last epochs
        and where the stopping rule reads them (every 10th); ``train_loss``
        is NaN elsewhere.
    pretrain_histories_ : list of skorch.History
        The same for each layer's pretraining.
    net_ : skorch.NeuralNet
        The skorch net of the last training stage (weights only: the codes of
        the training rows are not kept).
    layer_weights_ : ndarray of shape (n_layers,)
        The ``λ_l`` used.
    n_steps_ : int
        Number of :meth:`partial_fit` calls since the model was initialised.
    n_worker_losses_ : int
        Only after a fit on a Dask array: how many times a lost worker's chunks
        had their codes recomputed (see :mod:`sknmf.distributed`).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` has string feature names.

    See Also
    --------
    sklearn.decomposition.NMF : The one-layer reference.
    deep_nmf : Functional interface.

    References
    ----------
    Lee & Seung (2001); Févotte & Idier (2011), Neural Computation 23(9);
    Trigeorgis et al. (2017), IEEE TPAMI; De Handschutter & Gillis (2023);
    Leplat, Hien, Onwunta & Gillis (2023), Deep NMF with beta-divergences.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sknmf import DeepNMF
    >>> X = load_digits().data[:300]
    >>> model = DeepNMF((16, 4), random_state=0)
    >>> codes = model.fit_transform(X)
    >>> codes.shape, model.components_.shape
    ((300, 4), (4, 64))
    >>> [H.shape for H in model.layer_components_]
    [(16, 64), (4, 16)]
    """

    _parameter_constraints: dict = {
        "n_components": [
            Interval(Integral, 1, None, closed="left"),
            "array-like",
            StrOptions({"auto"}),
            None,
        ],
        "beta_loss": [
            StrOptions({"frobenius", "kullback-leibler", "itakura-saito"}),
            Interval(Real, None, None, closed="neither"),
        ],
        "init": [
            StrOptions({"random", "nndsvd", "nndsvda", "nndsvdar", "custom"}),
            None,
        ],
        "solver": [StrOptions(_SOLVERS)],
        "loss": [StrOptions({"layer", "data"})],
        "layer_weights": ["array-like", None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "pretrain_max_iter": [Interval(Integral, 0, None, closed="left"), None],
        "pretrain_solver": [StrOptions(_SOLVERS), None],
        "alpha_W": [Interval(Real, 0, None, closed="left")],
        "alpha_H": [Interval(Real, 0, None, closed="left"), StrOptions({"same"})],
        "l1_ratio": [Interval(Real, 0, 1, closed="both")],
        "batch_size": [Interval(Integral, 1, None, closed="left"), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "device": [str, torch.device],
        "forget_factor": [Interval(Real, 0, 1, closed="both")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "callbacks": [list, None],
    }

    def __init__(
        self,
        n_components=None,
        *,
        beta_loss="frobenius",
        init=None,
        solver="auto",
        loss="layer",
        layer_weights=None,
        max_iter=200,
        tol=1e-4,
        pretrain_max_iter=None,
        pretrain_solver=None,
        alpha_W=0.0,
        alpha_H="same",
        l1_ratio=0.0,
        batch_size=None,
        max_epochs=None,
        lr=1e-2,
        device="cpu",
        forget_factor=0.7,
        random_state=None,
        verbose=0,
        callbacks=None,
    ):
        self.n_components = n_components
        self.beta_loss = beta_loss
        self.init = init
        self.solver = solver
        self.loss = loss
        self.layer_weights = layer_weights
        self.max_iter = max_iter
        self.tol = tol
        self.pretrain_max_iter = pretrain_max_iter
        self.pretrain_solver = pretrain_solver
        self.alpha_W = alpha_W
        self.alpha_H = alpha_H
        self.l1_ratio = l1_ratio
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.lr = lr
        self.device = device
        self.forget_factor = forget_factor
        self.random_state = random_state
        self.verbose = verbose
        self.callbacks = callbacks

    # ------------------------------------------------------------------ fit
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None, W=None, H=None):
        """Learn the factors of ``X``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            Nonnegative data. A Dask array is fitted on the cluster of the
            current ``distributed.Client``, its row chunks staying on the
            workers (:mod:`sknmf.distributed`).
        y : Ignored
        W : array-like or list of array-like, default=None
            With ``init="custom"``: the initial codes, one array of shape
            (n_samples, r_1) for one layer, or a list ``[W1, ..., WL]``.
        H : array-like or list of array-like, default=None
            With ``init="custom"``: the initial weights, ``H1`` or ``[H1, ..., HL]``.

        Returns
        -------
        self : DeepNMF
            The fitted estimator.
        """
        with unchanged_on_failure(self), self._threads(X):
            if is_dask_array(X):
                distributed.fit(self, X, W, H)
            else:
                self._fit(X, W, H)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def fit_transform(self, X, y=None, W=None, H=None):
        """Fit, then return the codes of ``X`` as :meth:`transform` computes them.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : Ignored
        W, H : see :meth:`fit`

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components_)
            Identical to ``fit(X).transform(X)`` (a lazy Dask array for a
            Dask ``X``).
        """
        with unchanged_on_failure(self), self._threads(X):
            if is_dask_array(X):
                X = distributed.fit(self, X, W, H)
                return distributed.transform(self, X)
            X, Xt = self._fit(X, W, H)
            return self._codes(self._encode_tensor(Xt, self._scale)[-1], X.dtype)

    def _fit(self, X, W, H):
        """Fit; returns the validated ``X`` and its tensor (for the encoding)."""
        self.__dict__.pop("n_worker_losses_", None)
        X = self._validate_input(X, reset=True)
        ranks = self._check_ranks(X.shape, H)
        beta = self._check_beta(X)
        scale = safe_scale(X)
        Xt = scaled_tensor(X, scale, check_device(self.device))
        seed = seed_from_random_state(self.random_state)
        gen = make_generator(seed)
        n_samples, n_features = X.shape
        L = len(ranks)
        batched = self.batch_size is not None
        reg = Regularization(
            n_samples, [n_features, *ranks[:-1]], *self._alphas(), self.l1_ratio
        ).for_scale(scale, beta)
        problem = Problem(beta, self.loss, [1.0] * L, reg)
        self._check_solver_options(problem, batched)
        custom = self._check_custom(W, H, X, ranks, scale=scale)

        def init_layer(l, target):
            if custom is not None:
                return custom[0][l], custom[1][l]
            return initialize_nmf(target, ranks[l], self.init, gen)

        epochs = self.max_epochs if self.max_epochs is not None else self.max_iter
        pre = self.pretrain_max_iter if L > 1 else None
        pre = epochs if pre is None else pre
        stages = [self._stage(pre, seed + l) if pre > 0 else None for l in range(L)]
        Ws, Hs, results = pretrain(
            Xt,
            ranks,
            init_layer,
            problem,
            self._pretrain_solver(self.solver, pre, problem, batched),
            stages,
            batched=batched,
            lr=self.lr,
        )
        self.pretrain_histories_ = [r.net.history for r in results]
        for r in results:
            self._warn_unconverged(r)
        if L > 1:
            terms = layer_terms_of(Xt, Ws, Hs, beta)
            self.pretrain_layer_errors_ = [_sqrt2(t) for t in terms]
            problem.weights = self._weights(terms, _rounding_floors(Xt, Ws, beta))
            res = fine_tune(
                Xt,
                Ws,
                Hs,
                problem,
                self.solver,
                self._stage(epochs, seed + L),
                batched=batched,
                lr=self.lr,
            )
            self._warn_unconverged(res)
            Ws, Hs = res.Ws, res.Hs
            results = [res]
        last = results[-1] if results else None
        self.net_ = last.net if last is not None else None
        self.history_ = self.net_.history if last is not None else None
        self.n_iter_ = last.n_iter if last is not None else 0
        self.layer_weights_ = np.asarray(problem.weights, dtype=np.float64)
        self._beta = beta
        self._scale = scale
        self._solver = self.solver
        self._seed = seed
        self._running, self._solver_state, self.n_steps_ = None, None, 0
        self._store_weights(Hs, X.dtype)
        self._store_errors(Xt, Ws, Hs)
        if L == 1:
            self.pretrain_layer_errors_ = list(self.layer_errors_)
        if isinstance(Xt, CSRMatrix):
            Xt = Xt.without_transpose()
        return X, Xt

    def _stage(self, epochs, seed, **changes) -> Stage:
        """Loop settings of a training stage from the parameters."""
        batched = self.batch_size is not None
        settings = dict(
            max_epochs=epochs,
            tol=self.tol,
            batch_size=self.batch_size,
            shuffle=batched,
            generator=make_generator(seed),
            forget_factor=self.forget_factor if batched else None,
            verbose=int(self.verbose),
            callbacks=self._user_callbacks(),
        )
        settings.update(changes)
        return Stage(**settings)

    def _warn_unconverged(self, result) -> None:
        net = result.net
        if self.tol > 0 and not result.converged and result.n_iter >= net.max_epochs:
            warnings.warn(
                f"Maximum number of iterations {net.max_epochs} reached. Increase "
                "it to improve convergence.",
                ConvergenceWarning,
                stacklevel=4,
            )

    # ------------------------------------------------------------ transform
    def transform(self, X):
        """Codes of ``X`` with every ``Hl`` fixed.

        Solves the fitted objective for the codes only, from a deterministic start
        (layer by layer, then jointly), in the same skorch loop as :meth:`fit`
        with ``max_iter`` and ``tol``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components_)
            ``WL``, in the dtype of ``X``; a lazy Dask array (one task per row
            chunk) for a Dask ``X``.
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return distributed.transform(self, X)
        X, _, W, scale = self._encode(X)
        return self._codes(W, X.dtype, scale)

    def _encode(self, X):
        """Validated ``X``, its tensor at the safe scale, its codes ``WL`` (at that
        scale) and the scale: what transform and score share."""
        X = self._validate_input(X, reset=False)
        self._check_zeros(X, self._beta)
        scale = safe_scale(X)
        Xt = scaled_tensor(X, scale, check_device(self.device))
        with self._threads(X):
            W = self._encode_tensor(Xt, scale)[-1]
        return X, Xt, W, scale

    def _encode_tensor(self, Xt, scale, starts=None, return_n_iter=False) -> list:
        """Codes ``[W1, ..., WL]`` of a validated ``X / scale`` tensor (in its
        scale); with ``return_n_iter``, also the iterations of the last solve."""
        dtype = Xt.dtype
        Hs = [
            torch.as_tensor(H, device=Xt.device).to(dtype)
            for H in self.layer_components_
        ]
        widths = [self.n_features_in_, *[H.shape[0] for H in Hs[:-1]]]
        reg = Regularization(Xt.shape[0], widths, *self._alphas(), self.l1_ratio)
        reg = reg.for_scale(scale, self._beta)
        problem = Problem(self._beta, self.loss, list(self.layer_weights_), reg)
        stage = Stage(
            max_epochs=self.max_iter,
            tol=self.tol,
            verbose=int(self.verbose),
            callbacks=self._user_callbacks(),
        )
        return encode(
            Xt,
            Hs,
            problem,
            self._solver,
            stage,
            starts=starts,
            return_n_iter=return_n_iter,
        )

    def _fixed_weights_codes(self, X, W, H):
        """``deep_nmf(update_H=False)``: this model set up with the weights ``H``
        and ``X``'s codes for them, as in scikit-learn's
        ``non_negative_factorization``. Returns ``(X, Xt, Ws, n_iter)``."""
        X = self._validate_input(X, reset=True)
        ranks = self._check_ranks(X.shape)
        self._beta = self._check_beta(X)
        if W is not None:
            warnings.warn(
                "When update_H=False, the provided initial W is not used.",
                RuntimeWarning,
                stacklevel=3,
            )
        device = check_device(self.device)
        _, Hs = check_custom_factors(None, H, X, ranks, device, online=True)
        self._scale = safe_scale(X)
        Xt = scaled_tensor(X, self._scale, device)
        self._solver = self.solver
        # No pretraining to balance the layers on: the given weights, or ones.
        weights = self._weights(None) if self.layer_weights is not None else None
        self.layer_weights_ = np.asarray(weights or [1.0] * len(ranks), np.float64)
        self._store_weights(Hs, X.dtype)
        Ws, n_iter = self._encode_tensor(Xt, self._scale, return_n_iter=True)
        return X, Xt, Ws, n_iter

    def inverse_transform(self, X):
        """Map codes back to data space: ``X @ components_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_components_)
            Codes, e.g. from :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return distributed.inverse_transform(self, X)
        X = check_codes(X, self.n_components_)
        return np.asarray(X @ self.components_.astype(X.dtype, copy=False))

    def score(self, X, y=None):
        """Negative mean divergence of encoding then decoding ``X`` (higher is better).

        ``-D(X | inverse_transform(transform(X))) / n_samples``, so model selection
        by :class:`~sklearn.model_selection.GridSearchCV` needs no scorer.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask array} of shape (n_samples, n_features)
            A Dask array is encoded chunk by chunk on the cluster.
        y : Ignored

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        if is_dask_array(X):
            return distributed.score(self, X)
        X, Xt, W, scale = self._encode(X)
        comp = torch.as_tensor(self.components_, device=W.device).to(W.dtype)
        loss = float(beta_divergence(Xt, W, comp, self._beta))
        return -loss * scale**self._beta / X.shape[0]

    # ----------------------------------------------------------- partial_fit
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None, W=None, H=None):
        """Update the model with one mini-batch (online learning).

        The codes of the batch are solved with the weights fixed (as
        :meth:`transform` does), then the weights take one step of the online
        rule on running statistics of all batches seen, weighted by
        ``forget_factor``: block coordinate descent for ``solver="hals"``
        (Mairal et al. 2010), the online multiplicative update for
        ``solver="mu"`` (Lefèvre et al. 2011, as in
        :class:`sklearn.decomposition.MiniBatchNMF`), a projected Adam step
        for ``solver="adam"``; ``"auto"`` is ``"hals"`` for the Frobenius loss,
        ``"mu"`` otherwise. ``batch_size`` splits ``X`` into several such steps
        and ``max_epochs`` passes over it (default one). The first call
        initialises the model on its batch.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : Ignored
        W : array-like or list of array-like, default=None
            With ``init="custom"``, first call only: the start of the batch's
            codes (``W1`` or ``[W1, ..., WL]``).
        H : array-like or list of array-like, default=None
            With ``init="custom"``, first call only (required then): the initial
            weights.

        Returns
        -------
        self : DeepNMF
        """
        with unchanged_on_failure(self), self._threads(X):
            return self._partial_fit(X, W, H)

    def _partial_fit(self, X, W, H):
        # A model fitted with fit goes on learning from its weights.
        first = not hasattr(self, "components_")
        X = self._validate_input(X, reset=first)
        n_samples, n_features = X.shape
        if first:
            self._scale = safe_scale(X)
        # Every batch at the first batch's (or the fit's) scale: the running
        # statistics add up.
        Xt = scaled_tensor(X, self._scale, check_device(self.device))
        if first:
            ranks = self._check_ranks(X.shape, H)
            beta = self._check_beta(X)
            problem = self._online_problem(beta, ranks, n_samples)
            self._check_solver_options(problem, batched=True, online=True)
            seed = seed_from_random_state(self.random_state)
            gen = make_generator(seed)
            custom = self._check_custom(W, H, X, ranks, online=True, scale=self._scale)
            solver = self._online_solver(problem)

            def init_layer(l, target):
                if custom is not None:
                    return custom[0][l], custom[1][l]
                return initialize_nmf(target, ranks[l], self.init, gen)

            # The first batch initialises the layers, and pretrains them when
            # pretrain_max_iter asks for it.
            pre = self.pretrain_max_iter
            stages = [
                self._stage(pre, seed + l, batch_size=None, forget_factor=None)
                if pre
                else None
                for l in range(len(ranks))
            ]
            Ws0, Hs, results = pretrain(
                Xt,
                ranks,
                init_layer,
                problem,
                self._pretrain_solver(solver, pre, problem, False),
                stages,
                batched=False,
                lr=self.lr,
            )
            for r in results:
                self._warn_unconverged(r)
            terms = layer_terms_of(Xt, Ws0, Hs, beta) if len(ranks) > 1 else None
            floors = _rounding_floors(Xt, Ws0, beta) if len(ranks) > 1 else None
            self.layer_weights_ = np.asarray(self._weights(terms, floors), np.float64)
            self._beta = beta
            self._solver = solver
            self._seed = seed
            self._running = None
            self._solver_state = None
            self.n_steps_ = 0
            self._store_weights(Hs, X.dtype)
            starts = None
            if custom is not None and W is not None and not pre:
                starts = Ws0
        else:
            self._check_zeros(X, self._beta)
            if W is not None or H is not None:
                raise ValueError(
                    "W and H are only used by the first call to partial_fit (with "
                    "init='custom'); the model is already initialised."
                )
            starts = None
        ranks = tuple(H_l.shape[0] for H_l in self.layer_components_)
        problem = self._online_problem(self._beta, ranks, n_samples)
        problem.weights = list(self.layer_weights_)
        self._solver = self._online_solver(problem)
        Hs = [
            torch.as_tensor(H_l, device=Xt.device).to(Xt.dtype)
            for H_l in self.layer_components_
        ]
        encode_stage = Stage(
            max_epochs=self.max_iter,
            tol=self.tol,
            verbose=int(self.verbose),
            callbacks=self._user_callbacks(),
        )
        update_stage = Stage(
            max_epochs=self.max_epochs if self.max_epochs is not None else 1,
            tol=0.0,
            batch_size=self.batch_size,
            shuffle=self.batch_size is not None,
            generator=make_generator(self._seed + 1 + self.n_steps_),
            forget_factor=self.forget_factor,
            verbose=int(self.verbose),
            callbacks=self._user_callbacks(),
        )
        res = online_step(
            Xt,
            Hs,
            problem,
            self._solver,
            encode_stage,
            update_stage,
            running=self._running,
            solver_state=self._solver_state,
            lr=self.lr,
            starts=starts,
        )
        self._running = res.running
        self._solver_state = res.solver_state
        self.n_steps_ += 1
        self._store_weights(res.Hs, X.dtype)
        return self

    def _online_problem(self, beta, ranks, n_samples) -> Problem:
        # The penalties of a batch are scaled by its own number of rows, as in
        # scikit-learn's MiniBatchNMF.
        widths = [self.n_features_in_, *ranks[:-1]]
        reg = Regularization(n_samples, widths, *self._alphas(), self.l1_ratio)
        reg = reg.for_scale(self._scale, beta)
        return Problem(beta, self.loss, [1.0] * len(ranks), reg)

    def _pretrain_solver(self, solver, pre, problem, batched) -> str:
        """The solver of the layers' pretraining (``pre`` its epochs)."""
        if self.pretrain_solver is None:
            return solver
        if problem.n_layers == 1 or not pre:
            raise ValueError(
                f"pretrain_solver={self.pretrain_solver!r} sets the solver of the "
                "layer-wise pretraining of a deep model, and this fit pretrains "
                "nothing (one layer, pretrain_max_iter=0, or partial_fit without "
                "pretrain_max_iter). Leave pretrain_solver=None."
            )
        make_solver(self.pretrain_solver, problem.layer(0), batched=batched, lr=self.lr)
        return self.pretrain_solver

    def _online_solver(self, problem) -> str:
        if self.solver == "auto":
            return auto_solver(problem, batched=False)
        return self.solver

    # -------------------------------------------------------------- helpers
    def _validate_input(self, X, reset):
        X = validate_data(
            self,
            X,
            accept_sparse=("csr", "csc"),
            dtype=[np.float64, np.float32],
            reset=reset,
        )
        check_non_negative(X, f"{type(self).__name__} (input X)")
        return X

    def _check_ranks(self, shape, H=None):
        nc = self.n_components
        if nc == "auto" and self.init == "custom" and H is not None:
            H_list = list(H) if isinstance(H, (list, tuple)) else [H]
            ranks = check_ranks([np.shape(H_l)[0] for H_l in H_list])
        elif nc is None or (isinstance(nc, str) and nc == "auto"):
            ranks = (shape[1],)
        else:
            ranks = check_ranks(nc)
        if self.layer_weights is not None:
            lw = np.asarray(self.layer_weights, dtype=float).ravel()
            if (
                lw.shape[0] != len(ranks)
                or np.any(lw <= 0)
                or not np.all(np.isfinite(lw))
            ):
                raise ValueError(
                    f"layer_weights must hold {len(ranks)} positive finite numbers "
                    f"(one per layer), got {self.layer_weights!r}."
                )
        if len(ranks) == 1 and self.pretrain_max_iter is not None:
            raise ValueError(
                "pretrain_max_iter sets the pretraining of the layers of a deep "
                f"model; n_components={nc!r} has one layer, whose training "
                "max_epochs (or max_iter) sets. Leave pretrain_max_iter=None."
            )
        return ranks

    def _check_beta(self, X) -> float:
        beta = beta_loss_to_float(self.beta_loss)
        self._check_zeros(X, beta)
        return beta

    def _check_zeros(self, X, beta):
        if beta > 0:
            return
        xmin = X.data.min() if sp.issparse(X) and X.nnz else X.min()
        has_zero = (sp.issparse(X) and X.nnz < X.shape[0] * X.shape[1]) or xmin == 0
        if has_zero:
            raise ValueError(
                "When beta_loss <= 0 and X contains zeros, the solver may diverge. "
                "Please add small values to X, or use a positive beta_loss."
            )

    def _check_solver_options(self, problem, batched, online=False):
        """Raise where the solver cannot solve the problem (e.g. HALS with KL)."""
        name = self._online_solver(problem) if online else self.solver
        make_solver(name, problem, batched=batched, lr=self.lr)

    def _threads(self, X):
        """One torch thread for small problems (DESIGN.md §7), restored after.

        The work is that of the main product, ``nnz(X) x`` the widest rank.
        """
        shape = getattr(X, "shape", None)
        if is_dask_array(X) or not isinstance(shape, tuple) or len(shape) != 2:
            # Dask runs on its workers; inputs without a shape (lists) keep
            # torch's setting rather than be converted twice.
            return contextlib.nullcontext()
        nnz = X.nnz if sp.issparse(X) else int(shape[0]) * int(shape[1])
        try:
            nc = self.n_components
            width = max(check_ranks(nc)) if nc not in (None, "auto") else shape[-1]
        except (TypeError, ValueError, IndexError):
            width = shape[-1] if shape else 1
        device = "cpu"
        with contextlib.suppress(TypeError, ValueError, RuntimeError):
            device = torch.device(self.device)
        return threads_for(nnz * width, _SINGLE_THREAD_WORK, device)

    def _alphas(self):
        alpha_H = self.alpha_W if self.alpha_H == "same" else self.alpha_H
        return float(self.alpha_W), float(alpha_H)

    def _user_callbacks(self) -> list:
        callbacks = copy.deepcopy(self.callbacks or [])
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    "callbacks must be a list of skorch.callbacks.Callback "
                    f"instances; got {cb!r}."
                )
        return callbacks

    def _check_custom(self, W, H, X, ranks, online=False, scale=1.0):
        if self.init != "custom":
            warn_unused_factors(W, H, stacklevel=4)
            return None
        Ws, Hs = check_custom_factors(
            W, H, X, ranks, check_device(self.device), online=online
        )
        return [W_l / scale for W_l in Ws], Hs

    def _weights(self, terms, floors=None):
        """Layer weights: given, or equalising the pretrained layers' ``terms``
        (None for one layer, whose weight is 1), each term taken no smaller than
        its ``floors`` (see :func:`_rounding_floors`)."""
        if self.layer_weights is not None:
            return [float(w) for w in np.asarray(self.layer_weights).ravel()]
        if terms is None:
            return [1.0]
        if floors is not None:
            # Below its floor a term is rounding noise: the weights would follow
            # the noise (and differ between X, 2 X and X as a sparse matrix).
            terms = [max(float(t), float(f)) for t, f in zip(terms, floors)]
        # Equal terms at the start; lambda_1 = 1 keeps the penalties' scale that of
        # scikit-learn (relative to the data-fitting term).
        # Weights within [1e-6, 1e6]: a layer fitted (almost) exactly by its
        # pretraining would otherwise get a weight beyond float32's range (1e6
        # already lets it dominate), and a first layer fitted exactly would give
        # the others weights of rounding noise (1e-284 or 1e-290 by the scale
        # of X): the fit would depend on that noise, and their ratios overflow
        # float32 in the deep solves.
        first = max(float(terms[0]), 1e-300)
        return [
            min(
                max(first / max(float(t), 1e-300), 1.0 / _MAX_LAYER_WEIGHT),
                _MAX_LAYER_WEIGHT,
            )
            for t in terms
        ]

    def _store_weights(self, Hs, dtype):
        """The fitted weights: ``layer_components_`` and their product."""
        Hs = [H.detach().cpu() for H in Hs]
        self.layer_components_ = [H.numpy().astype(dtype, copy=False) for H in Hs]
        self.components_ = chain(Hs, 0, len(Hs)).numpy().astype(dtype, copy=False)
        self.n_components_ = self.components_.shape[0]

    def _store_errors(self, Xt, Ws, Hs):
        # Errors in the user's scale: sqrt(2 D) grows as scale ** (beta / 2).
        factor = self._scale ** (self._beta / 2.0)
        with torch.no_grad():
            comp = chain(Hs, 0, len(Hs))
            err = _sqrt2(float(beta_divergence(Xt, Ws[-1], comp, self._beta)))
            self.reconstruction_err_ = err * factor
            if len(Ws) == 1:
                self.layer_errors_ = [err * factor]
            else:
                terms = layer_terms_of(Xt, Ws, Hs, self._beta)
                self.layer_errors_ = [_sqrt2(t) * factor for t in terms]

    def _codes(self, W, dtype, scale=None):
        """Codes as the user's array: dtype of X, scale of X."""
        scale = self._scale if scale is None else scale
        return unscale_codes(W.cpu().numpy().astype(dtype, copy=False), scale)

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _rounding_floors(Xt, Ws, beta: float) -> list[float]:
    """Per layer, the level below which the computed ``D_l`` is rounding noise.

    The divergence of a fit exact to a relative ``δ`` on every entry of the
    layer's target ``T`` (``X``, then the codes above) is about
    ``Σ T^β δ² / 2``; the Gram form of the Frobenius loss (sparse ``X``,
    ``||X||² - 2 <X, W H> + ||W H||²``) computes ``D_l`` only to ``eps ||X||²``,
    so ``δ² = eps``, the dtype's epsilon. The floor scales with the data as
    ``D_l`` does.
    """
    floors = []
    for T in [Xt, *Ws[:-1]]:
        if beta == 2.0:
            total = squared_norm(T)  # block by block: no copy of X
        else:
            v = (T.values if isinstance(T, CSRMatrix) else T).reshape(-1)
            v = v[v > 0] if beta <= 0 else v  # 0 ** beta is 1 or inf there
            # In float64 (T ** beta may overflow T's dtype), a block at a time.
            total = sum(
                float((v[i : i + _BLOCK].double() ** beta).sum())
                for i in range(0, v.numel(), _BLOCK)
            )
        floors.append(total * torch.finfo(T.dtype).eps / 2.0)
    return floors


def _sqrt2(loss: float) -> float:
    return math.sqrt(2.0 * max(float(loss), 0.0))


def deep_nmf(
    X, W=None, H=None, n_components="auto", *, init=None, update_H=True, **params
):
    """Deep NMF of ``X`` as a function: ``non_negative_factorization``'s peer.

    Same arguments, in the same order, and the same return convention as
    :func:`sklearn.decomposition.non_negative_factorization`; ``update_H=False``
    solves the codes for the given weights (what :meth:`DeepNMF.transform`
    does), otherwise the factors are fitted and ``W`` equals
    :meth:`DeepNMF.fit_transform`'s codes.

    Parameters
    ----------
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
        Nonnegative data.
    W : array-like or list of array-like, default=None
        Initial codes for ``init="custom"`` (ignored with a warning when
        ``update_H=False``).
    H : array-like or list of array-like, default=None
        Initial weights for ``init="custom"``; with ``update_H=False`` the fixed
        weights (required).
    n_components : int, sequence of int, "auto" or None, default="auto"
        Ranks of the layers (see :class:`DeepNMF`). ``"auto"`` takes them from
        ``H`` when it is used, else it is ``n_features``.
    init : {"random", "nndsvd", "nndsvda", "nndsvdar", "custom"}, default=None
        Initialisation, as :class:`DeepNMF`'s (unused when ``update_H=False``).
    update_H : bool, default=True
        False keeps ``H`` fixed and solves the codes only.
    **params
        Any other :class:`DeepNMF` parameter (``solver``, ``beta_loss``,
        ``max_iter``, ``tol``, ``alpha_W``, ``layer_weights``, ...). With
        ``update_H=False`` a deep model's ``layer_weights`` default to ones
        (there is no pretraining to balance them on).

    Returns
    -------
    W : ndarray of shape (n_samples, n_components) or list of ndarray
        The codes. For a sequence ``n_components`` (or a list ``H``), the list
        ``[W1, ..., WL]`` of every layer's codes, ``Wl`` of shape
        (n_samples, r_l).
    H : ndarray of shape (n_components, n_features) or list of ndarray
        The weights; the list ``[H1, ..., HL]`` in the deep form.
    n_iter : int
        Iterations of the joint fine-tuning (of the one layer when shallow);
        with ``update_H=False``, of the codes' solve.

    See Also
    --------
    DeepNMF : The estimator.
    sklearn.decomposition.non_negative_factorization : The one-layer reference.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sknmf import deep_nmf
    >>> X = load_digits().data[:200]
    >>> W, H, n_iter = deep_nmf(X, n_components=5, random_state=0)
    >>> W.shape, H.shape
    ((200, 5), (5, 64))
    >>> W_list, H_list, n_iter = deep_nmf(X, n_components=(12, 4), random_state=0)
    >>> [W.shape for W in W_list], [H.shape for H in H_list]
    ([(200, 12), (200, 4)], [(12, 64), (4, 12)])
    >>> W2, _, _ = deep_nmf(X, H=H, update_H=False)  # codes for fixed weights
    >>> W2.shape
    (200, 5)
    """
    if _looks_like_ranks(W):
        raise TypeError(
            "deep_nmf takes (X, W, H, n_components), as non_negative_factorization; "
            f"got W={W!r}, which looks like ranks. Pass n_components={W!r}."
        )
    layered = isinstance(n_components, (list, tuple, np.ndarray)) or isinstance(
        H, (list, tuple)
    )
    if not update_H:
        if H is None:
            raise ValueError(
                "update_H=False solves the codes for given weights: pass H."
            )
        if isinstance(n_components, str) and n_components == "auto":
            n_components = [np.shape(H_l)[0] for H_l in (H if layered else [H])]
            n_components = n_components if layered else n_components[0]
    model = DeepNMF(n_components, init=init, **params)
    model._validate_params()
    with model._threads(X):
        if update_H:
            X, Xt = model._fit(X, W, H)
            Ws = model._encode_tensor(Xt, model._scale)
            n_iter = model.n_iter_
        else:
            X, Xt, Ws, n_iter = model._fixed_weights_codes(X, W, H)
    W_out = [model._codes(W_l, X.dtype) for W_l in Ws]
    H_out = list(model.layer_components_)
    if layered or len(H_out) > 1:
        return W_out, H_out, n_iter
    return W_out[0], H_out[0], n_iter


def _looks_like_ranks(W) -> bool:
    """``W`` given as ranks: the old ``deep_nmf(X, n_components)`` call."""
    if isinstance(W, Integral) and not isinstance(W, bool):
        return True
    return (
        isinstance(W, (list, tuple))
        and len(W) > 0
        and all(isinstance(w, Integral) for w in W)
    )
