"""Custom factors, codes and the tensor view of X (decomposition/_validation.py)."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from sknmf.decomposition._validation import (
    check_codes,
    check_custom_factors,
    to_tensor,
)


def test_dense_input_is_shared_not_copied():
    X = np.random.RandomState(0).rand(5, 3)
    T = to_tensor(X, "cpu")
    assert T.data_ptr() == X.ctypes.data


def test_unsorted_csr_is_canonicalised_without_touching_the_callers_arrays():
    X = sp.csr_matrix(
        (np.array([1.0, 2.0, 3.0]), np.array([2, 0, 2]), np.array([0, 3])), (1, 3)
    )
    before = (X.indices.copy(), X.data.copy())
    T = to_tensor(X, "cpu")
    np.testing.assert_array_equal(X.indices, before[0])
    np.testing.assert_array_equal(X.data, before[1])
    dense = torch.zeros(1, 3, dtype=torch.float64)
    dense[0] = torch.as_tensor([2.0, 0.0, 4.0])
    assert torch.equal(T.matmul(torch.eye(3, dtype=torch.float64)), dense)


def test_codes_shape_checked_and_cast():
    assert check_codes([[1, 2]], 2).dtype == np.float64
    with pytest.raises(ValueError, match=r"shape \(n_samples, 3\)"):
        check_codes(np.ones((2, 2)), 3)


def test_custom_factors():
    X = np.ones((4, 3))
    Ws, Hs = check_custom_factors(np.ones((4, 2)), np.ones((2, 3)), X, (2,), "cpu")
    assert Ws[0].dtype == Hs[0].dtype == torch.float64
    with pytest.raises(TypeError, match="same dtype as X"):
        check_custom_factors(
            np.ones((4, 2)), np.ones((2, 3), np.float32), X, (2,), "cpu"
        )
    with pytest.raises(ValueError, match="needs both W and H"):
        check_custom_factors(None, np.ones((2, 3)), X, (2,), "cpu")
    # partial_fit: H alone is enough, zeros stand in for W.
    Ws, _ = check_custom_factors(None, np.ones((2, 3)), X, (2,), "cpu", online=True)
    assert torch.count_nonzero(Ws[0]) == 0
    with pytest.raises(ValueError, match=r"wrong first dimension .*Expected 2"):
        check_custom_factors(np.ones((4, 2)), np.ones((3, 3)), X, (2,), "cpu")
    with pytest.raises(ValueError, match=r"Negative values .*\(input W\)"):
        check_custom_factors(-np.ones((4, 2)), np.ones((2, 3)), X, (2,), "cpu")
    with pytest.raises(ValueError, match="full of zeros"):
        check_custom_factors(np.zeros((4, 2)), np.ones((2, 3)), X, (2,), "cpu")
    with pytest.raises(ValueError, match="2 layer"):
        check_custom_factors(np.ones((4, 2)), np.ones((2, 3)), X, (2, 1), "cpu")


def test_codes_beyond_the_dtype_are_a_clear_error():
    from sknmf.decomposition._validation import unscale_codes

    W = np.full((2, 2), 4.0, dtype=np.float32)
    assert unscale_codes(W, 2.0**100).dtype == np.float32
    with pytest.raises(ValueError, match="overflow float32.*float64"):
        unscale_codes(W, 2.0**127)
