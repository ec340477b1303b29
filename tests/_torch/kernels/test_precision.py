"""The product-precision knob: scoped, validated, acting only where asked."""

import contextvars

import numpy as np
import pytest
import torch

from sknmf._torch.kernels.precision import (
    PRECISIONS,
    current_precision,
    matmul,
    product_precision,
)
from sknmf._torch.solvers.hals import frobenius_objective, hals_step


def _tf32_flag():
    m = torch.backends.cuda.matmul
    return m.fp32_precision if hasattr(m, "fp32_precision") else m.allow_tf32


def test_default_is_highest_and_scopes_restore():
    assert current_precision() == "highest"
    flag = _tf32_flag()
    with product_precision("tf32"):
        assert current_precision() == "tf32"
        assert _tf32_flag() != flag
        with product_precision("bf16"):
            assert current_precision() == "bf16"
        assert current_precision() == "tf32"
    assert current_precision() == "highest"
    assert _tf32_flag() == flag
    with pytest.raises(RuntimeError), product_precision("tf32"):
        raise RuntimeError("boom")
    assert _tf32_flag() == flag and current_precision() == "highest"


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision must be one of"):
        with product_precision("fp8"):
            pass
    assert set(PRECISIONS) == {"highest", "tf32", "bf16"}


def test_context_is_per_context():
    with product_precision("bf16"):
        seen = contextvars.Context().run(current_precision)
    assert seen == "highest"


def test_bf16_rounds_float32_products_only():
    g = torch.Generator().manual_seed(0)
    A = torch.rand(50, 200, generator=g)
    B = torch.rand(200, 30, generator=g)
    exact = A.double() @ B.double()
    with product_precision("bf16"):
        low = matmul(A, B)
        out = torch.empty(50, 30)
        matmul(A, B, out=out)
        double = matmul(A.double(), B.double())
    assert low.dtype == torch.float32
    rel = (low.double() - exact).abs().max() / exact.abs().max()
    # bfloat16 inputs: 8-bit mantissa (2^-9 relative rounding per entry).
    assert 1e-5 < rel < 1e-2
    np.testing.assert_array_equal(out.numpy(), low.numpy())
    # float64 is never lowered.
    np.testing.assert_array_equal(double.numpy(), exact.numpy())
    # Outside the scope, products are float32 again.
    assert ((matmul(A, B).double() - exact).abs().max() / exact.abs().max()) < 1e-6


def test_hals_under_bf16_reaches_the_float32_error_up_to_its_rounding():
    g = torch.Generator().manual_seed(1)
    Wtrue = torch.rand(300, 6, generator=g)
    X = Wtrue @ torch.rand(6, 40, generator=g) + 0.05 * torch.rand(300, 40, generator=g)
    W0 = torch.rand(300, 6, generator=g)
    H0 = torch.rand(6, 40, generator=g)
    errors = {}
    for precision in ("highest", "bf16"):
        W, H = W0.clone(), H0.clone()
        with product_precision(precision):
            for _ in range(30):
                hals_step(X, W, H)
        errors[precision] = frobenius_objective(X, W, H)
    # bfloat16 rounds X and the factors to 8-bit mantissas (float32 accumulation
    # and output): the residual it reaches moves by far less than 2^-12 ||X||
    # (seen: 2.390 -> 2.403, ||X|| = 173). Rounding the outputs to bfloat16 too
    # moved it to 2.92: this bound catches that.
    norm_x = float(torch.linalg.vector_norm(X))
    res = {p: (2.0 * e) ** 0.5 for p, e in errors.items()}
    assert res["bf16"] != res["highest"]
    assert abs(res["bf16"] - res["highest"]) <= 2.0**-12 * norm_x
