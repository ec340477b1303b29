"""Repository-wide pytest configuration."""

import numpy as np
import pytest
import torch


def pytest_collection_modifyitems(config, items):
    # CUDA tests run wherever a GPU is present and are skipped, visibly, elsewhere.
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(
        reason="needs a CUDA GPU (torch.cuda.is_available() is False)"
    )
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _doctest_namespace(doctest_namespace):
    doctest_namespace["np"] = np
