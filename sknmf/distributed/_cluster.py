"""Where the chunk tasks run: the current ``distributed.Client``, or this process.

:class:`Cluster` is a thin face over dask's own machinery (``Client.submit``,
``Client.scatter``, futures): sknmf schedules nothing itself. Without a client
the tasks run here, one after the other, on values (Dask's local scheduler
computes the blocks of X), which keeps one code path for both.
:func:`tree_sum` adds statistics pairwise on the workers, so only the sum
reaches the client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

from . import _chunks


class _Done:
    """A computed value behind the face of a future (no client)."""

    __slots__ = ("value",)
    status = "finished"

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def current_client():
    """The current ``distributed.Client``, or None (Dask's local scheduler)."""
    try:
        from distributed import Client
    except ImportError:
        return None
    try:
        return Client.current()
    except ValueError:
        return None


class Cluster:
    """Submit tasks, broadcast weights, collect results."""

    def __init__(self, client=None):
        self.client = client

    def submit(self, fn, *args):
        if self.client is None:
            return _Done(fn(*[a.value if isinstance(a, _Done) else a for a in args]))
        return self.client.submit(fn, *args, pure=False)

    def broadcast(self, Hs, client_state: dict | None = None):
        w = _chunks.Weights(Hs, client_state)
        if self.client is None:
            return _Done(w)
        # Scattered to one worker; the others fetch them from it (dask's
        # peer-to-peer transfer): Client.scatter(broadcast=True) took ~0.8 s a
        # call on a loaded 2-core machine, this ~10 ms. Scattered data, unlike
        # a task's result, has no lineage: once released, the tasks that used
        # it cannot be replayed, so a lost chunk is rebuilt from the current
        # weights (not from the whole history, whose weights the scheduler
        # would otherwise keep).
        return self.client.scatter(w, hash=False)

    def gather(self, futures):
        if self.client is None:
            return [f.value for f in futures]
        return self.client.gather(futures)

    def compute(self, delayed_parts):
        """Futures (or values) of delayed objects, kept on the cluster."""
        if self.client is None:
            import dask

            return [_Done(v) for v in dask.compute(*delayed_parts)]
        return self.client.compute(delayed_parts)


#: Statistics added by one task of the tree reduction (dask.array's reductions
#: use the same default fan-in).
FAN_IN = 4


def tree_sum(cluster: Cluster, futures: list):
    """Sum of the chunks' ``out`` statistics, added ``FAN_IN`` at a time on the
    workers (a tree), so only the sum reaches the client."""
    # Each chunk's statistics are taken out where the chunk lives: the
    # reduction must never move a chunk's state (its codes, buffers, X).
    level = [cluster.submit(_chunks.pick, f, "out") for f in futures]
    while True:
        level = [
            cluster.submit(_chunks.add_all, *level[i : i + FAN_IN])
            for i in range(0, len(level), FAN_IN)
        ]
        if len(level) == 1:
            return level[0]


def lost_errors() -> tuple:
    """Exceptions that say a worker (and what it held) was lost, not that a
    task failed on its data."""
    errors = [concurrent.futures.CancelledError, asyncio.CancelledError]
    try:
        from distributed.client import FutureCancelledError
        from distributed.scheduler import KilledWorker

        errors += [FutureCancelledError, KilledWorker]
    except ImportError:  # pragma: no cover - distributed is optional
        pass
    try:
        from distributed.comm.core import CommClosedError

        errors.append(CommClosedError)
    except ImportError:  # pragma: no cover
        pass
    return tuple(dict.fromkeys(errors))
