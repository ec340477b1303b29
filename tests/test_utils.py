"""Thread sizing of ``sknmf._utils``: one thread for small work, no more threads
than the cores other processes leave free, every pool restored on exit."""

import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from sknmf import _utils
from sknmf._utils import busy_cores_elsewhere, power_of_two_scale, threads_for


@pytest.fixture
def two_torch_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(previous)


def _pool_threads():
    return [(d["filepath"], d["num_threads"]) for d in threadpool_info()]


def test_small_work_runs_every_pool_on_one_thread_and_restores(two_torch_threads):
    before = _pool_threads()
    with threads_for(10, threshold=1000):
        assert torch.get_num_threads() == 1
        # numpy's and scikit-learn's BLAS/OpenMP pools too: none spins beside torch.
        assert all(n == 1 for _, n in _pool_threads())
    assert torch.get_num_threads() == 2
    assert _pool_threads() == before


def test_restores_after_an_exception(two_torch_threads):
    before = _pool_threads()
    with pytest.raises(KeyError), threads_for(10, threshold=1000):
        raise KeyError("inside")
    assert torch.get_num_threads() == 2
    assert _pool_threads() == before


@pytest.mark.parametrize(
    "cores, busy, expected", [(2, 0, 2), (2, 1, 1), (2, 5, 1), (8, 1, 2), (2, None, 2)]
)
def test_large_work_uses_the_free_cores(
    two_torch_threads, monkeypatch, cores, busy, expected
):
    # The user's setting (2 threads here) is an upper bound; busy cores lower it.
    monkeypatch.setattr(_utils, "_usable_cores", lambda: cores)
    monkeypatch.setattr(_utils, "busy_cores_elsewhere", lambda: busy)
    with threads_for(10**9, threshold=1000):
        assert torch.get_num_threads() == expected
    assert torch.get_num_threads() == 2


def test_a_users_single_thread_is_kept(monkeypatch):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.setattr(_utils, "_usable_cores", lambda: 8)
    monkeypatch.setattr(_utils, "busy_cores_elsewhere", lambda: 0)
    try:
        with threads_for(10**9, threshold=1000):
            assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(previous)


def test_cuda_work_leaves_the_cpu_settings_alone(two_torch_threads):
    with threads_for(10, threshold=1000, device="cuda"):
        assert torch.get_num_threads() == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_busy_cores_sees_a_process_burning_a_core():
    burner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        # A process spinning in a loop is runnable at every instant.
        assert busy_cores_elsewhere() >= 1
    finally:
        burner.kill()
        burner.wait()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_power_of_two_scale_brings_any_finite_peak_near_one(dtype):
    info = np.finfo(dtype)
    for peak in (info.max, info.tiny / 8, 2.0**70, 2.0**-70, 3.0):
        peak = float(dtype(peak))
        s = power_of_two_scale(peak, 32, dtype)
        # A power of two, finite with its inverse in the dtype (exact rescaling).
        assert (
            np.frexp(s)[0] == 0.5
            and np.isfinite(dtype(s))
            and np.isfinite(dtype(1 / s))
        )
        scaled = dtype(peak) / dtype(s)
        assert np.isfinite(scaled) and scaled > 0
        assert abs(np.frexp(scaled)[1]) <= 32
    assert power_of_two_scale(0.0, 32, np.float64) == 1.0
    assert power_of_two_scale(2.0**31, 32, np.float64) == 1.0
