"""Test settings for the sequence estimators."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    # The recurrent nets under test are tiny: on a shared, loaded machine two spinning
    # intra-op threads make each step many times slower than one thread. Test-harness
    # only (the library never touches thread settings); restored afterwards.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
