"""Sphinx configuration of the tnattn documentation.

Build (warnings are errors; the tutorials in ``tutorials/`` are executed)::

    pip install ".[docs]"
    sphinx-build -W --keep-going -b html docs docs/_build/html
"""

from __future__ import annotations

import os

import tnattn

project = "tnattn"
author = "the tnattn developers"
copyright = "2026, the tnattn developers"
version = release = tnattn.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx.ext.intersphinx",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "tutorials/README.rst", "sg_execution_times.rst"]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

# numpydoc-style docstrings through napoleon; type annotations stay in the signatures.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"members": True, "show-inheritance": False}
# Mathematics is written as plain ASCII in the docstrings (they are read in terminals as often).
nitpicky = False
# Docstring type fields name shapes such as "(N, M) ... in [0, d)"; napoleon turns their words into
# cross-reference attempts, and a letter like "d" matches several attributes. Those are not links.
suppress_warnings = ["ref.python"]

# The docs are built without a network: no intersphinx inventories are fetched.
intersphinx_mapping: dict = {}

html_theme = "furo"
html_title = f"tnattn {release}"
html_static_path: list = []

# Tutorials: plain Python scripts, executed at every build, their output and figures captured.
sphinx_gallery_conf = {
    "examples_dirs": ["tutorials"],
    "gallery_dirs": ["auto_tutorials"],
    "filename_pattern": r"/tutorial_",
    "ignore_pattern": r"__init__\.py",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "within_subsection_order": "FileNameSortKey",
    "write_computation_times": False,
    "show_memory": False,
}

os.environ.setdefault("OMP_NUM_THREADS", "1")
