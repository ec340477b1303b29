"""ExpressionRNN: recurrent sequence classifier for scikit-learn, trained by skorch.

The estimator owns input preparation (change from the first frame, motion features,
standardisation, a safe internal scale for huge values), the fixed path (classifiers
of the last-minus-first change fitted before the network), the cross-validated choice
of the number of epochs, label and class-weight validation, and the guarantee that a
failed ``fit`` leaves the previous model intact.
"""

from __future__ import annotations

import copy
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import (
    BaseEstimator,
    ClassifierMixin,
    ClassNamePrefixFeaturesOutMixin,
    TransformerMixin,
    _fit_context,
)
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import (
    KFold,
    ShuffleSplit,
    StratifiedKFold,
    StratifiedShuffleSplit,
)
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import LabelEncoder
from sklearn.utils import compute_class_weight
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import (
    check_is_fitted,
    column_or_1d,
    validate_data,
)
from skorch import NeuralNetClassifier
from skorch.callbacks import EarlyStopping, ProgressBar
from skorch.dataset import Dataset
from skorch.helper import predefined_split
from skorch.history import History

from .._torch.nets import InterruptWatch
from .._torch.rnn import SequenceClassifier
from .._torch.rnn_net import BatchAccuracy
from .._utils import (
    check_device,
    make_generator,
    power_of_two_scale,
    seed_from_random_state,
    threads_for,
    unchanged_on_failure,
)
from ._sequences import (
    Sequences,
    array_ndim,
    check_sequences,
    is_sequence_list,
    pad_sequences,
)

# Multiply-adds of one gate of one recurrent step over a batch below which the net
# runs on one torch thread: such steps take microseconds, and a second OpenMP thread
# only adds a barrier per operation, which stalls whenever another process holds a core
# (the default pipeline's network trained in 18-19 s with two threads on a loaded
# 2-core machine, 2-3 s with one).
_SINGLE_THREAD_WORK = 1 << 22


def _threads_for(work: int, device: torch.device):
    return threads_for(work, _SINGLE_THREAD_WORK, device)


# Training frames whose largest magnitude lies outside [2**-60, 2**60] are divided by
# a power of two first (exact: it changes no digit): squares of values beyond ~1e154
# overflow float64 and values beyond ~3e38 overflow the network's float32. Inside
# that range nothing is rescaled, so ordinary data gives bit-identical fits.
_SAFE_EXPONENT = 60


# Fitted attributes that only some settings produce.
_OPTIONAL_ATTRIBUTES = (
    "skip_mean_",
    "skip_scale_",
    "skip_coef_",
    "skip_intercept_",
    "skip_estimators_",
    "cv_accuracy_",
    "motion_scale_",
)

# Probability given to a class the path never saw (tiny data whose training folds
# lack it): its logit is log(1e-30), about -69, finite in float32.
_PROBA_FLOOR = 1e-30

_OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}


def _check_label_kinds(y: np.ndarray) -> None:
    """Refuse labels mixing strings and numbers, as scikit-learn's encoders do.

    ``check_classification_targets`` sorts the labels first and dies with Python's
    ``'<' not supported between instances of 'int' and 'str'``.
    """
    if y.dtype.kind != "O":
        return
    kinds = {"string" if isinstance(v, str | bytes) else "number" for v in y}
    if len(kinds) > 1:
        examples = [next(v for v in y if isinstance(v, str | bytes))]
        examples.append(next(v for v in y if not isinstance(v, str | bytes)))
        raise TypeError(
            "Mix of label input types (string and number) in y, e.g. "
            f"{examples[0]!r} and {examples[1]!r}: ExpressionRNN, like scikit-learn's "
            "classifiers, needs labels of one kind; convert them first, e.g. "
            "y.astype(str)."
        )


def _rows(net_input: dict, rows: np.ndarray) -> dict:
    """The network's inputs of some sequences."""
    return {name: value[rows] for name, value in net_input.items()}


def _check_float32_range(values: np.ndarray, what: str) -> None:
    """Refuse inputs the float32 network cannot hold (it would answer NaN)."""
    limit = float(np.finfo(np.float32).max)
    if values.size and not np.all(np.abs(values) <= limit):
        raise ValueError(
            f"X is far outside the range of the training data: {what}, after the "
            "scaling learned in fit, exceed float32's range (about 3.4e38), in which "
            "the network computes. Bring X to the scale of the data the model was "
            "fitted on (or refit on data of this scale)."
        )


def fewest_epochs_within_one_se(
    correct: np.ndarray, weight: np.ndarray, first: int = 0
) -> tuple[int, np.ndarray]:
    """Fewest epochs whose held-out accuracy is within one standard error of the best.

    Parameters
    ----------
    correct : ndarray of shape (n_epochs + 1, n_seq)
        1 where the model after that many epochs classified the held-out sequence
        correctly (each sequence held out once), else 0.
    weight : ndarray of shape (n_seq,)
        Weight of each sequence (its class weight; ones for plain accuracy).
    first : int, default=0
        Fewest epochs allowed.

    Returns
    -------
    epochs : int
        The smallest ``e >= first`` whose mean weighted gain of the best epoch count
        over ``e``, per sequence, is at most its standard error (``std / sqrt(n)``,
        paired: the same sequences judge both). The one-standard-error rule of
        model selection, with fewer epochs as the simpler model: a gain within the
        noise of a few hundred sequences does not pay for the training.
    accuracy : ndarray of shape (n_epochs + 1,)
        Weighted held-out accuracy after each number of epochs.
    """
    n = correct.shape[1]
    accuracy = correct @ weight / weight.sum()
    best = first + int(np.argmax(accuracy[first:]))
    for epochs in range(first, best):
        gain = (correct[best] - correct[epochs]) * weight / weight.mean()
        if gain.mean() <= gain.std(ddof=1) / np.sqrt(n):
            return epochs, accuracy
    return best, accuracy


class ExpressionRNN(
    ClassNamePrefixFeaturesOutMixin, ClassifierMixin, TransformerMixin, BaseEstimator
):
    """Recurrent-network classifier of frame sequences (GRU, LSTM or Elman RNN).

    Each sequence of frame vectors (for instance NMF codes of video frames, from
    :class:`~sknmf.FrameEncoder`) is read by a recurrent network; its final hidden state
    (the sequence *embedding*) goes through a linear layer to class scores. Training is
    done by `skorch <https://skorch.readthedocs.io>`_ (Adam by default, cross-entropy
    loss), which keeps a per-epoch ``history_``.

    Sequences of different lengths are padded and *packed*
    (:func:`torch.nn.utils.rnn.pack_padded_sequence`): padding never reaches the
    recurrence, so a sequence's prediction does not depend on the other sequences of the
    batch, and nothing is truncated.

    Parameters
    ----------
    hidden_size : int, default=64
        Size of the recurrent state (per direction).
    cell : {"gru", "lstm", "rnn"}, default="gru"
        Recurrent cell: gated recurrent unit, long short-term memory, or Elman RNN
        (tanh).
    num_layers : int, default=1
        Number of stacked recurrent layers.
    bidirectional : bool, default=False
        Also read each sequence backwards and concatenate both final states.
    dropout : float, default=0.0
        Dropout probability on the inputs of every layer above the first and on the
        embedding before the output layer. Its masks come from a private generator
        seeded by ``random_state``.
    max_epochs : int, default=60
        Number of passes over the training sequences.
    lr : float, default=1e-2
        Learning rate of the optimizer.
    batch_size : int, default=32
        Sequences per gradient step (and per inference batch).
    optimizer : {"adam", "adamw", "sgd", "rmsprop"}, default="adam"
        The :mod:`torch.optim` optimizer.
    class_weight : "balanced", dict or None, default=None
        Weights of the classes in the loss. ``"balanced"`` weights each class by
        ``n_samples / (n_classes * count)``, for skewed classes; a dict maps class
        labels to weights.
    validation_fraction : float in (0, 1) or None, default=None
        If set, this fraction of the training sequences (stratified when every class
        can spare one) is held out and scored after every epoch (``valid_loss``,
        ``valid_acc`` in ``history_``); with ``early_stopping`` it then chooses the
        number of epochs instead of ``cv``. ``None`` trains on everything (or holds
        out 0.2 with ``early_stopping`` and ``cv=None``). Without ``early_stopping``
        the held-out part is never trained on.
    device : str or torch.device, default="cpu"
        ``"cpu"`` or ``"cuda"``; a clear error is raised when CUDA is not available.
    random_state : int, RandomState instance or None, default=None
        Seeds the initialisation, the shuffling of mini-batches, dropout and the
        validation split, all through private generators (torch's global random state
        is left alone). Pass an int for reproducible fits.
    verbose : int, default=0
        ``0`` is silent; ``1`` or more shows a progress bar and the per-epoch table of
        losses and accuracies.
    scale_inputs : {"feature", "global", "none"} or bool, default="feature"
        Standardisation of the network's inputs, learned in :meth:`fit`:
        ``"feature"`` centres every input feature and divides it by its standard
        deviation over the training frames (floored at a tenth of the average one, so
        a barely used NMF component is not blown up into noise); ``"global"`` divides
        every value by one scalar, the standard deviation of all values (the relative
        sizes of the features are kept); ``"none"`` feeds the values as they are.
        ``True`` and ``False`` mean ``"global"`` and ``"none"``.
    inputs : {"change", "frames", "both"}, default="change"
        What the network reads at each frame: ``"change"``, the frame minus the first
        frame of its sequence (faces differ far more from person to person than from
        expression to expression, and the first frame of an expression video shows the
        person's neutral face); ``"frames"``, the frames as they are; ``"both"``, the
        two side by side. With ``"change"`` a one-frame sequence reads zeros.
    motion : bool, default=True
        Also read, at each frame, how far the frame has moved from the first frame and
        from the previous one (``log(1 + ||change|| / s)``, with ``s`` the average
        norm of a training frame); after standardisation these two features weigh as
        much as all the others together. They tell *when* the face changes (an
        expression appearing versus fading), a non-linear cue a small network
        otherwise misses in many noisy features.
    weight_decay : float, default=0.0
        L2 penalty (``weight_decay`` of the :mod:`torch.optim` optimizer; decoupled
        for ``optimizer="adamw"``).
    early_stopping : bool, default=True
        Choose the number of epochs (at most ``max_epochs``) by cross-validation,
        then train the path and the network on all the sequences for that many
        epochs. With ``cv`` folds (the default), one network per fold trains on the
        other folds, all in step, until their pooled held-out loss has not improved
        for ``n_iter_no_change`` epochs; the choice is the *fewest* epochs whose
        held-out accuracy (every sequence held out once) is within one standard
        error of the best. With ``skip`` that may be 0 epochs: the path alone, when
        the recurrence does not beat it by more than the noise (on the hard
        expression set it keeps the path alone in most folds for the 7
        expressions, whose order carries nothing, and always trains for onset
        versus offset, which only the order tells).
        With ``validation_fraction`` set or ``cv=None``, one held-out part (0.2 if
        ``None``) chooses instead, by its loss, and at least one epoch.
    n_iter_no_change : int, default=10
        Patience of ``early_stopping``, in epochs.
    cv : int >= 2 or None, default=3
        Number of folds (stratified when every class has that many sequences) of
        the cross-validation of ``early_stopping``; ``None`` uses one held-out part
        instead. Costs ``cv`` extra fits of the path and of the network.
    callbacks : list of skorch callbacks or None, default=None
        Extra :mod:`skorch.callbacks`, passed to the skorch net that trains the
        final network (and to the held-out run of ``early_stopping`` with
        ``cv=None``; not to the cross-validation's networks). Copied, so the
        instances you pass are never modified.
    skip : bool, default=True
        Add a fixed path to the class scores: first classifiers of each sequence's
        last frame minus its first, standardised (scikit-learn's ``StandardScaler``,
        then ``skip_n_inits`` MLPs whose probabilities are averaged, or a logistic
        regression with ``skip_hidden=None``), are fitted; the log of their
        probabilities is added to the network's class scores, and the network is
        trained on top, its read-out starting at zero, so it learns only what the
        path leaves (the path stays fixed). Works with every ``inputs`` setting; a
        one-frame sequence's change is zero.
    skip_C : float, default=1.0
        Inverse L2 strength of the path: ``C`` of
        :class:`~sklearn.linear_model.LogisticRegression`, or ``alpha = 1 / skip_C``
        of :class:`~sklearn.neural_network.MLPClassifier` (the same scale: both
        penalise ``||w||^2 / (2 C)`` against the *mean* log-loss over the sequences).
    skip_hidden : int or None, default=64
        Hidden units of the path's MLPs (one hidden layer, ReLU, Adam). ``None``:
        the path is one logistic regression. On the hard expression set the MLPs
        beat the logistic regression on the 7 expressions (see Notes).
    skip_n_inits : int, default=3
        Number of MLPs, from different initialisations, whose probabilities the
        path averages (only with ``skip_hidden``).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, in the order of the columns of :meth:`predict_proba`.
    n_features_in_ : int
        Number of features of each frame.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Names of features seen during :meth:`fit` (2-D DataFrame input only).
    net_ : skorch.NeuralNetClassifier
        The fitted skorch net; its ``module_`` is a
        :class:`sknmf._torch.rnn.SequenceClassifier`.
    history_ : skorch.History
        Per-epoch records: ``train_loss``, ``train_acc`` (and ``valid_loss``,
        ``valid_acc`` with a held-out part), ``dur``. With ``early_stopping``, the
        record of the runs that chose the number of epochs (when cross-validating,
        the means over the folds of ``train_loss``, ``train_acc`` and ``dur``, and
        the pooled held-out ``valid_loss`` and ``valid_acc``); the final network's
        own record is ``net_.history``.
    input_mean_ : ndarray of shape (n_inputs,)
        Subtracted from the network's input features (zeros unless
        ``scale_inputs="feature"``).
    input_scale_ : ndarray of shape (n_inputs,)
        Then multiplied with them. ``n_inputs`` is ``n_features_in_`` (twice that for
        ``inputs="both"``), plus 2 with ``motion``.
    motion_scale_ : float
        The average norm of a training frame, ``s`` of ``motion`` (only with
        ``motion=True``).
    skip_mean_ : ndarray of shape (n_features_in_,)
        Mean of the training sequences' last-minus-first change (only with
        ``skip=True``).
    skip_scale_ : ndarray of shape (n_features_in_,)
        Inverse standard deviation of that change (1 where it is constant); the
        path reads ``(change - skip_mean_) * skip_scale_``.
    skip_estimators_ : list of fitted classifiers
        The path's scikit-learn classifiers (``skip_n_inits`` MLPs, or one logistic
        regression), fitted on all the sequences, with encoded labels
        ``0 .. n_classes - 1`` (only with ``skip=True``).
    skip_coef_ : ndarray of shape (n_classes, n_features_in_)
        Weights of the logistic path on the standardised changes (only with
        ``skip_hidden=None``; for two classes the first row is zero: scikit-learn's
        binary coefficients are the second).
    skip_intercept_ : ndarray of shape (n_classes,)
        Its intercepts.
    cv_accuracy_ : ndarray of shape (n_epochs_run + 1,)
        Cross-validated accuracy after 0, 1, ... epochs (entry 0: the path alone,
        or an untrained network without ``skip``), from which ``early_stopping``
        chose ``n_iter_`` (only when cross-validating).
    n_iter_ : int
        Number of epochs the final network was trained (with ``early_stopping``, the
        number chosen; 0 means the predictions are the path's alone, and the
        embedding of :meth:`transform` is then that of the untrained recurrence;
        fewer than ``max_epochs`` also if a callback stopped training early).

    See Also
    --------
    FrameEncoder : Encode every frame of video sequences with a 2-D transformer.
    sklearn.neural_network.MLPClassifier : Order-blind neural classifier of vectors.

    Notes
    -----
    Input may be ``(n_seq, n_frames, n_features)``, a list of ``(n_frames_i,
    n_features)`` arrays of different lengths, or ``(n_seq, n_features)``, read as
    one-frame sequences. The network computes in float32; :meth:`transform` returns
    the input's float dtype. Training data of any finite magnitude is divided
    internally by a power of two when needed (standardised inputs do not depend on
    it); data whose inputs, after the scaling learned in :meth:`fit`, exceed
    float32's range is refused with a ``ValueError`` rather than given non-finite
    probabilities. If :meth:`fit` fails (an exception, e.g. from a callback, or
    Ctrl-C), the estimator is left exactly as it was before the call.

    On small, person-dominated data (the hard setting of
    :func:`~sknmf.datasets.make_expression_videos`, 300 videos, person-wise 5-fold
    cross-validation, ``benchmarks/expressions.py``) the defaults score 0.869 on the
    7 expressions over data sets 0-2 (0.870 over data sets 3-12, on which the
    defaults were chosen), against 0.857 (0.858) for the logistic regression of the
    standardised last-minus-first codes: ahead on 12 of the 13 data sets. The
    previous defaults (``skip_hidden=None, cv=None``: a logistic path and one
    held-out fifth) matched that baseline (0.858); training the recurrence on top of
    the MLP path for as long as one held-out fifth's loss allowed gave the MLPs'
    gain back (0.854), hence the cross-validated choice, which may keep the path
    alone. Onset versus offset: 0.982 (0.988 over data sets 3-12), against 0.905 for
    the linear model, which cannot see the order.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf import ExpressionRNN
    >>> rng = np.random.RandomState(0)
    >>> X = rng.rand(40, 6, 3)                  # 40 sequences, 6 frames, 3 features
    >>> y = np.where(X[:, -1, 0] > X[:, 0, 0], "rise", "fall")
    >>> clf = ExpressionRNN(hidden_size=8, max_epochs=5, random_state=0).fit(X, y)
    >>> clf.classes_
    array(['fall', 'rise'], dtype='<U4')
    >>> clf.predict_proba(X[:2]).sum(axis=1)
    array([1., 1.])
    >>> clf.transform(X).shape
    (40, 8)
    >>> ragged = [rng.rand(n, 3) for n in (2, 9, 4)]  # sequences of any length
    >>> clf.predict(ragged).shape
    (3,)
    """

    _parameter_constraints: dict = {
        "hidden_size": [Interval(Integral, 1, None, closed="left")],
        "cell": [StrOptions({"gru", "lstm", "rnn"})],
        "num_layers": [Interval(Integral, 1, None, closed="left")],
        "bidirectional": ["boolean"],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(_OPTIMIZERS))],
        "class_weight": [StrOptions({"balanced"}), dict, None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "device": [str, torch.device],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "scale_inputs": [StrOptions({"feature", "global", "none"}), "boolean"],
        "inputs": [StrOptions({"change", "frames", "both"})],
        "motion": ["boolean"],
        "weight_decay": [Interval(Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
        "callbacks": [list, None],
        "skip": ["boolean"],
        "skip_C": [Interval(Real, 0, None, closed="neither")],
        "skip_hidden": [Interval(Integral, 1, None, closed="left"), None],
        "skip_n_inits": [Interval(Integral, 1, None, closed="left")],
        "cv": [Interval(Integral, 2, None, closed="left"), None],
    }

    def __init__(
        self,
        hidden_size: int = 64,
        *,
        cell: str = "gru",
        num_layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        max_epochs: int = 60,
        lr: float = 1e-2,
        batch_size: int = 32,
        optimizer: str = "adam",
        class_weight=None,
        validation_fraction: float | None = None,
        device: str | torch.device = "cpu",
        random_state=None,
        verbose: int = 0,
        scale_inputs: str | bool = "feature",
        inputs: str = "change",
        motion: bool = True,
        weight_decay: float = 0.0,
        early_stopping: bool = True,
        n_iter_no_change: int = 10,
        callbacks: list | None = None,
        skip: bool = True,
        skip_C: float = 1.0,
        skip_hidden: int | None = 64,
        skip_n_inits: int = 3,
        cv: int | None = 3,
    ) -> None:
        self.hidden_size = hidden_size
        self.cell = cell
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.max_epochs = max_epochs
        self.lr = lr
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.class_weight = class_weight
        self.validation_fraction = validation_fraction
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.scale_inputs = scale_inputs
        self.inputs = inputs
        self.motion = motion
        self.weight_decay = weight_decay
        self.early_stopping = early_stopping
        self.n_iter_no_change = n_iter_no_change
        self.callbacks = callbacks
        self.skip = skip
        self.skip_C = skip_C
        self.skip_hidden = skip_hidden
        self.skip_n_inits = skip_n_inits
        self.cv = cv

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train the network on labelled sequences.

        Parameters
        ----------
        X : array-like of shape (n_seq, n_frames, n_features), list of arrays of shape \
(n_frames_i, n_features), or array-like of shape (n_seq, n_features)
            Training sequences (2-D input is read as one-frame sequences).
        y : array-like of shape (n_seq,)
            Class labels (strings or integers).

        Returns
        -------
        self : ExpressionRNN
            The fitted classifier.
        """
        # A fit that fails half-way (a callback's exception, Ctrl-C) must not leave
        # the new n_features_in_ beside the old network: put everything back.
        with unchanged_on_failure(self):
            return self._fit(X, y)

    def _fit(self, X, y):
        device = check_device(self.device)
        seqs, _ = self._validate_sequences(X, reset=True)
        y = column_or_1d(y, warn=True)
        if len(y) != seqs.n_sequences:
            raise ValueError(
                f"y has {len(y)} labels but X has {seqs.n_sequences} sequences; "
                "pass one label per sequence."
            )
        _check_label_kinds(y)
        check_classification_targets(y)
        encoder = LabelEncoder().fit(y)
        self.classes_ = encoder.classes_
        if len(self.classes_) < 2:
            raise ValueError(
                "ExpressionRNN needs at least 2 classes to train, but y contains only "
                f"one class: {self.classes_[0]!r}."
            )
        self._check_class_weight()
        y_enc = encoder.transform(y).astype(np.int64)
        # Attributes that only some settings have must not survive from an earlier
        # fit with other settings.
        for name in _OPTIONAL_ATTRIBUTES:
            if hasattr(self, name):
                delattr(self, name)

        # With scale_inputs="none" the network reads the values as they are: no
        # internal rescaling (values beyond float32 are then a clear error).
        scaled = self.scale_inputs not in ("none", False)
        self._frame_scale = self._safe_frame_scale(seqs.frames) if scaled else 1.0
        self._fit_input_scaling(self._net_features(seqs, fit=True))

        seed = seed_from_random_state(self.random_state)
        if self.class_weight is None:
            weight = None
        else:
            weight = torch.as_tensor(
                compute_class_weight(self.class_weight, classes=self.classes_, y=y),
                dtype=torch.float32,
            )
        every = np.arange(len(y_enc))
        with _threads_for(self._step_work(), device), InterruptWatch() as watch:
            if self._cross_validates():
                epochs, history = self._choose_epochs(
                    seqs, y_enc, weight, seed, device, watch
                )
                if not watch.signalled:
                    net = self._train(
                        seqs, y_enc, weight, seed, device, every, None, epochs
                    )
            else:
                train_rows, valid_rows = self._split(y_enc, seed)
                net = self._train(
                    seqs, y_enc, weight, seed, device, train_rows, valid_rows
                )
                history = net.history
                if self.early_stopping and not watch.signalled:
                    # The held-out part chose the number of epochs; now every sequence
                    # trains the path and the network, for that many epochs.
                    # (The former held-out part is still scored, so that callbacks
                    # watching valid_loss keep working; it is no longer held out.)
                    best = int(np.argmin(history[:, "valid_loss"])) + 1
                    net = self._train(
                        seqs, y_enc, weight, seed, device, every, valid_rows, best
                    )
        if watch.signalled:
            # skorch ends training on any KeyboardInterrupt, a user's Ctrl-C
            # included: that one must stop the program, not return a model.
            raise KeyboardInterrupt
        # Inference never switches modes again: concurrent predictions cannot
        # race on module.train()/eval() (dropout left on in another thread).
        net.module_.eval()
        self.net_ = net
        self.history_ = history
        self.n_iter_ = len(net.history)
        self._n_features_out = net.module_.embedding_size
        return self

    def _cross_validates(self) -> bool:
        """Whether ``early_stopping`` chooses the epochs by cross-validation."""
        return (
            self.early_stopping
            and self.cv is not None
            and self.validation_fraction is None
        )

    def _choose_epochs(self, seqs, y_enc, weight, seed, device, watch):
        """Number of epochs chosen by ``cv``-fold cross-validation, and its history.

        The ``cv`` networks (each with its own path, fitted on its training folds)
        train in step, one epoch at a time, until their pooled held-out loss has not
        improved for ``n_iter_no_change`` epochs. Every sequence is held out once,
        so each epoch count has a held-out accuracy over all the sequences. The
        choice is the fewest epochs whose accuracy is within one standard error (of
        the paired per-sequence difference) of the best; with the path, that may
        be 0 epochs: the path alone.
        """
        n = len(y_enc)
        n_classes = len(self.classes_)
        n_splits = min(self.cv, n)
        counts = np.bincount(y_enc, minlength=n_classes)
        splitter = StratifiedKFold if counts.min() >= n_splits else KFold
        folds = splitter(n_splits, shuffle=True, random_state=seed % 2**32).split(
            np.zeros(n), y_enc
        )
        # Held-out sequences count with their class weight, as in the loss.
        w = np.ones(n) if weight is None else weight.numpy().astype(float)[y_enc]
        if not w.sum() > 0:
            # Every class weighted 0: nothing to choose by; count every sequence.
            w = np.ones(n)
        runs = []
        for train, valid in folds:
            path = (
                self._fit_path(seqs, y_enc, weight, train, seed) if self.skip else None
            )
            net_input = self._net_input(seqs, path)
            net = self._make_net(weight, seed, device, 1, None, [])
            net.set_params(verbose=0)
            net.initialize()
            runs.append(
                (
                    net,
                    _rows(net_input, train),
                    y_enc[train],
                    _rows(net_input, valid),
                    valid,
                )
            )
        correct = np.zeros((self.max_epochs + 1, n))
        losses = np.zeros((self.max_epochs + 1, n))

        def score(epoch):
            for net, _, _, valid_input, valid in runs:
                logits = net.forward(valid_input, training=False).to(torch.float64)
                log_proba = torch.log_softmax(logits, dim=1).numpy()
                truth = y_enc[valid]
                correct[epoch, valid] = log_proba.argmax(axis=1) == truth
                losses[epoch, valid] = -log_proba[np.arange(len(valid)), truth]
            return float(np.average(losses[epoch], weights=w))

        best_loss, waited, last = score(0), 0, 0
        for epoch in range(1, self.max_epochs + 1):
            for net, train_input, train_y, _, _ in runs:
                net.partial_fit(train_input, train_y)
                if watch.signalled:
                    return 0, None
            last = epoch
            loss = score(epoch)
            if loss < best_loss:
                best_loss, waited = loss, 0
            else:
                waited += 1
                if waited >= self.n_iter_no_change:
                    break
        correct, losses = correct[: last + 1], losses[: last + 1]
        # Without the path, 0 epochs would be an untrained network.
        chosen, accuracy = fewest_epochs_within_one_se(
            correct, w, 0 if self.skip else 1
        )
        self.cv_accuracy_ = accuracy
        if self.verbose:
            curve = " ".join(f"{a:.3f}" for a in accuracy)
            alone = " (the path alone)" if chosen == 0 else ""
            print(
                f"{n_splits}-fold cross-validated accuracy after 0..{last} epochs: "
                f"{curve}; chosen: {chosen} epochs{alone}",
                flush=True,
            )
        history = History()
        for epoch in range(1, last + 1):
            history.new_epoch()
            history.record("epoch", epoch)
            for key in ("train_loss", "train_acc", "dur"):
                history.record(
                    key, float(np.mean([r[0].history[epoch - 1, key] for r in runs]))
                )
            history.record("valid_loss", float(np.average(losses[epoch], weights=w)))
            history.record("valid_acc", float(accuracy[epoch]))
        return chosen, history

    def _train(
        self, seqs, y_enc, weight, seed, device, train_rows, valid_rows, epochs=None
    ) -> NeuralNetClassifier:
        """Fit the path and train the network on ``train_rows``.

        With ``valid_rows``, those sequences are scored after every epoch (and stop
        training with ``early_stopping``); ``epochs`` overrides ``max_epochs``.
        """
        path = None
        if self.skip:
            # Fitted on the training part only: the held-out part must judge the
            # path as honestly as the network.
            path = self._fit_path(seqs, y_enc, weight, train_rows, seed)
            self._set_path(path)

        callbacks = []
        if self.verbose:
            callbacks.append(("progress_bar", ProgressBar()))
        # Copies: skorch initialises and mutates callbacks; the user's stay untouched.
        callbacks.extend(copy.deepcopy(list(self.callbacks or [])))

        net_input = self._net_input(seqs, path)
        if valid_rows is None:
            train_split = None
        else:
            valid = Dataset(_rows(net_input, valid_rows), y_enc[valid_rows])
            train_split = predefined_split(valid)
            if self.early_stopping and epochs is None:
                callbacks.append(
                    (
                        "early_stopping",
                        EarlyStopping(
                            monitor="valid_loss",
                            patience=self.n_iter_no_change,
                            load_best=True,
                        ),
                    )
                )
        max_epochs = self.max_epochs if epochs is None else epochs
        net = self._make_net(weight, seed, device, max_epochs, train_split, callbacks)
        return net.fit(_rows(net_input, train_rows), y_enc[train_rows])

    def _make_net(
        self, weight, seed, device, max_epochs, train_split, callbacks
    ) -> NeuralNetClassifier:
        """The skorch net (the path, if any, enters as fixed logits)."""
        n_classes = len(self.classes_)
        module_skip = {}
        if self.skip:
            # The path's logits are added through an identity: the recurrence's
            # read-out starts at zero, so the untrained network is the path alone.
            module_skip = dict(
                module__skip_weight=np.eye(n_classes),
                module__skip_bias=np.zeros(n_classes),
            )
        return NeuralNetClassifier(
            module=SequenceClassifier,
            module__n_features=len(self.input_scale_),
            module__n_classes=n_classes,
            module__hidden_size=self.hidden_size,
            module__cell=self.cell,
            module__num_layers=self.num_layers,
            module__bidirectional=self.bidirectional,
            module__dropout=self.dropout,
            module__seed=seed,
            **module_skip,
            criterion=torch.nn.CrossEntropyLoss,
            criterion__weight=weight,
            optimizer=_OPTIMIZERS[self.optimizer],
            lr=self.lr,
            optimizer__weight_decay=self.weight_decay,
            max_epochs=max_epochs,
            batch_size=self.batch_size,
            train_split=train_split,
            classes=np.arange(n_classes),
            iterator_train__shuffle=True,
            iterator_train__generator=make_generator(seed + 2),
            iterator_valid__generator=make_generator(seed + 3),
            callbacks=[("train_acc", BatchAccuracy("train_acc")), *callbacks],
            device=str(device),
            verbose=self.verbose,
        )

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities of each sequence.

        Parameters
        ----------
        X : array-like of shape (n_seq, n_frames, n_features), list of arrays, or \
array-like of shape (n_seq, n_features)
            Sequences, in any of the forms :meth:`fit` accepts.

        Returns
        -------
        proba : ndarray of shape (n_seq, n_classes)
            Rows sum to 1; columns follow ``classes_``.
        """
        check_is_fitted(self)
        seqs, _ = self._validate_sequences(X, reset=False)
        logits = self._infer(seqs, embed=False)
        return torch.softmax(logits.to(torch.float64), dim=1).numpy()

    def predict(self, X) -> np.ndarray:
        """Predicted class label of each sequence.

        Parameters
        ----------
        X : array-like of shape (n_seq, n_frames, n_features), list of arrays, or \
array-like of shape (n_seq, n_features)
            Sequences, in any of the forms :meth:`fit` accepts.

        Returns
        -------
        y_pred : ndarray of shape (n_seq,)
            Labels from ``classes_``.
        """
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def transform(self, X) -> np.ndarray:
        """Sequence embeddings: the final hidden state of the last layer.

        Parameters
        ----------
        X : array-like of shape (n_seq, n_frames, n_features), list of arrays, or \
array-like of shape (n_seq, n_features)
            Sequences, in any of the forms :meth:`fit` accepts.

        Returns
        -------
        embedding : ndarray of shape (n_seq, hidden_size * (2 if bidirectional else 1))
            In the input's float dtype (float32 input stays float32).
        """
        check_is_fitted(self)
        seqs, dtype = self._validate_sequences(X, reset=False)
        return self._infer(seqs, embed=True).numpy().astype(dtype, copy=False)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # helpers -----------------------------------------------------------------------

    def _check_class_weight(self) -> None:
        """A dict ``class_weight`` names known labels with finite weights >= 0."""
        if not isinstance(self.class_weight, dict):
            return
        unseen = [k for k in self.class_weight if k not in set(self.classes_)]
        if unseen:
            raise ValueError(
                f"class_weight names labels {unseen!r} that are not in y (whose "
                f"classes are {self.classes_.tolist()!r}); remove them or fix "
                "their spelling."
            )
        bad = {}
        for label, value in self.class_weight.items():
            try:
                ok = bool(np.isfinite(value) and value >= 0)
            except TypeError:
                ok = False
            if not ok:
                bad[label] = value
        if bad:
            raise ValueError(
                f"class_weight must map labels to finite weights >= 0; got {bad!r}. "
                "A negative weight would reward the loss for misclassifying that "
                "class."
            )

    @staticmethod
    def _safe_frame_scale(frames: np.ndarray) -> float:
        """A power of two bringing the largest training magnitude near 1, or 1."""
        peak = float(np.max(np.abs(frames))) if frames.size else 0.0
        return power_of_two_scale(peak, _SAFE_EXPONENT, frames.dtype)

    def _split(self, y_enc: np.ndarray, seed: int):
        """Rows to train on and rows held out (``None`` without a validation part)."""
        fraction = self.validation_fraction
        if fraction is None and self.early_stopping:
            # Only reached with cv=None: one held-out part chooses the epochs.
            fraction = 0.2
        rows = np.arange(len(y_enc))
        if fraction is None:
            return rows, None
        # Stratify where every class can give the validation part a sequence (as
        # skorch's ValidSplit, which this replaces so the path sees the same
        # training part).
        n_classes = len(self.classes_)
        counts = np.bincount(y_enc, minlength=n_classes)
        stratified = bool(
            counts.min() >= 2 and round(fraction * len(y_enc)) >= n_classes
        )
        splitter = StratifiedShuffleSplit if stratified else ShuffleSplit
        train, valid = next(
            splitter(n_splits=1, test_size=fraction, random_state=seed).split(
                rows, y_enc
            )
        )
        return np.sort(train), np.sort(valid)

    def _fit_path(
        self, seqs: Sequences, y_enc: np.ndarray, weight, rows: np.ndarray, seed: int
    ) -> dict:
        """The fixed path: classifiers of the standardised last-minus-first change.

        ``skip_n_inits`` MLPs (``skip_hidden`` units, ``alpha = 1 / skip_C``) whose
        probabilities are averaged, or one logistic regression (``C = skip_C``) with
        ``skip_hidden=None``. Fitted on ``rows`` only.
        """
        change = self._last_change(seqs)[rows]
        y = y_enc[rows]
        mean = change.mean(axis=0)
        std = change.std(axis=0)
        scale = 1.0 / np.where(std > 0, std, 1.0)
        features = (change - mean) * scale
        if len(np.unique(y)) < 2:
            # Tiny data whose training folds hold one class: that class's prior.
            estimators = [DummyClassifier(strategy="prior").fit(features, y)]
        elif self.skip_hidden is None:
            class_weight = None if weight is None else dict(enumerate(weight.tolist()))
            estimators = [
                LogisticRegression(
                    C=self.skip_C, max_iter=1000, class_weight=class_weight
                ).fit(features, y)
            ]
        else:
            sample_weight = None if weight is None else weight.numpy()[y]
            seeds = np.random.RandomState(seed % 2**32).randint(
                2**31 - 1, size=self.skip_n_inits
            )
            estimators = [
                MLPClassifier(
                    (self.skip_hidden,),
                    alpha=1.0 / self.skip_C,
                    max_iter=2000,
                    random_state=int(s),
                ).fit(features, y, sample_weight=sample_weight)
                for s in seeds
            ]
        return {"mean": mean, "scale": scale, "estimators": estimators}

    def _set_path(self, path: dict) -> None:
        """Keep a path fitted on every row as the fitted attributes."""
        self.skip_mean_ = path["mean"]
        self.skip_scale_ = path["scale"]
        self.skip_estimators_ = path["estimators"]
        if self.skip_hidden is None:
            (model,) = path["estimators"]
            coef, intercept = model.coef_, model.intercept_
            if coef.shape[0] == 1:
                # Binary: softmax over (0, z) is the sigmoid of z.
                coef = np.vstack([np.zeros_like(coef), coef])
                intercept = np.array([0.0, intercept[0]])
            self.skip_coef_ = coef
            self.skip_intercept_ = intercept

    def _fitted_path(self) -> dict | None:
        if not self.skip:
            return None
        return {
            "mean": self.skip_mean_,
            "scale": self.skip_scale_,
            "estimators": self.skip_estimators_,
        }

    def _path_logits(self, seqs: Sequences, path: dict) -> np.ndarray:
        """Log of the path's averaged class probabilities, float32."""
        with np.errstate(over="ignore", invalid="ignore"):
            features = (self._last_change(seqs) - path["mean"]) * path["scale"]
        _check_float32_range(features, "the path's inputs")
        proba = np.zeros((seqs.n_sequences, len(self.classes_)))
        for model in path["estimators"]:
            proba[:, model.classes_] += model.predict_proba(features)
        proba /= len(path["estimators"])
        return np.log(np.maximum(proba, _PROBA_FLOOR)).astype(np.float32)

    def _last_change(self, seqs: Sequences) -> np.ndarray:
        """Each sequence's last frame minus its first, in the internal scale."""
        frames = seqs.frames.astype(np.float64) / self._frame_scale
        ends = np.cumsum(seqs.lengths) - 1
        return frames[ends] - frames[ends - seqs.lengths + 1]

    def _validate_sequences(self, X, *, reset: bool) -> tuple[Sequences, np.dtype]:
        """Validate any accepted form; set or check ``n_features_in_``."""
        dtype = (np.float64, np.float32)
        if is_sequence_list(X) or array_ndim(X) >= 3:
            seqs = check_sequences(
                X, estimator_name=type(self).__name__, dtype=dtype, frame_ndim=1
            )
            n_features = seqs.frame_shape[0]
            if reset:
                self.n_features_in_ = n_features
                # Feature names only come with 2-D DataFrames.
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            elif n_features != self.n_features_in_:
                raise ValueError(
                    f"X has {n_features} features per frame, but "
                    f"{type(self).__name__} is expecting {self.n_features_in_} "
                    "features as input."
                )
        else:
            X2 = validate_data(self, X, dtype=dtype, reset=reset)
            seqs = Sequences("array", X2, np.ones(X2.shape[0], dtype=np.int64))
        return seqs, seqs.frames.dtype

    def _step_work(self) -> int:
        """Multiply-adds of one gate of one recurrent step over a batch."""
        width = max(len(self.input_scale_), self.hidden_size)
        return self.batch_size * self.hidden_size * (width + self.hidden_size)

    def _net_features(self, seqs: Sequences, *, fit: bool = False) -> Sequences:
        """The frame vectors the network reads (``inputs``, ``motion``), unscaled."""
        frames = seqs.frames.astype(np.float64) / getattr(self, "_frame_scale", 1.0)
        starts = np.cumsum(seqs.lengths) - seqs.lengths
        first = np.repeat(frames[starts], seqs.lengths, axis=0)
        if self.inputs == "frames":
            feats = frames
        elif self.inputs == "change":
            feats = frames - first
        else:
            feats = np.concatenate([frames - first, frames], axis=1)
        if self.motion:
            previous = np.concatenate([frames[:1], frames[:-1]], axis=0)
            previous[starts] = frames[starts]
            if fit:
                with np.errstate(over="ignore"):
                    norm = float(np.mean(np.linalg.norm(frames, axis=1)))
                self.motion_scale_ = norm if np.isfinite(norm) and norm > 0 else 1.0
            # Overflow (data far larger than the training data) becomes inf, which
            # _padded refuses with a clear error.
            with np.errstate(over="ignore", invalid="ignore"):
                moved = np.stack(
                    [
                        np.linalg.norm(frames - first, axis=1),
                        np.linalg.norm(frames - previous, axis=1),
                    ],
                    axis=1,
                )
            feats = np.concatenate([feats, np.log1p(moved / self.motion_scale_)], 1)
        return Sequences(seqs.kind, feats, seqs.lengths)

    def _fit_input_scaling(self, feats: Sequences) -> None:
        """Learn ``input_mean_`` and ``input_scale_`` from the training features."""
        values = feats.frames.astype(np.float64)
        n_inputs = values.shape[1]
        mode = self.scale_inputs
        if mode is True:
            mode = "global"
        elif mode is False:
            mode = "none"
        self.input_mean_ = np.zeros(n_inputs)
        self.input_scale_ = np.ones(n_inputs)
        if mode == "global":
            std = float(np.std(values))
            if np.isfinite(std) and std > 0:
                self.input_scale_[:] = 1.0 / std
        elif mode == "feature":
            self.input_mean_ = values.mean(axis=0)
            std = values.std(axis=0)
            # A floor keeps barely used features (e.g. a rarely active NMF part, or
            # the always-zero first frame of a change) from being blown up.
            floor = 0.1 * float(np.sqrt(np.mean(std**2)))
            std = np.maximum(std, floor if floor > 0 else 1.0)
            self.input_scale_ = 1.0 / std
            if self.motion:
                # The two motion features weigh as much as all the others together.
                self.input_scale_[-2:] *= np.sqrt(max(n_inputs - 2, 2) / 2.0)

    def _padded(self, seqs: Sequences) -> np.ndarray:
        feats = self._net_features(seqs)
        with np.errstate(over="ignore", invalid="ignore"):
            scaled = (feats.frames - self.input_mean_) * self.input_scale_
        _check_float32_range(scaled, "the network's inputs")
        return pad_sequences(Sequences(feats.kind, scaled, feats.lengths), np.float32)

    def _net_input(self, seqs: Sequences, path: dict | None) -> dict:
        # skorch passes dict entries to the module's forward as keyword arguments.
        net_input = {"X": self._padded(seqs), "lengths": seqs.lengths}
        if path is not None:
            net_input["skip"] = self._path_logits(seqs, path)
        return net_input

    def _infer(self, seqs: Sequences, *, embed: bool) -> torch.Tensor:
        """Logits or embeddings, batch by batch, on CPU."""
        module = self.net_.module_
        device = self.net_.device
        if module.training:
            # Only after a user trained net_ further: fit leaves it in eval mode.
            module.eval()
        padded = self._padded(seqs)
        path = self._fitted_path()
        skip = None if path is None else torch.from_numpy(self._path_logits(seqs, path))
        lengths = torch.as_tensor(seqs.lengths)
        outputs = []
        with torch.no_grad(), _threads_for(self._step_work(), torch.device(device)):
            for start in range(0, len(padded), self.batch_size):
                stop = start + self.batch_size
                # Trim each batch to its own longest sequence: less work, same
                # result (packing ignores padding anyway).
                max_len = int(lengths[start:stop].max())
                xb = torch.from_numpy(padded[start:stop, :max_len]).to(device)
                lb = lengths[start:stop]
                if embed:
                    out = module.embed(xb, lb)
                elif skip is None:
                    out = module(xb, lb)
                else:
                    out = module(xb, lb, skip[start:stop].to(device))
                outputs.append(out.cpu())
        return torch.cat(outputs, dim=0)
