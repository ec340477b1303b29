"""DeepNMF: the scikit-learn facade over the tensor solvers and skorch nets."""

from __future__ import annotations

import copy
import numbers
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

from .._torch.divergence import beta_divergence, beta_loss_to_float
from .._torch.hals import hals_solve_W
from .._torch.init import constant_codes, initialize_nmf
from .._torch.modules import DeepFactorChain
from .._torch.nets import (
    FactorDataset,
    FactorizationNet,
    RowBatchIterator,
    ToleranceStopping,
)
from .._torch.sparse import CSRMatrix
from .._torch.updates import (
    Regularization,
    chain,
    mm_exponents,
    mu_apply,
    mu_epoch,
    mu_num_den,
    normalize_rows,
    objective,
)
from .._utils import check_device, make_generator, seed_from_random_state

_SOLVERS = {"auto", "mu", "hals", "adam"}


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
    n_components : int, sequence of int or None, default=None
        Rank of each layer, non-increasing. None means ``n_features``.
    beta_loss : {"frobenius", "kullback-leibler", "itakura-saito"} or float, \
            default="frobenius"
        Beta-divergence to minimise. Values ``<= 0`` reject data with zeros.
    init : {"random", "nndsvd", "nndsvda", "nndsvdar", "custom"}, default=None
        Initialisation of every layer during pretraining, as in scikit-learn. None
        is ``"nndsvda"`` when the rank allows it, else ``"random"``. ``"custom"``
        takes ``W`` and ``H`` from :meth:`fit`.
    solver : {"auto", "mu", "hals", "adam"}, default="auto"
        ``"mu"``: multiplicative updates, monotone on the full batch (with an L2
        penalty and beta < 2 the rule is scikit-learn's, which is not a strict
        majorisation, so monotonicity is then not guaranteed). ``"hals"``:
        accelerated hierarchical ALS (Gillis & Glineur 2012), Frobenius loss
        only; it fits one-layer models and each layer's pretraining, while the
        joint fine-tuning of deep models uses multiplicative updates.
        ``"adam"``: codes by multiplicative updates, weights by projected Adam
        steps (works with mini-batches). ``"auto"``: ``"hals"`` for the
        Frobenius loss on full batches, ``"adam"`` when ``batch_size`` is set,
        ``"mu"`` otherwise.
    loss : {"layer", "data"}, default="layer"
        Joint objective of the fine-tuning (deep models only).
    layer_weights : array-like of shape (n_layers,), default=None
        The ``λ_l``. None makes every term equal at the start of fine-tuning
        (``λ_1 = 1``, ``λ_l = D_1 / D_l``), so no layer dominates and the
        penalties keep the scale they have in scikit-learn.
    max_iter : int, default=200
        Maximum number of iterations (epochs) of the joint fine-tuning, of the one
        layer of a shallow model, and of :meth:`transform`.
    tol : float, default=1e-4
        Stop when the error decreased by less than ``tol`` times the initial error
        over 10 iterations (scikit-learn's rule). 0 runs ``max_iter`` iterations.
    pretrain_max_iter : int, default=None
        Iterations of each layer's pretraining; None uses ``max_iter``.
    alpha_W : float, default=0.0
        Penalty on the codes, scaled by the width of what they approximate
        (``n_features`` for the first layer), as in scikit-learn.
    alpha_H : float or "same", default="same"
        Penalty on the weights, scaled by ``n_samples``.
    l1_ratio : float, default=0.0
        Share of L1 in the penalties.
    batch_size : int, default=None
        Rows per mini-batch; None trains on the full batch.
    max_epochs : int, default=None
        Passes over the data for mini-batch training; None uses ``max_iter``.
    lr : float, default=1e-2
        Learning rate of the Adam solver (relative: the weights' rows sum to one
        in deep models).
    device : str or torch.device, default="cpu"
        ``"cpu"`` or ``"cuda"``.
    forget_factor : float, default=0.7
        Weight of the past in :meth:`partial_fit`'s running statistics, as in
        :class:`sklearn.decomposition.MiniBatchNMF`.
    random_state : int, RandomState instance or None, default=None
        Seeds initialisation and batch order.
    verbose : int, default=0
        1 shows a progress bar and the loss of each epoch.
    callbacks : list of skorch callbacks, default=None
        Extra callbacks for the training net, e.g.
        ``skorch.callbacks.EarlyStopping(monitor="train_loss")``. Copied, never
        modified.

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
        last training stage.
    net_ : skorch.NeuralNet
        The skorch net of the last training stage.
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
            None,
        ],
        "beta_loss": [
            StrOptions({"frobenius", "kullback-leibler", "itakura-saito"}),
            Real,
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
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            Nonnegative data.
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
        self._fit(X, W, H)
        return self

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
            Identical to ``fit(X).transform(X)``.
        """
        return self.fit(X, W=W, H=H)._fit_codes_

    def _fit(self, X, W, H):
        for name in ("_A", "_B", "n_steps_"):
            self.__dict__.pop(name, None)
        X = self._validate_input(X, reset=True)
        ranks = self._check_ranks(X.shape)
        beta = beta_loss_to_float(self.beta_loss)
        self._check_zeros(X, beta)
        device = check_device(self.device)
        solver = self._resolved_solver(beta)
        seed = seed_from_random_state(self.random_state)
        gen = make_generator(seed)
        Xt = _to_tensor(X, device)
        n_samples, n_features = X.shape
        widths = [n_features, *ranks[:-1]]
        reg = Regularization(n_samples, widths, *self._alphas(), self.l1_ratio)
        custom = self._check_custom(W, H, X, ranks) if self.init == "custom" else None
        init = None if self.init == "custom" else self.init
        L = len(ranks)
        pre_iter = self.max_iter if L == 1 else self.pretrain_max_iter
        if pre_iter is None:
            pre_iter = self.max_iter

        # Layer-wise pretraining: each layer an NMF of the codes above it.
        Ws, Hs = [], []
        target = Xt
        self.pretrain_histories_ = []
        for l, r in enumerate(ranks):
            if custom is not None:
                W_l, H_l = custom[0][l], custom[1][l]
            else:
                W_l, H_l = initialize_nmf(target, r, init, gen)
            layer_reg = Regularization(
                n_samples, [widths[l]], *self._alphas(), self.l1_ratio
            )
            if pre_iter > 0:
                (W_l,), (H_l,), net, _ = self._train(
                    target,
                    [W_l],
                    [H_l],
                    beta,
                    "layer",
                    [1.0],
                    layer_reg,
                    solver,
                    pre_iter,
                    seed + l,
                )
                self.pretrain_histories_.append(net.history)
            if L > 1:
                W_l, H_l = normalize_rows(W_l, H_l)
            Ws.append(W_l)
            Hs.append(H_l)
            target = W_l

        self.n_iter_ = len(net.history) if (L == 1 and pre_iter > 0) else 0
        self.net_ = net if (L == 1 and pre_iter > 0) else None
        if L > 1:
            with torch.no_grad():
                _, terms = objective(Xt, Ws, Hs, beta, "layer", [1.0] * L)
            self.pretrain_layer_errors_ = [_sqrt2(t) for t in terms]
            weights = self._weights(terms)
        else:
            weights = self._weights(None)
        if L > 1:
            # HALS solves one layer; the coupled deep objective uses MM updates.
            joint = "mu" if solver == "hals" else solver
            Ws, Hs, net, n_iter = self._train(
                Xt,
                Ws,
                Hs,
                beta,
                self.loss,
                weights,
                reg,
                joint,
                self.max_iter,
                seed + L,
            )
            self.net_, self.n_iter_ = net, n_iter
        self.layer_weights_ = np.asarray(weights, dtype=np.float64)
        self._solver = solver
        self._store(Xt, Ws, Hs, beta, X.dtype)
        if L == 1:
            # The one layer's pretraining is its whole fit.
            self.pretrain_layer_errors_ = list(self.layer_errors_)
        # transform(X), on the tensor already built (and X already validated).
        if isinstance(Xt, CSRMatrix):
            Xt = Xt.without_transpose()
        codes = self._solve_codes(Xt, beta)[-1]
        self._fit_codes_ = codes.cpu().numpy().astype(X.dtype, copy=False)
        return self

    def _train(self, X, Ws, Hs, beta, loss, weights, reg, solver, max_iter, seed):
        """Run one training stage in a skorch net; returns the trained factors."""
        if solver == "hals":
            # HALS sweeps a component (a column of W) at a time: column-major W
            # makes each one contiguous, with no copy per step.
            Ws = [W.T.contiguous().T for W in Ws]
        module = DeepFactorChain(Ws, Hs, beta, loss, weights)
        # The initial error is set once the net exists (it keeps ||X||^2).
        stopper = ToleranceStopping(self.tol, None)
        callbacks = [("tolerance", stopper)]
        if self.verbose:
            from skorch.callbacks import ProgressBar

            callbacks.append(("progress", ProgressBar()))
        for i, cb in enumerate(copy.deepcopy(self.callbacks or [])):
            callbacks.append((f"user_{i}", cb))
        epochs = max_iter
        if self.batch_size is not None or solver == "adam":
            epochs = self.max_epochs if self.max_epochs is not None else max_iter
        n = X.shape[0]
        device = X.device
        quiet = {} if self.verbose else {"callbacks__print_log": None}
        net = FactorizationNet(
            module,
            solver=solver,
            reg=reg,
            n_total=n,
            max_epochs=epochs,
            batch_size=-1 if self.batch_size is None else self.batch_size,
            lr=self.lr,
            optimizer=torch.optim.Adam,
            train_split=None,
            iterator_train=RowBatchIterator,
            iterator_train__shuffle=self.batch_size is not None,
            iterator_train__generator=make_generator(seed),
            callbacks=callbacks,
            device=device,
            verbose=int(self.verbose),
            **quiet,
        )
        with torch.no_grad():
            # Only the scale of the stopping test: Gram form for Frobenius.
            gram = beta == 2.0 and loss == "layer"
            _, terms = objective(
                X,
                list(module.W),
                list(module.H),
                beta,
                loss,
                weights,
                sq_norm_X=net.sq_norm(X) if gram else None,
            )
        stopper.error_at_init = _error(weights, terms)
        net.fit(FactorDataset(X))
        n_iter = len(net.history)
        if self.tol > 0 and not stopper.converged_ and n_iter >= epochs:
            warnings.warn(
                f"Maximum number of iterations {epochs} reached. Increase it to "
                "improve convergence.",
                ConvergenceWarning,
                stacklevel=3,
            )
        Ws = [W.detach().clone() for W in module.W]
        Hs = [H.detach().clone() for H in module.H]
        return Ws, Hs, net, n_iter

    # ------------------------------------------------------------ transform
    def transform(self, X):
        """Codes of ``X`` with every ``Hl`` fixed.

        Solves the fitted objective for the codes only, from a deterministic start
        (layer by layer from constant codes, then jointly), with ``max_iter`` and
        ``tol`` as in :meth:`fit`.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)

        Returns
        -------
        codes : ndarray of shape (n_samples, n_components_)
            ``WL``, in the dtype of ``X``.
        """
        check_is_fitted(self)
        X, _, W = self._encode(X)
        return W.cpu().numpy().astype(X.dtype, copy=False)

    def _encode(self, X):
        """Validated ``X``, its tensor, and its deepest codes."""
        X = self._validate_input(X, reset=False)
        self._check_zeros(X, self._beta)
        Xt = _to_tensor(X, check_device(self.device))
        return X, Xt, self._solve_codes(Xt, self._beta)[-1]

    def _solve_codes(self, Xt, beta, max_iter=None):
        max_iter = self.max_iter if max_iter is None else max_iter
        Hs = [torch.as_tensor(H, device=Xt.device).to(_dtype(Xt)) for H in self._H]
        n_samples = Xt.shape[0]
        widths = [self.n_features_in_, *[H.shape[0] for H in Hs[:-1]]]
        reg = Regularization(n_samples, widths, *self._alphas(), self.l1_ratio)
        L = len(Hs)
        Ws, target = [], Xt
        mean = _mean(Xt)
        hals = getattr(self, "_solver", "mu") == "hals"
        for l, H in enumerate(Hs):
            # HALS starts from the clipped least-squares codes (about half the
            # sweeps of a constant start); multiplicative updates cannot leave
            # the zeros of such a start, so they start from constant codes.
            W = None if hals else constant_codes(n_samples, H.shape[0], mean, H)
            layer_reg = Regularization(
                n_samples, [widths[l]], *self._alphas(), self.l1_ratio
            )
            if hals:
                W, _ = hals_solve_W(
                    target,
                    H,
                    W,
                    max_iter=max_iter,
                    tol=self.tol,
                    l1_reg_W=layer_reg.l1_W[0],
                    l2_reg_W=layer_reg.l2_W[0],
                )
            else:
                W = _solve_layer_codes(
                    target, W, H, beta, layer_reg, max_iter, self.tol
                )
            Ws.append(W)
            target = W
            mean = W.mean()
        if L > 1:
            weights = list(self.layer_weights_)
            caches = [{} for _ in range(L)]
            _, terms = objective(Xt, Ws, Hs, beta, self.loss, weights)
            error0 = _error(weights, terms)
            previous = error0
            for it in range(1, max_iter + 1):
                mu_epoch(
                    Xt,
                    Ws,
                    Hs,
                    beta=beta,
                    loss=self.loss,
                    weights=weights,
                    reg=reg,
                    update_H=False,
                    caches=caches,
                )
                if self.tol > 0 and it % 10 == 0:
                    _, terms = objective(Xt, Ws, Hs, beta, self.loss, weights)
                    error = _error(weights, terms)
                    if (previous - error) / max(error0, 1e-300) < self.tol:
                        break
                    previous = error
        return Ws

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
        X = _check_codes(X, self.n_components_)
        return np.asarray(X @ self.components_.astype(X.dtype, copy=False))

    def score(self, X, y=None):
        """Negative mean divergence of encoding then decoding ``X`` (higher is better).

        ``-D(X | inverse_transform(transform(X))) / n_samples``, so model selection
        by :class:`~sklearn.model_selection.GridSearchCV` needs no scorer.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        score : float
        """
        check_is_fitted(self)
        X, Xt, W = self._encode(X)
        comp = torch.as_tensor(self.components_, device=W.device).to(W.dtype)
        loss = beta_divergence(Xt, W, comp, self._beta)
        return -float(loss) / X.shape[0]

    # ----------------------------------------------------------- partial_fit
    def partial_fit(self, X, y=None):
        """Update the model with one mini-batch (online learning).

        The codes of the batch are solved with the weights fixed, then each
        ``Hl`` takes one step on running statistics of all batches seen, weighted
        by ``forget_factor``: block coordinate descent for the Frobenius loss
        (Mairal et al. 2010), the online multiplicative update otherwise
        (Lefèvre et al. 2011, as in :class:`sklearn.decomposition.MiniBatchNMF`).
        The first call initialises the model on its batch.

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : Ignored

        Returns
        -------
        self : DeepNMF
        """
        first = not hasattr(self, "components_")
        if not first and not hasattr(self, "_A"):
            # Fitted by fit(): continue online from its weights.
            self._A = [None] * len(self._H)
            self._B = [None] * len(self._H)
            self.n_steps_ = 0
        if first:
            self._validate_params()
            X = self._validate_input(X, reset=True)
        else:
            X = self._validate_input(X, reset=False)
        beta = beta_loss_to_float(self.beta_loss)
        self._check_zeros(X, beta)
        device = check_device(self.device)
        Xt = _to_tensor(X, device)
        if first:
            ranks = self._check_ranks(X.shape, for_partial_fit=True)
            gen = make_generator(seed_from_random_state(self.random_state))
            Hs, target = [], Xt
            init = self.init if self.init != "custom" else None
            for r in ranks:
                if init in (None, "nndsvd", "nndsvda", "nndsvdar") and r > min(
                    target.shape
                ):
                    init_l = "random"
                else:
                    init_l = init
                W_l, H_l = initialize_nmf(target, r, init_l, gen)
                if len(ranks) > 1:
                    W_l, H_l = normalize_rows(W_l, H_l)
                Hs.append(H_l)
                target = W_l
            self._beta = beta
            self._solver = "hals" if beta == 2.0 else "mu"
            self.layer_weights_ = np.ones(len(ranks))
            self._A = [None] * len(ranks)
            self._B = [None] * len(ranks)
            self.n_steps_ = 0
            self._H = [H.cpu().numpy() for H in Hs]
            self._set_components(X.dtype)
        Hs = [torch.as_tensor(H, device=device).to(_dtype(Xt)) for H in self._H]
        Ws = self._solve_codes(Xt, beta, max_iter=min(self.max_iter, 50))
        _, _, gamma = mm_exponents(beta)
        n_samples = X.shape[0]
        rho = self.forget_factor
        alphas = self._alphas()
        for l in range(len(Hs)):
            T = Xt if l == 0 else Ws[l - 1]
            if beta == 2.0:
                Hs[l] = self._online_hals_step(l, T, Ws[l], Hs[l], n_samples)
                continue
            num, den = mu_num_den(T, Ws[l], Hs[l], None, beta)
            den = den + n_samples * alphas[1] * self.l1_ratio
            den = den + n_samples * alphas[1] * (1 - self.l1_ratio) * Hs[l]
            num = num * Hs[l] ** (1.0 / gamma)
            A = num if self._A[l] is None else rho * self._A[l] + num
            B = den if self._B[l] is None else rho * self._B[l] + den
            self._A[l], self._B[l] = A, B
            H_new = (A / B.clamp_min(1e-30)) ** gamma
            if len(Hs) > 1:
                H_new = H_new / H_new.sum(1, keepdim=True).clamp_min(1e-30)
            Hs[l] = H_new
        self._H = [H.cpu().numpy() for H in Hs]
        self.n_steps_ += 1
        self._set_components(X.dtype)
        return self

    def _online_hals_step(self, l, T, W, H, n_samples, n_sweeps=10):
        """Frobenius: block coordinate descent on ``H`` with running statistics.

        ``A = Σ ρ^age WᵀW`` and ``B = Σ ρ^age WᵀT`` summarise every batch seen
        (Mairal et al. 2010); each row of ``H`` then has a closed-form update.
        """
        rho = self.forget_factor
        G = W.T @ W
        R = W.T @ T if not isinstance(T, CSRMatrix) else T.tmatmul(W).T
        A = G if self._A[l] is None else rho * self._A[l] + G
        B = R if self._B[l] is None else rho * self._B[l] + R
        self._A[l], self._B[l] = A, B
        alpha_H = self._alphas()[1]
        l1 = n_samples * alpha_H * self.l1_ratio
        l2 = n_samples * alpha_H * (1.0 - self.l1_ratio)
        H = H.clone()
        for _ in range(n_sweeps):
            for j in range(H.shape[0]):
                denom = float(A[j, j]) + l2
                if denom <= 0:
                    continue
                grad = A[j] @ H - B[j] + l1 + l2 * H[j]
                H[j] = (H[j] - grad / denom).clamp_min(0)
        if len(self._H) > 1:
            H = H / H.sum(1, keepdim=True).clamp_min(1e-30)
        return H

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

    def _check_ranks(self, shape, for_partial_fit=False):
        n_samples, n_features = shape
        nc = self.n_components
        if nc is None:
            ranks = (n_features,)
        elif isinstance(nc, numbers.Integral):
            ranks = (int(nc),)
        else:
            try:
                ranks = tuple(nc)
            except TypeError as exc:  # pragma: no cover - caught by validation
                raise TypeError(
                    f"n_components must be an int or a sequence of ints, got {nc!r}."
                ) from exc
            if len(ranks) == 0:
                raise ValueError("n_components is an empty sequence; give >= 1 rank.")
            for r in ranks:
                if not isinstance(r, numbers.Integral) or isinstance(r, bool) or r < 1:
                    raise ValueError(
                        f"n_components must hold positive integers, got {nc!r}."
                    )
            ranks = tuple(int(r) for r in ranks)
            if any(b > a for a, b in zip(ranks, ranks[1:])):
                raise ValueError(
                    f"n_components={nc!r} increases; the ranks of the layers must "
                    "be non-increasing, e.g. (64, 32, 16)."
                )
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
        return ranks

    def _check_zeros(self, X, beta):
        if beta > 0:
            return
        xmin = X.data.min() if sp.issparse(X) and X.nnz else X.min()
        has_zero = (sp.issparse(X) and X.nnz < X.shape[0] * X.shape[1]) or xmin == 0
        if beta <= 0 and has_zero:
            raise ValueError(
                "When beta_loss <= 0 and X contains zeros, the solver may diverge. "
                "Please add small values to X, or use a positive beta_loss."
            )

    def _resolved_solver(self, beta):
        if self.solver == "auto":
            if self.batch_size is not None:
                return "adam"
            return "hals" if beta == 2.0 else "mu"
        if self.solver == "hals" and (beta != 2.0 or self.batch_size is not None):
            raise ValueError(
                "solver='hals' minimises the Frobenius loss on full batches; got "
                f"beta_loss={self.beta_loss!r}, batch_size={self.batch_size!r}. "
                "Use solver='mu' (any beta) or solver='adam' (mini-batches)."
            )
        return self.solver

    def _alphas(self):
        alpha_H = self.alpha_W if self.alpha_H == "same" else self.alpha_H
        return float(self.alpha_W), float(alpha_H)

    def _check_custom(self, W, H, X, ranks):
        if W is None or H is None:
            raise ValueError("init='custom' needs both W and H passed to fit.")
        L = len(ranks)
        W_list = list(W) if isinstance(W, (list, tuple)) else [W]
        H_list = list(H) if isinstance(H, (list, tuple)) else [H]
        if len(W_list) != L or len(H_list) != L:
            raise ValueError(
                f"init='custom' with {L} layer(s) needs {L} W and {L} H arrays, got "
                f"{len(W_list)} and {len(H_list)}."
            )
        n_samples, n_features = X.shape
        dtype = X.dtype
        out_W, out_H = [], []
        widths = [n_features, *ranks[:-1]]
        for l in range(L):
            for name, A, shape in (
                (f"W[{l}]" if L > 1 else "W", W_list[l], (n_samples, ranks[l])),
                (f"H[{l}]" if L > 1 else "H", H_list[l], (ranks[l], widths[l])),
            ):
                A = np.asarray(A)
                if A.shape != shape:
                    raise ValueError(
                        f"Array passed as {name} for init='custom' has shape "
                        f"{A.shape}; expected {shape}."
                    )
                if not np.all(np.isfinite(A)) or np.any(A < 0):
                    raise ValueError(
                        f"Array passed as {name} for init='custom' must be finite "
                        "and nonnegative."
                    )
                if np.max(A, initial=0) == 0:
                    raise ValueError(
                        f"Array passed as {name} for init='custom' is all zeros; "
                        "multiplicative updates cannot leave zero."
                    )
            device = check_device(self.device)
            out_W.append(torch.tensor(np.array(W_list[l], dtype=dtype), device=device))
            out_H.append(torch.tensor(np.array(H_list[l], dtype=dtype), device=device))
        return out_W, out_H

    def _weights(self, terms):
        """Layer weights: given, or equalising the pretrained layers' ``terms``
        (None for one layer, whose weight is 1)."""
        if self.layer_weights is not None:
            return [float(w) for w in np.asarray(self.layer_weights).ravel()]
        if terms is None:
            return [1.0]
        # Equal terms at the start; lambda_1 = 1 keeps the penalties' scale that of
        # scikit-learn (relative to the data-fitting term).
        first = max(float(terms[0]), 1e-300)
        return [first / max(float(t), 1e-300) for t in terms]

    def _store(self, Xt, Ws, Hs, beta, dtype):
        self._beta = beta
        self._H = [H.cpu().numpy() for H in Hs]
        self._set_components(dtype)
        with torch.no_grad():
            comp = chain(Hs, 0, len(Hs))
            self.reconstruction_err_ = _sqrt2(beta_divergence(Xt, Ws[-1], comp, beta))
            if len(Ws) == 1:
                self.layer_errors_ = [self.reconstruction_err_]
            else:
                _, terms = objective(Xt, Ws, Hs, beta, "layer", [1.0] * len(Ws))
                self.layer_errors_ = [_sqrt2(t) for t in terms]
        self.history_ = self.net_.history if self.net_ is not None else None

    def _set_components(self, dtype):
        Hs = [torch.as_tensor(H) for H in self._H]
        self.layer_components_ = [H.numpy().astype(dtype, copy=False) for H in Hs]
        self.components_ = chain(Hs, 0, len(Hs)).numpy().astype(dtype, copy=False)
        self.n_components_ = self.components_.shape[0]

    @property
    def _n_features_out(self):
        return self.components_.shape[0]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.positive_only = True
        tags.input_tags.sparse = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _solve_layer_codes(T, W, H, beta, reg, max_iter, tol):
    """Codes of one layer ``T ≈ W H`` with ``H`` fixed (scikit-learn's mu transform)."""
    _, _, gamma = mm_exponents(beta)
    cache = {}
    error0 = _sqrt2(beta_divergence(T, W, H, beta))
    previous = error0
    for it in range(1, max_iter + 1):
        num, den = mu_num_den(T, None, W, H, beta, cache)
        W = mu_apply(W, num, den, gamma, reg.l1_W[0], reg.l2_W[0])
        if beta < 1:
            W = torch.where(W < 2.220446049250313e-16, torch.zeros_like(W), W)
        if tol > 0 and it % 10 == 0:
            error = _sqrt2(beta_divergence(T, W, H, beta))
            if (previous - error) / max(error0, 1e-300) < tol:
                break
            previous = error
    return W


def _check_codes(X, n_components):
    if sp.issparse(X):
        X = X.toarray()
    X = np.asarray(X)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2 or X.shape[1] != n_components:
        raise ValueError(
            f"Codes must have shape (n_samples, {n_components}); got {X.shape}."
        )
    return X


def _to_tensor(X, device):
    """``X`` as a tensor (or CSRMatrix) that shares memory with it where it can.

    The solvers only read X, so on CPU a C-contiguous array (or a canonical CSR
    matrix) is wrapped without a copy: the fit's peak memory is then X plus the
    factors and the products' outputs.
    """
    if sp.issparse(X):
        X = sp.csr_matrix(X)  # shares the arrays of a CSR input
        if not X.has_canonical_format:
            # Sorting in place would reorder the caller's arrays.
            X = X.copy()
            X.sum_duplicates()
        return CSRMatrix.from_scipy(X, device)
    X = np.ascontiguousarray(X)
    if torch.device(device).type != "cpu":
        return torch.as_tensor(X, device=device)
    with warnings.catch_warnings():
        # torch warns that a read-only array could be written through the
        # tensor; these tensors are only read.
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(X)


def _dtype(Xt):
    return Xt.dtype


def _mean(Xt):
    if isinstance(Xt, CSRMatrix):
        return Xt.sum() / (Xt.shape[0] * Xt.shape[1])
    return Xt.mean()


def _sqrt2(loss) -> float:
    return float(torch.sqrt(2.0 * torch.as_tensor(loss).clamp_min(0.0)))


def _error(weights, terms) -> float:
    return _sqrt2(sum(w * t for w, t in zip(weights, terms)))


def deep_nmf(X, n_components=None, *, W=None, H=None, **params):
    """Deep NMF of ``X`` as a function, in the spirit of ``non_negative_factorization``.

    Parameters
    ----------
    X : {array-like, sparse matrix} of shape (n_samples, n_features)
        Nonnegative data.
    n_components : int or sequence of int, default=None
        Ranks of the layers (see :class:`DeepNMF`).
    W, H : array-like or list of array-like, default=None
        Initial factors for ``init="custom"``.
    **params
        Any other :class:`DeepNMF` parameter.

    Returns
    -------
    W_list : list of ndarray
        Codes ``[W1, ..., WL]`` of the training rows, ``Wl`` of shape
        (n_samples, r_l).
    H_list : list of ndarray
        Weights ``[H1, ..., HL]``.
    n_iter : int
        Iterations of the joint fine-tuning (of the one layer when shallow).

    See Also
    --------
    DeepNMF : The estimator.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sknmf import deep_nmf
    >>> X = load_digits().data[:200]
    >>> W_list, H_list, n_iter = deep_nmf(X, (12, 4), random_state=0)
    >>> [W.shape for W in W_list], [H.shape for H in H_list]
    ([(200, 12), (200, 4)], [(12, 64), (4, 12)])
    """
    model = DeepNMF(n_components, **params)
    model.fit(X, W=W, H=H)
    module = model.net_.module_ if model.net_ is not None else None
    if module is None:
        raise ValueError("deep_nmf needs max_iter >= 1 to train the factors.")
    dtype = model.components_.dtype
    W_list = [W.detach().cpu().numpy().astype(dtype, copy=False) for W in module.W]
    return W_list, list(model.layer_components_), model.n_iter_
