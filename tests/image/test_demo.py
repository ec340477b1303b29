"""``sknmf demo``: the tables and figures, on small crops."""

import ast

import pytest

from sknmf.image import _demo


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
    for name in ("rate_distortion.png", "reconstructions.png", "components.png"):
        assert (tmp_path / "out" / name).stat().st_size > 0
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
