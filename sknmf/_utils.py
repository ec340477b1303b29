"""Validation shared by the estimators: devices, seeds and dtypes.

This module sits beside the estimators (it imports scikit-learn and torch, no
estimator), so every facade validates ``device`` and ``random_state`` the same way.
"""

from __future__ import annotations

import functools
import numbers
import os
import time
import warnings
from contextlib import contextmanager

import numpy as np
import torch
from sklearn.utils import check_random_state


def check_device(device: str | torch.device) -> torch.device:
    """Return a :class:`torch.device` for ``device`` or raise a clear ``ValueError``.

    Parameters
    ----------
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`.

    Returns
    -------
    device : torch.device
        The validated device.

    Examples
    --------
    >>> from sknmf._utils import check_device
    >>> check_device("cpu")
    device(type='cpu')
    """
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device={device!r} is not a valid torch device; use 'cpu' or 'cuda'."
        ) from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={device!r} was requested but CUDA is not available on this "
                "machine (torch.cuda.is_available() is False); use device='cpu'."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r}: this machine has only "
                f"{torch.cuda.device_count()} CUDA device(s)."
            )
    elif dev.type != "cpu":
        raise ValueError(f"device={device!r} is not supported; use 'cpu' or 'cuda'.")
    return dev


def seed_from_random_state(random_state) -> int:
    """Draw one integer seed from a scikit-learn ``random_state``.

    ``None`` gives a fresh seed each call, an integer always the same seed, and a
    ``RandomState`` instance advances its stream, exactly as scikit-learn does.

    Parameters
    ----------
    random_state : int, RandomState instance or None
        The estimator's ``random_state``.

    Returns
    -------
    seed : int
        A seed in ``[0, 2**31 - 1)`` for private :class:`torch.Generator` objects.

    Examples
    --------
    >>> from sknmf._utils import seed_from_random_state
    >>> seed_from_random_state(0) == seed_from_random_state(0)
    True
    """
    if isinstance(random_state, numbers.Integral) and not isinstance(
        random_state, bool
    ):
        return int(random_state) % (2**31 - 1)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """Return a private :class:`torch.Generator` seeded with ``seed``.

    Parameters
    ----------
    seed : int
        The seed, typically from :func:`seed_from_random_state`.
    device : torch.device or str, default="cpu"
        Where the generator draws.

    Returns
    -------
    generator : torch.Generator
        A generator that does not touch torch's global random state.

    Examples
    --------
    >>> from sknmf._utils import make_generator
    >>> g = make_generator(0)
    >>> g.initial_seed()
    0
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def busy_cores_elsewhere(samples: int = 3) -> int | None:
    """Cores kept busy right now by other processes, or ``None`` if unknown.

    Linux's ``/proc/loadavg`` counts the runnable threads of the whole machine at
    this instant (unlike the load averages, which take a minute to follow a new
    process); this process's own runnable threads are taken off: right after a
    numpy or scikit-learn call, their BLAS pool spins for about 0.1 s, which
    would otherwise read as a competitor (two fits in two threads of one
    process are therefore not seen as competing). The smallest of a few
    readings a millisecond apart ignores momentary blips. Elsewhere than
    Linux the answer is ``None`` and callers keep their setting.

    Parameters
    ----------
    samples : int, default=3
        Readings taken; the smallest count is returned.

    Returns
    -------
    busy : int or None
        Runnable threads of other processes.

    Examples
    --------
    >>> from sknmf._utils import busy_cores_elsewhere
    >>> busy = busy_cores_elsewhere()
    >>> busy is None or busy >= 0
    True
    """
    counts = []
    for i in range(samples):
        if i:
            time.sleep(0.001)
        try:
            with open("/proc/loadavg") as f:
                running = int(f.read().split()[3].split("/")[0])
            own = 0
            for task in os.listdir("/proc/self/task"):
                try:
                    with open(f"/proc/self/task/{task}/stat") as f:
                        # The state follows the parenthesised command name.
                        own += f.read().rpartition(")")[2].split()[0] == "R"
                except OSError:  # the thread ended between listdir and open
                    continue
        except (OSError, ValueError, IndexError):
            return None
        counts.append(max(0, running - max(own, 1)))
    return min(counts)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _thread_pools():
    # threadpoolctl ships with scikit-learn and reaches the BLAS and OpenMP pools
    # that numpy, scipy and scikit-learn loaded (all imported by now). Finding
    # them scans the process's libraries: once, not at every call.
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


@contextmanager
def threads_for(work: int, threshold: int, device: torch.device | str = "cpu"):
    """Size torch's CPU threads to the work and to the machine's load; restore on exit.

    On a busy machine a parallel region stalls at every barrier when another
    process holds a core (DESIGN.md §7: a small fit ran 37x slower on two
    threads under load, and even large fits ran 1.4-2x slower than on one
    thread). So work below ``threshold`` runs on one thread (it gains nothing
    from a second), larger work on at most the cores that no other process
    keeps busy as it starts, and numpy's and scikit-learn's own pools
    (OpenBLAS, OpenMP) are held to the same count so they cannot spin beside
    torch's loop. The caller's settings are restored, whatever happens inside.
    A user's ``torch.set_num_threads`` (or ``OMP_NUM_THREADS``) stays the upper
    bound.

    Parameters
    ----------
    work : int
        Size of the work (e.g. multiply-adds of the main product).
    threshold : int
        Work from which more than one thread may be used.
    device : torch.device or str, default="cpu"
        Only CPU work is concerned.

    Examples
    --------
    >>> import torch
    >>> from sknmf._utils import threads_for
    >>> before = torch.get_num_threads()
    >>> with threads_for(10, threshold=1000):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    previous = torch.get_num_threads()
    if torch.device(device).type != "cpu":
        yield
        return
    threads = 1
    if work >= threshold and previous > 1:
        busy = busy_cores_elsewhere()
        free = _usable_cores() - (busy or 0)
        threads = max(1, min(previous, free))
    if threads == previous:
        yield
        return
    with _thread_pools().limit(limits=threads):
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


@contextmanager
def unchanged_on_failure(estimator):
    """A fit that raises (or is interrupted) leaves ``estimator`` as it was.

    Validation sets ``n_features_in_`` before the model exists: without this an
    exception in a refit (a callback's, Ctrl-C) would leave the new data's
    attributes beside the old model. Parameters do not change during a fit, so
    putting the whole instance dictionary back restores exactly the previous
    state (a never-fitted estimator stays unfitted).

    Examples
    --------
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sknmf._utils import unchanged_on_failure
    >>> est = StandardScaler()
    >>> try:
    ...     with unchanged_on_failure(est):
    ...         _ = est.fit([[0.0], [1.0]])
    ...         raise RuntimeError("interrupted")
    ... except RuntimeError:
    ...     pass
    >>> hasattr(est, "mean_")
    False
    """
    before = dict(estimator.__dict__)
    try:
        yield
    except BaseException:
        estimator.__dict__.clear()
        estimator.__dict__.update(before)
        raise


def power_of_two_scale(peak: float, max_exponent: int, dtype) -> float:
    """A power of two ``s`` bringing ``peak`` near one, or 1.0 if it is tame.

    Dividing data by ``s`` is exact (it changes no digit), so an estimator can fit
    data of any finite magnitude at a comfortable scale and return results in
    the user's. ``peak`` is tame when its binary exponent is within
    ``±max_exponent``. ``s`` and ``1 / s`` both stay finite in ``dtype``: data
    at the dtype's largest values (whose exponent is one past the largest
    finite power of two) and subnormal data are scaled as far as the dtype
    allows.

    Parameters
    ----------
    peak : float
        The data's largest magnitude.
    max_exponent : int
        Largest binary exponent (either sign) left unscaled.
    dtype : numpy dtype
        The data's floating type.

    Examples
    --------
    >>> import numpy as np
    >>> from sknmf._utils import power_of_two_scale
    >>> power_of_two_scale(255.0, 32, np.float64)
    1.0
    >>> power_of_two_scale(1e300, 32, np.float64) == 2.0**997
    True
    >>> bool(np.isfinite(power_of_two_scale(np.finfo(np.float64).max, 32, np.float64)))
    True
    """
    if peak == 0.0 or not np.isfinite(peak):
        return 1.0
    exponent = int(np.frexp(peak)[1])
    if abs(exponent) <= max_exponent:
        return 1.0
    bound = np.finfo(dtype).maxexp - 1
    return float(np.ldexp(1.0, min(max(exponent, -bound), bound)))


def warn_unused_factors(W, H, stacklevel: int = 3) -> None:
    """scikit-learn's warning for ``W``/``H`` passed with an init that ignores them.

    Examples
    --------
    >>> import warnings
    >>> from sknmf._utils import warn_unused_factors
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     warn_unused_factors(None, [[1.0]])
    >>> caught[0].category.__name__
    'RuntimeWarning'
    """
    if W is not None or H is not None:
        warnings.warn(
            "When init!='custom', provided W or H are ignored. Set "
            "init='custom' to use them as initialization.",
            RuntimeWarning,
            stacklevel=stacklevel + 1,
        )
