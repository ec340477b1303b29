"""Scale-out on Dask (DESIGN.md §8): fit and transform Dask arrays on a cluster.

:class:`~sknmf.DeepNMF` calls into this package when ``X`` is a
``dask.array.Array``: :func:`fit` runs the solver protocol's iteration over
the array's row chunks on the cluster of the current ``distributed.Client``
(Dask's local scheduler without one), :func:`transform` and
:func:`inverse_transform` return lazy Dask arrays. ``dask`` is imported only
here, and only when a Dask array comes in.

- ``_chunks``: the tasks that run on the workers (a chunk's data and codes);
- ``_cluster``: the current client, or this process; the tree reduction;
- ``_fit``: the skorch loop over distributed iterations, and the fit;
- ``_init``: random and NNDSVD starts from a randomized SVD of the chunks;
- ``_encode``: lazy ``transform`` and ``inverse_transform``.
"""

from __future__ import annotations

import sys


def is_dask_array(X) -> bool:
    """Whether ``X`` is a ``dask.array.Array`` (without importing dask).

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf.distributed import is_dask_array
    >>> is_dask_array(np.ones((2, 2)))
    False
    """
    da = sys.modules.get("dask.array")
    return da is not None and isinstance(X, da.Array)


def fit(est, X, W=None, H=None):
    """Fit ``est`` (a :class:`~sknmf.DeepNMF`) on the Dask array ``X``.

    ``DeepNMF.fit`` calls this for a Dask ``X``; it returns the validated array.
    Without a ``distributed.Client`` the chunks run on Dask's local scheduler.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from sknmf import DeepNMF
    >>> from sknmf.distributed import fit, inverse_transform, score, transform
    >>> X = da.from_array(np.random.RandomState(0).rand(40, 6), chunks=(10, 6))
    >>> model = DeepNMF(2, solver="mu", max_iter=20, random_state=0)
    >>> X = fit(model, X)
    >>> model.components_.shape
    (2, 6)
    """
    from ._fit import fit as _fit

    return _fit(est, X, W, H)


def transform(est, X):
    """Lazy codes of the Dask array ``X`` by the fitted ``est``.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from sknmf import DeepNMF
    >>> from sknmf.distributed import fit, inverse_transform, score, transform
    >>> X = da.from_array(np.random.RandomState(0).rand(40, 6), chunks=(10, 6))
    >>> model = DeepNMF(2, max_iter=200, random_state=0).fit(X.compute())
    >>> codes = transform(model, X)
    >>> type(codes).__name__, codes.shape
    ('Array', (40, 2))
    """
    from ._encode import transform as _transform

    return _transform(est, X)


def score(est, X) -> float:
    """``est.score`` of the Dask array ``X`` (computed on the cluster).

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from sknmf import DeepNMF
    >>> from sknmf.distributed import fit, inverse_transform, score, transform
    >>> X = da.from_array(np.random.RandomState(0).rand(40, 6), chunks=(10, 6))
    >>> model = DeepNMF(2, max_iter=20, tol=0, random_state=0).fit(X.compute())
    >>> bool(np.isclose(score(model, X), model.score(X.compute())))
    True
    """
    from ._encode import score as _score

    return _score(est, X)


def inverse_transform(est, X):
    """Lazy ``X @ est.components_`` of Dask codes ``X``.

    Examples
    --------
    >>> import numpy as np
    >>> import dask.array as da
    >>> from sknmf import DeepNMF
    >>> from sknmf.distributed import fit, inverse_transform, score, transform
    >>> X = da.from_array(np.random.RandomState(0).rand(40, 6), chunks=(10, 6))
    >>> model = DeepNMF(2, max_iter=200, random_state=0).fit(X.compute())
    >>> inverse_transform(model, transform(model, X)).shape
    (40, 6)
    """
    from ._encode import inverse_transform as _inverse

    return _inverse(est, X)


__all__ = ["fit", "inverse_transform", "is_dask_array", "score", "transform"]
