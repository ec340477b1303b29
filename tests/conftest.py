"""Settings of the test suite: Hypothesis profiles and per-case marks.

Hypothesis (DESIGN.md §6): with ``CI`` set in the environment the ``ci``
profile runs, derandomised (the examples follow from each test's source, so a
run is reproducible) and without an example database (nothing found once is
replayed forever, and no ``.hypothesis/`` folder is read or written); elsewhere
the ``dev`` profile explores randomly and keeps its database, so a failure
found on a laptop replays there until fixed. A counterexample becomes a plain
regression test. ``HYPOTHESIS_PROFILE`` picks a profile explicitly.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_COMMON = dict(
    deadline=None,  # timings on a shared 2-core machine are noise
    print_blob=True,  # a failure prints the line that reproduces it
    suppress_health_check=[HealthCheck.too_slow],
)
# Both from Hypothesis' defaults: with CI set it loads its own "ci" profile on
# import, which a profile registered without a parent would inherit.
_DEFAULT = settings.get_profile("default")
settings.register_profile("ci", _DEFAULT, derandomize=True, database=None, **_COMMON)
settings.register_profile("dev", _DEFAULT, **_COMMON)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if _in_ci() else "dev")
)


def pytest_collection_modifyitems(config, items):
    """Marks for single parametrised cases of tests a module does not own.

    A module may define ``CASE_MARKS``, a list of ``(test name, when, mark)``:
    the mark goes to every case of that test whose parameters have the values of
    the dict ``when`` (``{}``: every case), or for which ``when(params)`` is
    true. The conformance file uses it to skip (with their reasons) or mark slow
    cases of scikit-learn's tests, which it cannot decorate.
    """
    for item in items:
        table = getattr(getattr(item, "module", None), "CASE_MARKS", None)
        if not table:
            continue
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        for test, when, mark in table:
            if test != getattr(item, "originalname", item.name):
                continue
            if callable(when):
                applies = when(params)
            else:
                applies = all(k in params and params[k] == v for k, v in when.items())
            if applies:
                item.add_marker(mark)
