"""Sphinx configuration of the sknmf documentation.

Build with ``make -C doc html`` (or ``sphinx-build -W -b html doc doc/_build/html``).
The build is offline: intersphinx has no inventories to fetch, and the gallery runs
the scripts of ``examples/`` on bundled data.

Two pieces are generated here, at configuration time, so that they always match
the code being documented (they are ignored by git, see ``doc/.gitignore``):

* ``api.rst``: the API reference, one entry per public name, read from
  ``sknmf.__all__`` and the ``__all__`` of each public subpackage. A name that a
  branch has not exported yet is simply absent; a new export appears by itself.
* ``_generated/cli.rst``: the ``--help`` text of every ``sknmf`` subcommand.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import pkgutil
import re
import sys
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives
from docutils.statemachine import StringList

DOC_DIR = Path(__file__).resolve().parent
REPO_DIR = DOC_DIR.parent

# Document the checkout this folder belongs to, not some other installed copy.
if (REPO_DIR / "sknmf" / "__init__.py").is_file():
    sys.path.insert(0, str(REPO_DIR))

import sknmf  # noqa: E402

# -- Project ---------------------------------------------------------------------

project = "sknmf"
author = "The sknmf developers"
copyright = "The sknmf developers, BSD-3-Clause"
release = sknmf.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "sphinx_gallery.gen_gallery",
]

templates_path = ["_templates"]
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "_generated/*.rst"]
root_doc = "index"
default_role = "literal"

# Offline on purpose: no inventory is fetched, so the build works without network.
# Cross-references to numpy, scikit-learn or torch stay plain text.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
intersphinx_disabled_reftypes = ["*"]

# -- API reference -----------------------------------------------------------------

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "inherited-members": True}
autodoc_typehints = "none"  # numpydoc's Parameters section already gives the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False

# Sections of the API reference, in page order: (subpackage, title, blurb). A public
# subpackage missing here still gets its own section (see _api_sections).
API_SECTIONS = [
    (
        "sknmf.decomposition",
        "Matrix factorization",
        "Deep (multilayer) nonnegative matrix factorization.",
    ),
    (
        "sknmf.image",
        "Images",
        "Image patches, the NMF image codec and image quality metrics.",
    ),
    (
        "sknmf.sequence",
        "Sequences",
        "Frame-wise encoding of videos and recurrent sequence classifiers.",
    ),
    (
        "sknmf.datasets",
        "Datasets",
        "Synthetic and on-disk data sets; nothing is downloaded.",
    ),
]

# Modules that are not a Python API: the command line has its own page.
API_EXCLUDED_MODULES = {"sknmf.cli"}


def _public_names(module) -> list[str]:
    return [name for name in getattr(module, "__all__", []) if not name.startswith("_")]


def _api_sections() -> list[tuple[str, str, str, list[str]]]:
    """Return ``(module, title, blurb, documented names)`` for each API section.

    Every public object is documented once, under its shortest public path: a name
    exported from ``sknmf`` itself is documented as ``sknmf.Name`` (in the section
    of the subpackage that defines it), anything else as ``sknmf.sub.name``.
    """
    sections = list(API_SECTIONS)
    known = {module for module, _, _ in sections}
    for info in pkgutil.iter_modules(sknmf.__path__):
        name = f"sknmf.{info.name}"
        if (
            info.ispkg
            and not info.name.startswith("_")
            and name not in known
            and name not in API_EXCLUDED_MODULES
        ):
            sections.append((name, name, f"The ``{name}`` subpackage."))

    top = {name: getattr(sknmf, name) for name in _public_names(sknmf)}
    seen: set[int] = set()
    out = []
    for module_name, title, blurb in sections:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue
        entries = []
        for name in _public_names(module):
            obj = getattr(module, name)
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            if top.get(name) is obj:
                entries.append(f"sknmf.{name}")
            else:
                entries.append(f"{module_name}.{name}")
        if entries:
            out.append((module_name, title, blurb, entries))
    rest = [
        f"sknmf.{name}"
        for name, obj in top.items()
        if id(obj) not in seen and not isinstance(obj, str)
    ]
    if rest:
        out.append(("sknmf", "Other", "Other names of the top-level package.", rest))
    return out


def _write_if_changed(path: Path, text: str) -> None:
    # An unchanged file keeps its timestamp, so incremental builds stay incremental.
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")


def _write_api_page() -> None:
    lines = [
        ".. This file is generated by conf.py from the packages' __all__; do not edit.",
        "",
        ".. _api_ref:",
        "",
        "=============",
        "API reference",
        "=============",
        "",
        "Every public name of sknmf, generated from the docstrings. The",
        "estimators follow scikit-learn's API: ``fit``, ``transform`` or",
        "``predict``, ``get_params``, ``set_params``, pickling. Names exported by",
        "the top-level package are documented as ``sknmf.Name``; they are also",
        "importable from their subpackage.",
        "",
    ]
    for module_name, title, blurb, entries in _api_sections():
        heading = f"``{module_name}``: {title}"
        lines += [heading, "=" * len(heading), "", blurb, ""]
        lines += [".. currentmodule:: sknmf", ""]
        lines += [
            ".. autosummary::",
            "   :nosignatures:",
            "   :toctree: generated/",
            "",
        ]
        # Relative to the current module, as autosummary asks; the stub files
        # still carry the full name (generated/sknmf.image.compress.rst).
        lines += [f"   {entry.removeprefix('sknmf.')}" for entry in entries]
        lines.append("")
    _write_if_changed(DOC_DIR / "api.rst", "\n".join(lines))


# -- Pages generated from the repository ------------------------------------------


def _cli_help(argv: list[str]) -> str:
    from sknmf import cli

    out = io.StringIO()
    saved = sys.argv
    sys.argv = ["sknmf", *argv]
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            cli.main(argv)
    finally:
        sys.argv = saved
    return out.getvalue()


def _subcommands(help_text: str) -> list[str]:
    """Subcommand names from argparse's help: ``{a,b}`` or the indented list."""
    match = re.search(r"\{([\w,-]+)\}", help_text)
    if match:
        return match.group(1).split(",")
    section = re.search(r"positional arguments:\n(.*?)(?:\n\n|\Z)", help_text, re.S)
    if not section:
        return []
    # argparse indents the subcommands of a metavar'd subparsers action by 4 spaces.
    return re.findall(r"^    ([A-Za-z][\w-]*)(?:\s{2,}|$)", section.group(1), re.M)


def _write_cli_page() -> None:
    """Record the ``--help`` text of ``sknmf`` and of each subcommand."""
    try:
        importlib.import_module("sknmf.cli")
    except ModuleNotFoundError:
        rst = "This build of sknmf has no command line (``sknmf.cli`` is absent).\n"
    else:
        main_help = _cli_help(["--help"])
        commands = _subcommands(main_help)
        parts = [("sknmf", main_help)]
        parts += [(f"sknmf {cmd}", _cli_help([cmd, "--help"])) for cmd in commands]
        rst = ""
        for title, text in parts:
            body = "\n".join("   " + line if line else "" for line in text.splitlines())
            rst += f"``{title}``\n{'-' * (len(title) + 4)}\n\n.. code-block:: text\n\n"
            rst += f"{body}\n\n"
    _write_if_changed(DOC_DIR / "_generated" / "cli.rst", rst)


_write_api_page()
_write_cli_page()

# -- Gallery -----------------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": str(REPO_DIR / "examples"),
    "gallery_dirs": "auto_examples",
    # EXAMPLES_PATTERN=plot_deep make html runs only the matching scripts (quick
    # edits; figures of the others are then missing, so -W fails on purpose).
    "filename_pattern": os.environ.get("EXAMPLES_PATTERN", r"/plot_"),
    "doc_module": ("sknmf",),
    "backreferences_dir": "gen_modules/backreferences",
    # A failing example fails the build (sphinx-gallery's default), loudly and early.
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "min_reported_time": 1,
    "matplotlib_animations": False,
}

# -- HTML ----------------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"sknmf {release}"
html_static_path: list[str] = []
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 6,
}
html_show_sourcelink = False

# -- A figure from the gallery ------------------------------------------------------


class GalleryFigure(Directive):
    """Show figure N of a gallery example, with a link to the example.

    Usage::

        .. gallery-figure:: plot_deep_layers 1
           :width: 90%

           Caption.

    The image is the one sphinx-gallery saved when it ran the example in this
    build, so the figure always shows what the code produces. If the example
    script is not in ``examples/`` (another branch has not merged yet), a short
    note replaces the figure; if the script is there but the image is not, Sphinx
    reports a missing image, which ``-W`` turns into an error.
    """

    required_arguments = 2
    has_content = True
    option_spec = {"width": directives.unchanged, "alt": directives.unchanged}

    def run(self):
        name, number = self.arguments[0], int(self.arguments[1])
        examples_dir = Path(sphinx_gallery_conf["examples_dirs"])
        if not (examples_dir / f"{name}.py").is_file():
            note = nodes.paragraph(
                text=f"(The figure of the gallery example {name}.py appears here "
                "once that example is part of the repository.)"
            )
            return [note]
        lines = [
            f".. figure:: /auto_examples/images/sphx_glr_{name}_{number:03d}.png",
            f"   :alt: {self.options.get('alt', name)}",
        ]
        if "width" in self.options:
            lines.append(f"   :width: {self.options['width']}")
        lines.append("")
        caption = " ".join(line.strip() for line in self.content if line.strip())
        caption = (caption + " " if caption else "") + (
            f"(Figure from :ref:`sphx_glr_auto_examples_{name}.py`, "
            "computed when these pages were built.)"
        )
        lines.append("   " + caption)
        node = nodes.container()
        self.state.nested_parse(StringList(lines, source=""), self.content_offset, node)
        return node.children


# -- Inherited docstrings ---------------------------------------------------------

# Methods inherited from scikit-learn (get_params, set_output, set_fit_request...)
# keep their docstrings, whose :term: and :ref: targets live in scikit-learn's own
# glossary and pages. Without network inventories those targets cannot resolve, so
# they become literal text; sknmf's own docstrings are left strict.
_FOREIGN_XREF = re.compile(r":(?:term|ref|doc):`([^`<]*?)\s*(?:<([^`>]*)>)?`")


def _plain_foreign_xrefs(app, what, name, obj, options, lines):
    module = getattr(obj, "__module__", None) or ""
    if module.split(".")[0] == "sknmf":
        return
    for i, line in enumerate(lines):
        lines[i] = _FOREIGN_XREF.sub(
            lambda m: f"``{(m.group(1) or m.group(2)).strip()}``", line
        )


# numpydoc renders a parameter's type as reStructuredText, where a trailing
# underscore makes a hyperlink reference and a leading "*" opens emphasis. In a
# type such as "ndarray of shape (n_samples, n_components_)" or
# "(n_frames, *frame_shape_)" both are plain text, so they are escaped there (only
# in the "**name** : type" lines numpydoc writes, never in descriptions).
_TYPE_LINE = re.compile(r"^(\s*\*\*[^*]+\*\* : )(.*)$")
_TRAILING_UNDERSCORE = re.compile(
    r"(?<![`\\])\b([A-Za-z]\w*?[A-Za-z0-9])_(?=[\s,)\]]|$)"
)
_STAR = re.compile(r"(?<![*\\])\*(?=[A-Za-z_])")


def _escape_type_fields(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        match = _TYPE_LINE.match(line)
        if match and "`" not in match.group(2):
            kind = _TRAILING_UNDERSCORE.sub(r"\1\\_", match.group(2))
            lines[i] = match.group(1) + _STAR.sub(r"\\*", kind)


def setup(app):
    app.add_directive("gallery-figure", GalleryFigure)
    # After numpydoc (priority 500), on the reStructuredText it produced.
    app.connect("autodoc-process-docstring", _plain_foreign_xrefs, priority=600)
    app.connect("autodoc-process-docstring", _escape_type_fields, priority=600)
