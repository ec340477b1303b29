"""scikit-learn's own NMF test suite, run against DeepNMF and deep_nmf (DESIGN.md §6).

What runs is ``_sklearn_test_nmf.py``: scikit-learn's
``sklearn/decomposition/tests/test_nmf.py`` after the mechanical rewrite of
:data:`RULES` (``NMF`` -> ``DeepNMF``, ``MiniBatchNMF`` ->
``DeepNMF(batch_size=1024, solver="mu")``, ``non_negative_factorization`` ->
``deep_nmf``, solver ``"cd"`` -> ``"hals"``), its assertions and tolerances
untouched. MiniBatchNMF's algorithm is the online multiplicative update, which is
DeepNMF's ``solver="mu"`` with ``batch_size``; ``"auto"`` would pick Adam there, a
different algorithm (with it, the NMF / MiniBatchNMF equivalence test fails by
design). :data:`CASE_MARKS` skips what does not apply, each with its reason,
holds the strict xfails and marks the big grids' other slices slow.

Why a committed copy rather than a rewrite at collection time: the suite that
runs is the same whatever scikit-learn is installed (a new release that edits its
tests cannot turn this file red overnight, and a scikit-learn installed without
its tests, as some distributions package it, still runs it), and a reader sees
the exact code under test. That the copy is the mechanical adaptation and nothing
else is checked by :func:`test_copy_is_the_adaptation_of_installed_sklearn`,
which re-derives it from the installed file whenever that is the version the
copy came from. Regenerate after a scikit-learn upgrade with::

    python tests/decomposition/test_sklearn_conformance.py
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import re
import sys
from pathlib import Path

import pytest

UPSTREAM = "sklearn/decomposition/tests/test_nmf.py"
UPSTREAM_VERSION = "1.9.1"
UPSTREAM_SHA256 = "f47eb2097b9c5a4d443efc9fa70f1b11a795438bffeac8d698236dd49713ad44"
COPY = Path(__file__).with_name("_sklearn_test_nmf.py")

# (why, regular expression, replacement, how many times it must match): a rule
# that stops matching as often means upstream changed and the rules need a look.
RULES = [
    (
        "the estimators and the function under test",
        r"^from sklearn\.decomposition import NMF, MiniBatchNMF, "
        r"non_negative_factorization$",
        "from sknmf import DeepNMF, deep_nmf",
        1,
    ),
    (
        'MiniBatchNMF -> DeepNMF(batch_size=1024, solver="mu")',
        r"\bMiniBatchNMF\b",
        "MiniBatchDeepNMF",
        26,
    ),
    # Also in messages: scikit-learn's say "passed to NMF (input H)" with the
    # estimator's name, DeepNMF's with its own.
    ("NMF -> DeepNMF", r"\bNMF\b", "DeepNMF", 47),
    (
        "non_negative_factorization -> deep_nmf",
        r"\bnon_negative_factorization\b",
        "deep_nmf",
        15,
    ),
    ('solver "cd" -> "hals" (the same coordinate descent)', r'"cd"', '"hals"', 15),
    ("the solver's name in the message", r"solver 'cd'", "solver 'hals'", 1),
    # Feature names are the lower-cased class name and an index.
    ("feature names out", r'f"nmf\{i\}"', 'f"deepnmf{i}"', 1),
    # NMF keeps the inferred rank in the private _n_components and the public
    # n_components_; DeepNMF only in the public one.
    ("inferred rank", r"\._n_components\b", ".n_components_", 1),
    # Assertions on scikit-learn's private initialisation helper, not on the
    # estimator: dropped (the estimator assertions around them stay).
    (
        "private helper in test_parameter_checking",
        r"\n( +)with pytest\.raises\(ValueError, match=msg\):\n +nmf\._initialize_nmf\("
        r"-?A, [23], (?:\"nndsvd\"|init)\)",
        "\n\\1# (scikit-learn's private _initialize_nmf: not DeepNMF's API)",
        2,
    ),
]

_HEADER = """\
# Adapted from scikit-learn {version}, {upstream}, by
# tests/decomposition/test_sklearn_conformance.py: a mechanical rewrite, not to
# be edited by hand (regenerate it). The original's licence:
#
{licence}
#
# ruff: noqa
# fmt: off
"""

# Inserted after the imports: MiniBatchNMF's stand-in.
_SHIM = '''
def MiniBatchDeepNMF(n_components=None, *, fresh_restarts=True,
                     max_no_improvement=None, **params):
    """MiniBatchNMF -> DeepNMF(batch_size=1024, solver="mu").

    MiniBatchNMF's algorithm is the online multiplicative update, which is
    DeepNMF's solver="mu" on mini-batches ("auto" would pick Adam there).
    DeepNMF's codes are always computed afresh from the final weights (what
    fresh_restarts=True asks for) and it has no stop on a lack of improvement
    (what max_no_improvement=None asks for); other values have no equivalent.
    """
    if fresh_restarts is not True or max_no_improvement is not None:
        raise NotImplementedError(
            "DeepNMF has no equivalent of fresh_restarts=False or of "
            "max_no_improvement")
    params.setdefault("batch_size", 1024)
    params.setdefault("solver", "mu")
    return DeepNMF(n_components, **params)

'''


def adapt(source: str, licence: str, version: str) -> str:
    """The adapted copy of upstream ``source`` (raises where a rule misses)."""
    for why, pattern, replacement, count in RULES:
        source, n = re.subn(pattern, replacement, source, flags=re.MULTILINE)
        if n != count:
            raise ValueError(f"rule {why!r} matched {n} times, expected {count}")
    licence = "\n".join(f"# {line}".rstrip() for line in licence.strip().splitlines())
    header = _HEADER.format(version=version, upstream=UPSTREAM, licence=licence)
    imports_end = source.index("\n\n\n") + 1
    return header + source[:imports_end] + "\n" + _SHIM + source[imports_end:]


def _installed():
    """(source, licence, version) of the installed scikit-learn's test file, or None."""
    spec = importlib.util.find_spec("sklearn")
    path = Path(spec.origin).parent.parent / UPSTREAM
    if not path.is_file():
        return None
    dist = importlib.metadata.distribution("scikit-learn")
    licence = next(
        (f.read_text() for f in dist.files or () if f.name == "COPYING"), None
    )
    if licence is None:
        return None
    licence = licence.split("\n----\n")[0]  # scikit-learn's own; not the bundled libs'
    return path.read_text(), licence, dist.version


def _load_copy():
    spec = importlib.util.spec_from_file_location("_sklearn_test_nmf", COPY)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The adapted tests, collected here under their upstream names.
_copy = _load_copy()
globals().update({k: v for k, v in vars(_copy).items() if k.startswith("test_")})

_PRIVATE = (
    "tests scikit-learn's private helper {}, not the estimator; DeepNMF's own "
    "counterpart is checked against it in {}"
)
_INIT = _PRIVATE.format("nmf._initialize_nmf", "tests/_torch/test_init.py")
_DIV = _PRIVATE.format("nmf._beta_divergence", "tests/_torch/test_divergence.py")
_MINIBATCH = _copy.MiniBatchDeepNMF
_CSR = _copy.CSR_CONTAINERS[0]  # scipy.sparse.csr_matrix

#: (test, {parameter: value} of the cases concerned ({} = all), mark); applied
#: by tests/conftest.py.
CASE_MARKS = [
    ("test_initialize_nn_output", {}, pytest.mark.skip(reason=_INIT)),
    ("test_initialize_close", {}, pytest.mark.skip(reason=_INIT)),
    ("test_initialize_variants", {}, pytest.mark.skip(reason=_INIT)),
    ("test_beta_divergence", {}, pytest.mark.skip(reason=_DIV)),
    ("test_nmf_underflow", {}, pytest.mark.skip(reason=_DIV)),
    (
        "test_special_sparse_dot",
        {},
        pytest.mark.skip(
            reason="tests scikit-learn's private helper nmf._special_sparse_dot, "
            "not the estimator"
        ),
    ),
    (
        "test_minibatch_nmf_partial_fit",
        {},
        pytest.mark.skip(
            reason="needs MiniBatchNMF's fresh_restarts=False (a batch's codes "
            "carried over between passes) and W/H taken by every partial_fit; "
            "DeepNMF solves a batch's codes from the weights and refuses W/H "
            "after the first call instead of ignoring them"
        ),
    ),
    (
        "test_nmf_inverse_transform",
        {"solver": "mu"},
        pytest.mark.xfail(
            strict=True,
            reason="fit_transform returns transform(X)'s codes, solved afresh "
            "from a constant start and stopped by tol (not the training codes); "
            "from this random start (DeepNMF draws it from torch's generator, "
            "not NumPy's) they end 0.017 off where the test allows 0.015",
        ),
    ),
    (
        "test_nmf_regularization",
        {"Estimator": _MINIBATCH},
        pytest.mark.xfail(
            strict=True,
            reason="mini-batch stages stop when the penalised objective stalls "
            "(tol); here it has converged after 40 iterations, W is all <= eps "
            "and H decays like forget_factor**t (7.5e-9), so counting H <= eps "
            "needs ~105 steps: MiniBatchNMF gets them from max_no_improvement "
            "(its relative change of H stays 0.3 and never stops it; with "
            "max_no_improvement=None it runs max_iter)",
        ),
    ),
    # The two big grids run one slice by default, all of it with -m slow.
    (
        "test_nmf_sparse_input",
        lambda p: p["sparse_container"] is not _CSR or p["alpha_H"] != "same",
        pytest.mark.slow,
    ),
    (
        "test_nmf_fit_nn_output",
        lambda p: p["alpha_H"] != "same" or p["alpha_W"] != 1.0,
        pytest.mark.slow,
    ),
]


def test_copy_is_the_adaptation_of_installed_sklearn():
    found = _installed()
    if found is None:
        pytest.skip(f"the installed scikit-learn ships no {UPSTREAM} to compare with")
    source, licence, version = found
    if hashlib.sha256(source.encode()).hexdigest() != UPSTREAM_SHA256:
        pytest.skip(
            f"the installed scikit-learn {version}'s test_nmf.py is not the one the "
            f"copy came from ({UPSTREAM_VERSION}); regenerate the copy to compare"
        )
    assert COPY.read_text() == adapt(source, licence, version)


if __name__ == "__main__":
    found = _installed()
    if found is None:
        sys.exit(f"the installed scikit-learn has no {UPSTREAM} (or no licence file)")
    source, licence, version = found
    COPY.write_text(adapt(source, licence, version))
    print(
        f"wrote {COPY} from scikit-learn {version}, sha256 "
        f"{hashlib.sha256(source.encode()).hexdigest()}"
    )
