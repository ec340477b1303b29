"""Initial factors of a layer whose target is spread over row chunks.

``init="random"`` draws the weights on the client and each chunk's codes from
its own seed; the NNDSVD variants run on a randomized SVD of the chunked
target (Halko, Martinsson & Tropp 2011): a sketch ``Y = T Ω`` kept on the
workers, orthonormalised from its small Gram matrix (Cholesky QR twice, by
eigenvalues so a rank-deficient sketch is fine), power iterations through the
summable ``Tᵀ Q``, then the SVD of the small ``Qᵀ T`` on the client. Only
``r × r`` and ``r × n_features`` tensors cross the network; the seed of
``random_state`` fixes everything, so the same seed gives the same model.
Boutsidis & Gallopoulos' NNDSVD then needs, per component, the norms of the
positive and negative parts of a left singular vector: sums over chunks too.
``init="custom"`` takes the user's factors.
"""

from __future__ import annotations

import numpy as np
import torch

from .._torch.init import _POWER_ITERATIONS, resolve_init
from .._torch.sparse import CSRMatrix, matmul
from . import _chunks
from ._cluster import tree_sum

_OVERSAMPLES = 10


# ------------------------------------------------------------ worker side
def _seeded(seed: int, l: int, i: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + 7919 * l + i)


def _target(x, chunk, l):
    return _chunks.target_of(x, chunk or {"W": []}, l)


def _ref(T) -> torch.Tensor:
    return T.values if isinstance(T, CSRMatrix) else T


def random_codes(x, chunk, l, k, avg, seed, i):
    T = _target(x, chunk, l)
    ref = _ref(T)
    g = _seeded(seed, l, i)
    W = avg * torch.randn((T.shape[0], k), generator=g, dtype=ref.dtype).abs()
    return _with_codes(chunk, l, W.to(ref.device))


def _with_codes(chunk, l, W):
    out = {k: v for k, v in (chunk or {"W": []}).items() if k not in ("Y", "out")}
    Ws = list(out.get("W", []))[:l]
    out["W"] = [*Ws, W]
    return out


def sketch(x, chunk, l, Z):
    """``Y = T Z`` kept on the chunk; its Gram matrix out."""
    T = _target(x, chunk, l)
    Y = matmul(T, Z.to(_ref(T).device, _ref(T).dtype))
    out = dict(chunk or {"W": []})
    out["Y"] = Y
    out["out"] = (Y.T @ Y).double().cpu()
    return out


def orthonormalize(x, chunk, R_inv):
    out = dict(chunk)
    Y = chunk["Y"] @ R_inv.to(chunk["Y"].device, chunk["Y"].dtype)
    out["Y"] = Y
    out["out"] = (Y.T @ Y).double().cpu()
    return out


def project_t(x, chunk, l):
    """``Tᵀ Q`` of the chunk (summable, ``n_features × r``)."""
    out = dict(chunk)
    T = _target(x, chunk, l)
    Y = chunk["Y"]
    TtY = T.tmatmul(Y) if isinstance(T, CSRMatrix) else T.T @ Y
    out["out"] = TtY.double().cpu()
    return out


def left_vectors(x, chunk, Ub):
    """``U = Q Ub`` on the chunk; squared norms of its parts' columns out."""
    out = dict(chunk)
    U = chunk["Y"] @ Ub.to(chunk["Y"].device, chunk["Y"].dtype)
    out["Y"] = U
    pos, neg = U.clamp_min(0), (-U).clamp_min(0)
    out["out"] = {
        "pos": pos.square().sum(0).double().cpu(),
        "neg": neg.square().sum(0).double().cpu(),
    }
    return out


def nndsvd_codes(x, chunk, l, S0, lbd, use_pos, norms, eps):
    """Codes of NNDSVD from the chunk's left singular vectors (row-local)."""
    U = chunk["Y"]
    k = U.shape[1]
    W = torch.zeros_like(U)
    W[:, 0] = S0.sqrt().to(U.dtype) * U[:, 0].abs()
    for j in range(1, k):
        part = U[:, j].clamp_min(0) if use_pos[j] else (-U[:, j]).clamp_min(0)
        W[:, j] = torch.nan_to_num(part / norms[j] * lbd[j])
    W[W < eps] = 0
    return _with_codes(chunk, l, W)


def fill_codes(x, chunk, l, avg, mode, seed, i):
    """NNDSVDa: zeros become the mean; NNDSVDar: small random values."""
    out = dict(chunk)
    W = chunk["W"][l].clone()
    zero = W == 0
    if mode == "nndsvda":
        W[zero] = avg
    else:
        g = _seeded(seed, l, i)
        draws = torch.randn((int(zero.sum()),), generator=g, dtype=W.dtype)
        W[zero] = (avg * draws / 100).abs().to(W.device)
    out["W"] = [*chunk["W"][:l], W]
    return out


# ------------------------------------------------------------ client side
def _inverse_root(G: torch.Tensor) -> torch.Tensor:
    """``R⁻¹`` with ``(Y R⁻¹)ᵀ (Y R⁻¹) = I`` on the sketch's range (eigenvalue
    form: directions below ``eps`` of the largest are dropped)."""
    evals, evecs = torch.linalg.eigh(G)
    cutoff = evals.max().clamp_min(0.0) * G.shape[0] * 1e-13
    inv = torch.where(evals > cutoff, evals.clamp_min(1e-300).rsqrt(), 0.0)
    return evecs * inv


def _orthonormal(rows, l):
    """Cholesky QR twice of the chunks' sketches (the ``Y`` of every chunk)."""
    cluster = rows.cluster
    for _ in range(2):
        G = tree_sum(cluster, rows.codes).result()
        R_inv = _inverse_root(G)
        rows.codes = rows.map(orthonormalize, R_inv)


def randomized_left(rows, l: int, k: int, gen: torch.Generator, n_features: int):
    """Leading ``k`` singular values and right vectors of the chunked target; the
    left vectors stay on the chunks (their ``Y``)."""
    cluster = rows.cluster
    n = rows.shape[0]
    r = min(k + _OVERSAMPLES, n, n_features)
    dtype = torch.float64 if rows.dtype == np.float64 else torch.float32
    Omega = torch.randn((n_features, r), generator=gen, dtype=dtype)
    rows.codes = rows.map(sketch, l, Omega)
    _orthonormal(rows, l)
    for _ in range(_POWER_ITERATIONS):
        rows.codes = rows.map(project_t, l)
        Z = tree_sum(cluster, rows.codes).result()
        Z, _ = torch.linalg.qr(Z)
        rows.codes = rows.map(sketch, l, Z.to(dtype))
        _orthonormal(rows, l)
    rows.codes = rows.map(project_t, l)
    Bt = tree_sum(cluster, rows.codes).result()  # Tᵀ Q, n_features x r
    Ub, S, Vt = torch.linalg.svd(Bt.T, full_matrices=False)
    return Ub[:, :k], S[:k], Vt[:k]


def initialize_layer(rows, l, k, m, init, gen, seed) -> torch.Tensor:
    """Layer ``l``'s initial weights (its target has ``m`` columns); the chunks
    get its initial codes."""
    cluster = rows.cluster
    info = rows.total(_chunks.shape_info, l)
    n = info["n"]
    mean = info["sum"] / (n * m)
    dtype = torch.float64 if rows.dtype == np.float64 else torch.float32
    init = resolve_init(init, k, n, m)
    if init == "random":
        avg = float(np.sqrt(mean / k))
        H = avg * torch.randn((k, m), generator=gen, dtype=dtype).abs()
        rows.codes = [
            cluster.submit(random_codes, x, c, l, k, avg, seed, i)
            for i, (x, c) in enumerate(zip(rows.xs, rows.codes))
        ]
        return H
    Ub, S, Vt = randomized_left(rows, l, k, gen, m)
    rows.codes = rows.map(left_vectors, Ub)
    norms = tree_sum(cluster, rows.codes).result()
    S = S.double()
    Vt = Vt.double()
    H = torch.zeros_like(Vt)
    H[0] = S[0].sqrt() * Vt[0].abs()
    use_pos, lbd, unorm = [True], [0.0], [1.0]
    for j in range(1, k):
        y = Vt[j]
        y_p, y_n = y.clamp_min(0), (-y).clamp_min(0)
        x_p_nrm, x_n_nrm = norms["pos"][j].sqrt(), norms["neg"][j].sqrt()
        y_p_nrm, y_n_nrm = y_p.norm(), y_n.norm()
        m_p, m_n = x_p_nrm * y_p_nrm, x_n_nrm * y_n_nrm
        pos = bool(m_p > m_n)
        v, x_nrm, sigma = (
            (y_p / y_p_nrm, x_p_nrm, m_p) if pos else (y_n / y_n_nrm, x_n_nrm, m_n)
        )
        lam = (S[j] * sigma).sqrt()
        H[j] = torch.nan_to_num(v * lam)
        use_pos.append(pos)
        lbd.append(float(lam))
        unorm.append(float(x_nrm))
    eps = 1e-6
    H[H < eps] = 0
    rows.codes = [
        cluster.submit(nndsvd_codes, x, c, l, S[0], lbd, use_pos, unorm, eps)
        for i, (x, c) in enumerate(zip(rows.xs, rows.codes))
    ]
    H = H.to(dtype)
    if init in ("nndsvda", "nndsvdar"):
        avg = mean
        if init == "nndsvda":
            H[H == 0] = avg
        else:
            zh = H == 0
            draws = torch.randn((int(zh.sum()),), generator=gen, dtype=dtype)
            H[zh] = (avg * draws / 100).abs()
        rows.codes = [
            cluster.submit(fill_codes, x, c, l, avg, init, seed, i)
            for i, (x, c) in enumerate(zip(rows.xs, rows.codes))
        ]
    return H


def custom_codes(W, H, X, ranks, rows, device: str) -> list:
    """``init="custom"``: the given weights; the given codes sent to the chunks.

    ``W`` may hold numpy or Dask arrays (the latter stay on the cluster).
    """
    import dask.array as da
    from dask import delayed

    if H is None or W is None:
        raise ValueError("init='custom' needs both W and H passed to fit.")
    L = len(ranks)
    H_list = list(H) if isinstance(H, (list, tuple)) else [H]
    W_list = list(W) if isinstance(W, (list, tuple)) else [W]
    if len(W_list) != L or len(H_list) != L:
        raise ValueError(
            f"init='custom' with {L} layer(s) needs {L} W and {L} H arrays, got "
            f"{len(W_list)} and {len(H_list)}."
        )
    n, p = X.shape
    widths = [p, *ranks[:-1]]
    Hs = []
    for l, A in enumerate(H_list):
        A = np.asarray(A)
        name = f"H[{l}]" if L > 1 else "H"
        if A.shape != (ranks[l], widths[l]):
            raise ValueError(
                f"Array passed as {name} for init='custom' has shape {A.shape}; "
                f"expected {(ranks[l], widths[l])}."
            )
        if not np.all(np.isfinite(A)) or np.any(A < 0) or np.max(A, initial=0) == 0:
            raise ValueError(
                f"Array passed as {name} for init='custom' must be finite, "
                "nonnegative and not all zeros."
            )
        Hs.append(torch.tensor(np.array(A, dtype=X.dtype)))
    blocks = []
    for l, A in enumerate(W_list):
        name = f"W[{l}]" if L > 1 else "W"
        if A.shape != (n, ranks[l]):
            raise ValueError(
                f"Array passed as {name} for init='custom' has shape {A.shape}; "
                f"expected {(n, ranks[l])}."
            )
        if not isinstance(A, da.Array):
            A = np.asarray(A)
            if not np.all(np.isfinite(A)) or np.any(A < 0):
                raise ValueError(
                    f"Array passed as {name} for init='custom' must be finite "
                    "and nonnegative."
                )
        A = da.asarray(A).rechunk((X.chunks[0], (ranks[l],)))
        blocks.append(A.to_delayed().ravel())
    tasks = [
        delayed(_chunks.set_codes, pure=True)(list(parts), X.dtype.name, device)
        for parts in zip(*blocks)
    ]
    rows.codes = rows.cluster.compute(tasks)
    return Hs
