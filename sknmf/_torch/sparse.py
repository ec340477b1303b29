"""A CSR matrix on tensors with the few products NMF needs.

torch's sparse CSR tensors multiply a dense matrix well, but transposing them or
reading ``W @ H`` only at the nonzeros of ``X`` is awkward; this wrapper keeps
``X`` and ``X.T`` side by side, so each iteration only swaps values.
"""

from __future__ import annotations

import warnings

import torch


class CSRMatrix:
    """Nonnegative sparse matrix ``X`` with its transpose kept alongside.

    ``X @ B`` and ``X.T @ A`` both run as CSR products (a transposed CSR view
    costs torch about forty times more than a CSR of the transpose). The arrays
    that only some solvers need, the row of every nonzero (``W @ H`` read at the
    nonzeros) and the permutation between the two orders (new values for the
    same pattern), are built on first use, so the Frobenius solvers hold X, its
    transpose and nothing else. Indices stay in the dtype they come in (int32
    from scipy), which halves them against torch's default int64.

    Parameters
    ----------
    crow, col, values : torch.Tensor
        CSR arrays (``indptr``, ``indices``, ``data``) on one device; ``crow``
        and ``col`` share one integer dtype, column indices sorted within rows.
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
    >>> X.tmatmul(torch.eye(2))
    tensor([[0., 3.],
            [2., 0.]])
    """

    def __init__(self, crow, col, values, shape, *, _structure=None, _t_values=None):
        self.crow = crow
        self.col = col
        self.values = values
        self.shape = tuple(int(s) for s in shape)
        # Shared by every matrix of this pattern (see with_values): the
        # transpose's crow and col, and the lazily built row and permutation.
        self._s = {} if _structure is None else _structure
        self._t_values = _t_values

    @classmethod
    def from_dense(cls, X: torch.Tensor) -> CSRMatrix:
        """Build from a dense tensor (mostly for tests)."""
        nz = X != 0
        counts = nz.sum(1)
        crow = torch.zeros(X.shape[0] + 1, dtype=torch.int64, device=X.device)
        crow[1:] = torch.cumsum(counts, 0)
        col = nz.nonzero()[:, 1]
        return cls(crow, col, X[nz], X.shape)

    @classmethod
    def from_scipy(cls, X, device="cpu") -> CSRMatrix:
        """Wrap a scipy CSR matrix with sorted indices, without copying it on CPU.

        ``X`` must not be modified while the result is in use; callers that
        cannot promise it pass a copy.

        Parameters
        ----------
        X : scipy.sparse CSR matrix or array
            Canonical format (sorted indices, no duplicates).
        device : str or torch.device, default="cpu"

        Returns
        -------
        matrix : CSRMatrix
        """

        out = cls(
            torch.as_tensor(X.indptr, device=device),
            torch.as_tensor(X.indices, device=device),
            torch.as_tensor(X.data, device=device),
            X.shape,
        )
        # The transpose is built when a product first needs it (transform never
        # does), by scipy: one pass, no temporaries beyond its own arrays.
        out._s["scipy"], out._s["values"] = X, out.values
        return out

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

    @property
    def row(self) -> torch.Tensor:
        """Row index of every nonzero (int64, built on first use)."""
        if "row" not in self._s:
            counts = (self.crow[1:] - self.crow[:-1]).to(torch.int64)
            self._s["row"] = torch.repeat_interleave(
                torch.arange(self.shape[0], device=self.device), counts
            )
        return self._s["row"]

    def _perm(self) -> torch.Tensor:
        """Positions, in X's order, of the nonzeros of ``X.T`` in its own order."""
        if "perm" not in self._s:
            # Rows ascend within a column of X's order, so a stable sort by
            # column gives the transpose's CSR order.
            self._s["perm"] = torch.argsort(self.col, stable=True)
        return self._s["perm"]

    def _transpose_structure(self):
        if "t_crow" not in self._s and "scipy" in self._s:
            XT = self._s["scipy"].T.tocsr()
            device = self.device
            self._s["t_crow"] = torch.as_tensor(XT.indptr, device=device)
            self._s["t_col"] = torch.as_tensor(XT.indices, device=device)
            self._s["t_values"] = torch.as_tensor(XT.data, device=device)
        if "t_crow" not in self._s:
            perm = self._perm()
            t_counts = torch.bincount(self.col.to(torch.int64), minlength=self.shape[1])
            t_crow = torch.zeros(
                self.shape[1] + 1, dtype=self.crow.dtype, device=self.device
            )
            t_crow[1:] = torch.cumsum(t_counts, 0)
            self._s["t_crow"] = t_crow
            self._s["t_col"] = self.row[perm].to(self.col.dtype)
        return self._s["t_crow"], self._s["t_col"]

    def without_transpose(self) -> CSRMatrix:
        """This matrix without the arrays built for products with ``X.T``.

        Frees them (once no other reference holds them) for work that needs
        only ``X @ B``, such as computing codes with the components fixed.
        """
        keep = {k: v for k, v in self._s.items() if k in ("scipy", "values", "row")}
        return CSRMatrix(self.crow, self.col, self.values, self.shape, _structure=keep)

    def with_values(self, values: torch.Tensor) -> CSRMatrix:
        """Same sparsity pattern, new values (in this matrix's order)."""
        return CSRMatrix(self.crow, self.col, values, self.shape, _structure=self._s)

    def _tensor(self, values=None):
        vals = self.values if values is None else values
        return _csr(self.crow, self.col, vals, self.shape)

    def matmul(self, B: torch.Tensor) -> torch.Tensor:
        """``X @ B`` for a dense ``B``."""
        return self._tensor() @ B

    def tmatmul(self, A: torch.Tensor) -> torch.Tensor:
        """``X.T @ A`` for a dense ``A`` (so ``A.T @ X`` is its transpose)."""
        t_crow, t_col = self._transpose_structure()
        if self._t_values is None:
            if self.values is self._s.get("values") and "t_values" in self._s:
                self._t_values = self._s["t_values"]
            else:
                self._t_values = self.values[self._perm()]
        Xt = _csr(t_crow, t_col, self._t_values, (self.shape[1], self.shape[0]))
        return Xt @ A

    def gather_product(self, W: torch.Tensor, H: torch.Tensor) -> torch.Tensor:
        """Values of ``W @ H`` at the nonzeros of ``X``, in chunks to bound memory."""
        out = torch.empty(self.nnz, dtype=W.dtype, device=W.device)
        Ht = H.T
        row = self.row
        step = max(1, (1 << 22) // max(1, W.shape[1]))
        for start in range(0, self.nnz, step):
            sl = slice(start, start + step)
            out[sl] = (W[row[sl]] * Ht[self.col[sl]]).sum(1)
        return out

    def sum(self) -> torch.Tensor:
        return self.values.sum()

    def to_dense(self) -> torch.Tensor:
        return self._tensor().to_dense()

    def to(self, device) -> CSRMatrix:
        out = CSRMatrix(
            self.crow.to(device),
            self.col.to(device),
            self.values.to(device),
            self.shape,
            _structure={
                k: v.to(device) if torch.is_tensor(v) else v for k, v in self._s.items()
            },
        )
        if "values" in out._s:
            out._s["values"] = out.values
        if self._t_values is not None:
            out._t_values = self._t_values.to(device)
        return out

    def row_slice(self, idx: torch.Tensor) -> CSRMatrix:
        """Rows ``idx`` as a new matrix (for mini-batches)."""
        starts, ends = self.crow[idx], self.crow[idx + 1]
        counts = (ends - starts).to(torch.int64)
        crow = torch.zeros(len(idx) + 1, dtype=torch.int64, device=self.device)
        crow[1:] = torch.cumsum(counts, 0)
        offsets = torch.repeat_interleave(starts.to(torch.int64) - crow[:-1], counts)
        pos = torch.arange(int(crow[-1]), device=self.device) + offsets
        return CSRMatrix(
            crow.to(self.crow.dtype),
            self.col[pos],
            self.values[pos],
            (len(idx), self.shape[1]),
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
