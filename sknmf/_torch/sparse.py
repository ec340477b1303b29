"""A CSR matrix on tensors with the few products NMF needs.

torch's sparse CSR tensors multiply a dense matrix well, but transposing them or
reading ``W @ H`` only at the nonzeros of ``X`` is awkward; this wrapper keeps the
structure of ``X`` and of ``X.T`` once, so each iteration only swaps values.
"""

from __future__ import annotations

import warnings

import torch


class CSRMatrix:
    """Nonnegative sparse matrix ``X`` with its transpose structure precomputed.

    Parameters
    ----------
    crow, col, values : torch.Tensor
        CSR arrays (``indptr``, ``indices``, ``data``) on one device.
    shape : tuple of int
        ``(n_rows, n_cols)``.

    Examples
    --------
    >>> import torch
    >>> from sknmf._torch.sparse import CSRMatrix
    >>> X = CSRMatrix.from_dense(torch.tensor([[0.0, 2.0], [3.0, 0.0]]))
    >>> X.to_dense()
    tensor([[0., 2.],
            [3., 0.]])
    """

    def __init__(self, crow, col, values, shape, *, _transpose=None):
        self.crow = crow
        self.col = col
        self.values = values
        self.shape = tuple(int(s) for s in shape)
        counts = crow[1:] - crow[:-1]
        self.row = torch.repeat_interleave(
            torch.arange(self.shape[0], device=crow.device), counts
        )
        if _transpose is None:
            # Order of the nonzeros of X.T (CSR of the transpose) in X's order.
            perm = torch.argsort(self.col * self.shape[0] + self.row, stable=True)
            t_counts = torch.bincount(self.col, minlength=self.shape[1])
            t_crow = torch.zeros(
                self.shape[1] + 1, dtype=crow.dtype, device=crow.device
            )
            t_crow[1:] = torch.cumsum(t_counts, 0)
            _transpose = (t_crow, self.row[perm], perm)
        self._t = _transpose

    @classmethod
    def from_dense(cls, X: torch.Tensor) -> CSRMatrix:
        """Build from a dense tensor (mostly for tests)."""
        nz = X != 0
        counts = nz.sum(1)
        crow = torch.zeros(X.shape[0] + 1, dtype=torch.int64, device=X.device)
        crow[1:] = torch.cumsum(counts, 0)
        col = nz.nonzero()[:, 1]
        return cls(crow, col, X[nz], X.shape)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dtype(self):
        return self.values.dtype

    @property
    def device(self):
        return self.values.device

    @property
    def nnz(self) -> int:
        return int(self.values.shape[0])

    def with_values(self, values: torch.Tensor) -> CSRMatrix:
        """Same sparsity pattern, new values (in this matrix's order)."""
        return CSRMatrix(self.crow, self.col, values, self.shape, _transpose=self._t)

    def _tensor(self, values=None):
        vals = self.values if values is None else values
        return _csr(self.crow, self.col, vals, self.shape)

    def matmul(self, B: torch.Tensor) -> torch.Tensor:
        """``X @ B`` for a dense ``B``."""
        return self._tensor() @ B

    def tmatmul(self, A: torch.Tensor) -> torch.Tensor:
        """``X.T @ A`` for a dense ``A`` (so ``A.T @ X`` is its transpose)."""
        t_crow, t_col, perm = self._t
        Xt = _csr(t_crow, t_col, self.values[perm], (self.shape[1], self.shape[0]))
        return Xt @ A

    def gather_product(self, W: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        """Values of ``W @ H`` at the nonzeros of ``X``, in chunks to bound memory."""
        out = torch.empty(self.nnz, dtype=W.dtype, device=W.device)
        Ht = H.T
        step = max(1, (1 << 22) // max(1, W.shape[1]))
        for start in range(0, self.nnz, step):
            sl = slice(start, start + step)
            out[sl] = (W[self.row[sl]] * Ht[self.col[sl]]).sum(1)
        return out

    def sum(self) -> torch.Tensor:
        return self.values.sum()

    def to_dense(self) -> torch.Tensor:
        return self._tensor().to_dense()

    def to(self, device) -> CSRMatrix:
        return CSRMatrix(
            self.crow.to(device),
            self.col.to(device),
            self.values.to(device),
            self.shape,
            _transpose=tuple(t.to(device) for t in self._t),
        )

    def row_slice(self, idx: torch.Tensor) -> CSRMatrix:
        """Rows ``idx`` as a new matrix (for mini-batches)."""
        starts, ends = self.crow[idx], self.crow[idx + 1]
        counts = ends - starts
        crow = torch.zeros(len(idx) + 1, dtype=self.crow.dtype, device=self.device)
        crow[1:] = torch.cumsum(counts, 0)
        offsets = torch.repeat_interleave(starts - crow[:-1], counts)
        pos = torch.arange(int(crow[-1]), device=self.device) + offsets
        return CSRMatrix(
            crow, self.col[pos], self.values[pos], (len(idx), self.shape[1])
        )


def _csr(crow, col, values, shape):
    # The structure was built (and checked) once by us; torch's "beta" notice for
    # CSR tensors says nothing actionable to our users.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(
            crow, col, values, shape, dtype=values.dtype, check_invariants=False
        )


def matmul(X, B: torch.Tensor) -> torch.Tensor:
    """``X @ B`` for a dense tensor or a :class:`CSRMatrix` ``X``."""
    return X.matmul(B) if isinstance(X, CSRMatrix) else X @ B


def tmatmul(A: torch.Tensor, X) -> torch.Tensor:
    """``A.T @ X`` for a dense tensor or a :class:`CSRMatrix` ``X``."""
    return X.tmatmul(A).T if isinstance(X, CSRMatrix) else A.T @ X
