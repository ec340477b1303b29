"""The benchmark data sets, all built offline and deterministically.

Each builder returns a :class:`Dataset`: a nonnegative float64 matrix (dense
``ndarray`` or ``scipy.sparse`` CSR) and the rank to fit. Three sizes exist:
``full`` (the suite of issue 5), ``quick`` (the same kinds of data, small enough
for ``--quick`` to finish in minutes) and ``tiny`` (seconds, for the test that
keeps the suite from rotting).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from numpy.lib.stride_tricks import sliding_window_view


@dataclass
class Dataset:
    name: str
    X: np.ndarray | sp.csr_matrix
    n_components: int
    description: str

    @property
    def nbytes(self) -> int:
        """Bytes of X as float64 (data, plus indices for sparse)."""
        return matrix_nbytes(self.X)


def matrix_nbytes(X) -> int:
    if sp.issparse(X):
        return int(X.data.nbytes + X.indices.nbytes + X.indptr.nbytes)
    return int(X.nbytes)


def photo_patches(stride: int = 4, patch: int = 8, n_components: int = 32) -> Dataset:
    """``patch x patch x 3`` patches of both ``load_sample_images()`` photos."""
    from sklearn.datasets import load_sample_images

    rows = []
    for img in load_sample_images().images:
        win = sliding_window_view(img, (patch, patch, 3))[::stride, ::stride, 0]
        rows.append(win.reshape(-1, patch * patch * 3))
    X = np.concatenate(rows).astype(np.float64) / 255.0
    return Dataset(
        "photo",
        np.ascontiguousarray(X),
        n_components,
        f"{patch}x{patch}x3 patches of the 2 sample photos, stride {stride}",
    )


def synthetic(
    n_samples: int = 20_000,
    n_features: int = 1_000,
    rank: int = 50,
    noise: float = 0.1,
    density: float = 0.5,
    seed: int = 0,
) -> Dataset:
    """A planted rank-``rank`` nonnegative product plus nonnegative noise.

    The planted factors are uniform with half their entries zeroed (parts-based,
    as NMF factors are). Dense uniform factors would make X little more than its
    mean plus noise: scikit-learn's ``cd`` then meets its default ``tol`` about
    three times above the best rank-``rank`` error, and "its converged error +1%"
    would say nothing about the solvers.
    """
    rng = np.random.default_rng(seed)
    W = rng.random((n_samples, rank)) * (rng.random((n_samples, rank)) < density)
    H = rng.random((rank, n_features)) * (rng.random((rank, n_features)) < density)
    X = W @ H
    # Half-normal noise keeps X nonnegative; its scale is relative to the
    # signal so the problem has the same conditioning at every size.
    X += noise * X.std() * np.abs(rng.standard_normal(X.shape))
    return Dataset(
        "synthetic",
        X,
        rank,
        f"{n_samples}x{n_features} rank-{rank} product (factors {density:g} dense)"
        f" + {noise:g}*std half-normal noise",
    )


def digits(n_components: int = 16) -> Dataset:
    """``load_digits().data`` (1797 x 64)."""
    from sklearn.datasets import load_digits

    X = load_digits().data.astype(np.float64)
    return Dataset(
        "digits", np.ascontiguousarray(X), n_components, "load_digits, 1797x64"
    )


def sparse_tfidf(
    n_samples: int = 20_000,
    n_features: int = 5_000,
    density: float = 0.01,
    n_components: int = 20,
    seed: int = 0,
) -> Dataset:
    """A TF-IDF matrix of documents drawn from ``n_components`` topics.

    Each document draws about ``density * n_features`` words from its own topic
    mixture (mostly one topic; each topic concentrated on few words), so the
    counts have the low-rank structure NMF looks for; then idf weights and
    l2-normalised rows, as ``TfidfTransformer`` does. Short documents are still
    mostly noise to a rank-``n_components`` model: scikit-learn's ``cd`` meets
    its ``tol`` within a few percent of the initial error, so on this data set
    the time to target mostly measures initialisation and the sparse path's
    per-iteration cost.
    """
    rng = np.random.default_rng(seed)
    k = n_components
    doc_topic = rng.gamma(0.1, size=(n_samples, k)) + 1e-12
    doc_topic /= doc_topic.sum(1, keepdims=True)
    topic_word = rng.gamma(0.05, size=(k, n_features)) + 1e-12
    topic_word /= topic_word.sum(1, keepdims=True)
    n_words = max(1, int(round(density * n_features)))
    docs = np.repeat(np.arange(n_samples), n_words)
    # Inverse-CDF draws: a topic per token from its document, a word per token
    # from its topic.
    cum = np.cumsum(doc_topic, axis=1)
    topics = (rng.random(docs.size)[:, None] > cum[docs]).sum(1).clip(max=k - 1)
    words = np.empty(docs.size, dtype=np.int64)
    cum_words = np.cumsum(topic_word, axis=1)
    for t in range(k):
        sel = topics == t
        draws = np.searchsorted(cum_words[t], rng.random(int(sel.sum())))
        words[sel] = draws.clip(max=n_features - 1)
    X = sp.csr_matrix(
        (np.ones(docs.size), (docs, words)), shape=(n_samples, n_features)
    )
    X.sum_duplicates()
    df = np.bincount(X.indices, minlength=n_features)
    idf = np.log((1.0 + n_samples) / (1.0 + df)) + 1.0
    X = sp.csr_matrix(X @ sp.diags(idf))
    norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    X = sp.csr_matrix(sp.diags(1.0 / norms) @ X)
    X.sort_indices()
    return Dataset(
        "sparse",
        X,
        n_components,
        f"{n_samples}x{n_features} TF-IDF of topic-model documents, "
        f"density {X.nnz / (n_samples * n_features):.3g}",
    )


def load(size: str = "full") -> list[Dataset]:
    """All data sets at one ``size``: ``"full"``, ``"quick"`` or ``"tiny"``."""
    if size == "full":
        return [photo_patches(), synthetic(), digits(), sparse_tfidf()]
    if size == "quick":
        return [
            photo_patches(stride=16, n_components=8),
            synthetic(2_000, 300, 10),
            digits(),
            sparse_tfidf(5_000, 2_000, 0.01, 10),
        ]
    if size == "tiny":
        return [
            photo_patches(stride=32, n_components=4),
            synthetic(300, 40, 4),
            sparse_tfidf(300, 200, 0.05, 3),
        ]
    raise ValueError(f"size must be 'full', 'quick' or 'tiny', got {size!r}")
