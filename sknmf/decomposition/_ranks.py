"""The one check of a deep model's ranks (estimator, image codec and CLI share it)."""

from __future__ import annotations

import numbers


def check_ranks(value, name: str = "n_components", *, max_rank=None, max_layers=None):
    """Ranks ``(r1, ..., rL)`` of ``value``: an int or a non-increasing sequence.

    Parameters
    ----------
    value : int or sequence of int
        One rank (classic NMF) or one per layer, non-increasing.
    name : str, default="n_components"
        The parameter's name, for the error messages.
    max_rank : int, default=None
        Largest allowed rank.
    max_layers : int, default=None
        Largest allowed number of layers.

    Returns
    -------
    ranks : tuple of int

    Raises
    ------
    TypeError
        ``value`` is neither an int nor a sequence.
    ValueError
        A rank is not a positive integer (or above ``max_rank``), the sequence
        is empty (or longer than ``max_layers``) or increases.

    Examples
    --------
    >>> from sknmf.decomposition import check_ranks
    >>> check_ranks(32), check_ranks([64, 32, 16])
    ((32,), (64, 32, 16))
    >>> check_ranks((16, 32))
    Traceback (most recent call last):
    ...
    ValueError: n_components=(16, 32) increases; the ranks of the layers must be non-increasing, e.g. (64, 32, 16).
    """  # noqa: E501
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        ranks = (value,)
    elif isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}.")
    else:
        ranks = tuple(value)
        if len(ranks) == 0:
            raise ValueError(f"{name} is an empty sequence; give >= 1 rank.")
    for r in ranks:
        if not isinstance(r, numbers.Integral) or isinstance(r, bool) or r < 1:
            raise ValueError(f"{name} must hold positive integers, got {value!r}.")
        if max_rank is not None and r > max_rank:
            raise ValueError(
                f"{name} must hold ranks of at most {max_rank}, got {value!r}."
            )
    if max_layers is not None and len(ranks) > max_layers:
        raise ValueError(f"{name} must have 1 to {max_layers} layers; got {value!r}.")
    ranks = tuple(int(r) for r in ranks)
    if any(b > a for a, b in zip(ranks, ranks[1:])):
        raise ValueError(
            f"{name}={value!r} increases; the ranks of the layers must be "
            "non-increasing, e.g. (64, 32, 16)."
        )
    return ranks
