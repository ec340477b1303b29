"""check_ranks: the one check of a deep model's ranks."""

import numpy as np
import pytest

from sknmf.decomposition import check_ranks


@pytest.mark.parametrize(
    "value, expected",
    [
        (5, (5,)),
        (np.int64(3), (3,)),
        ([8, 8, 2], (8, 8, 2)),
        ((4,), (4,)),
        (np.array([6, 3]), (6, 3)),
    ],
)
def test_accepted(value, expected):
    ranks = check_ranks(value)
    assert ranks == expected and all(type(r) is int for r in ranks)


@pytest.mark.parametrize(
    "value, error, match",
    [
        ((2, 4), ValueError, "non-increasing"),
        ((), ValueError, "empty"),
        ((3, 0), ValueError, "positive integers"),
        ((3, 1.5), ValueError, "positive integers"),
        (True, TypeError, "int or a sequence"),
        ("32", TypeError, "int or a sequence"),
        (3.0, TypeError, "int or a sequence"),
    ],
)
def test_rejected_with_the_parameter_named(value, error, match):
    with pytest.raises(error, match=match) as info:
        check_ranks(value, name="chroma_components")
    assert "chroma_components" in str(info.value)


def test_limits():
    assert check_ranks((8, 4), max_rank=8, max_layers=2) == (8, 4)
    with pytest.raises(ValueError, match="at most 8"):
        check_ranks(9, max_rank=8)
    with pytest.raises(ValueError, match="1 to 2 layers"):
        check_ranks((3, 2, 1), max_layers=2)
