"""``sknmf demo``: the tables and figures, on small crops."""

import ast
import os

import numpy as np
import pytest

from sknmf.image import _demo


@pytest.mark.slow  # every fit of the demo, on crops: ~5-10 s on 2 busy cores
def test_demo_writes_figures(tmp_path, monkeypatch):
    # The full demo runs the sample photos (checked by hand and in the docs);
    # here the same code path runs on small crops in-process, with a small
    # iteration budget: this checks the tables and figures, not the quality.
    pytest.importorskip("matplotlib")
    from sknmf.image import _codec

    monkeypatch.setattr(_codec, "FIT_ITER", 40)
    monkeypatch.setattr(_demo, "FACTOR_ITER", 20)

    messages = []
    code = _demo.run(
        str(tmp_path / "out"), log=messages.append, qualities=(20, 60), crop=(48, 64)
    )
    assert code == 0
    names = {"rate_distortion.png", "reconstructions.png", "components.png"}
    for name in names:
        assert (tmp_path / "out" / name).stat().st_size > 0
    # Written through temporary files renamed into place: none is left.
    assert set(os.listdir(tmp_path / "out")) == names
    assert any("JPEG" in m for m in messages)


def test_demo_uses_no_private_name_of_the_codec():
    # The demo is a client of the codec: module-level names only, imported at
    # the top of the module (no import inside a function reaching back into
    # the package).
    with open(_demo.__file__) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sknmf"):
            assert node.col_offset == 0, f"import inside a function: line {node.lineno}"
            assert not [a.name for a in node.names if a.name.startswith("_")] or (
                node.module == "sknmf.image"
            ), node.module
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id == "_codec":
                assert not node.attr.startswith("_"), node.attr


def _patches_of(image):
    from sknmf.image import ImagePatches

    return ImagePatches((8, 8)).fit(image).transform(image).astype(np.float32) / 255


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_factorisation_table_times_each_method_to_the_same_error(monkeypatch, capsys):
    # The README's claim is a time to an error; the demo's first table measures
    # the same thing: scikit-learn's NMF with its defaults sets the target (an
    # independent fit here gives its error), one-layer DeepNMF stops at it.
    from sklearn.datasets import load_sample_image
    from sklearn.decomposition import NMF

    monkeypatch.setattr(_demo, "FACTOR_ITER", 10)
    image = load_sample_image("china.jpg")[100:164, 200:296]
    rows = _demo._factorise("crop", image, log=lambda m: None)
    (_, _, cd_iters, cd_err, _, _, _), one, deep = rows

    X = _patches_of(image).astype(np.float64)
    ref = NMF(32, solver="cd", init="nndsvda", random_state=0)
    W = ref.fit_transform(X.astype(np.float32))
    target = np.linalg.norm(X - W.astype(np.float64) @ ref.components_)
    target /= np.linalg.norm(X)
    assert cd_iters == ref.n_iter_
    np.testing.assert_allclose(cd_err, target, rtol=1e-5)

    assert one[1] == "DeepNMF, 1 layer" and one[6] == "to the target"
    assert one[3] <= target * (1 + 1e-5)
    assert one[2] < _demo.TARGET_MAX_ITER  # it stopped at the target, not the cap
    assert deep[1] == "DeepNMF, 3 layers" and deep[2] == 10
    assert deep[6] == "fixed budget"

    _demo._print_tables(rows, [], ())
    out = capsys.readouterr().out
    assert "time to the same error" in out and "fixed 10 iterations" in out
    assert "crop: DeepNMF, 1 layer reached scikit-learn's error in" in out


def test_factorisation_table_says_when_the_target_is_missed(monkeypatch, capsys):
    from sklearn.datasets import load_sample_image

    monkeypatch.setattr(_demo, "FACTOR_ITER", 2)
    monkeypatch.setattr(_demo, "TARGET_MAX_ITER", 1)
    image = load_sample_image("flower.jpg")[100:148, 200:264]
    rows = _demo._factorise("crop", image, log=lambda m: None)
    assert rows[1][6] == "target not reached"
    _demo._print_tables(rows, [], ())
    assert "reached scikit-learn's error" not in capsys.readouterr().out
