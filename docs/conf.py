"""Sphinx configuration: the guides (Markdown, via myst-parser) and the API reference built from
the docstrings (autodoc + napoleon for the Google-style sections).

Build: ``python -m sphinx -W -b html docs docs/_build/html`` (tests/test_docs.py runs it).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "jaxpayne"
author = "jaxpayne developers"
copyright = "2026, jaxpayne developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "figures", "Thumbs.db", ".DS_Store"]

myst_enable_extensions = ["dollarmath"]
myst_heading_anchors = 3

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "none"  # the docstrings carry the types and units
autodoc_mock_imports: list[str] = []
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # a class's Attributes section as fields, not a second description

html_theme = "alabaster"
html_static_path: list[str] = []
