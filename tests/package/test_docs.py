"""The documentation builds with warnings as errors, and its tutorials run.

The build needs the ``docs`` extra (``pip install ".[docs]"``); without it the build test skips.
``.ci/run`` installs the extra, so CI builds the docs on every run (about a minute on 2 cores,
most of it the three tutorials).
"""

from __future__ import annotations

import html
import importlib
import inspect
import re
import pkgutil
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import tnattn

ROOT = Path(__file__).resolve().parents[2]


def _text(page: Path) -> str:
    """The visible text of an HTML page (syntax highlighting splits code into many tags)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def test_no_docstring_cites_files_users_do_not_have():
    # Users get the docs site and the paper; the maintainers' notes (SCIENCE.md, ../shared) are not
    # shipped, so no docstring may send a reader there.
    offenders = []
    for mod in pkgutil.walk_packages(tnattn.__path__, "tnattn."):
        if mod.name.startswith("tnattn._C") or mod.name.endswith("__main__"):
            continue
        source = inspect.getsource(importlib.import_module(mod.name))
        for bad in ("SCIENCE.md", "ARCHITECTURE.md", "shared/reference"):
            if bad in source:
                offenders.append(f"{mod.name}: {bad}")
    assert not offenders, offenders


@pytest.mark.slow
def test_docs_build_with_warnings_as_errors(tmp_path):
    for name in ("sphinx", "myst_parser", "sphinx_gallery", "furo"):
        pytest.importorskip(name, reason='needs the docs extra: pip install ".[docs]"')
    # Build from a copy: sphinx-gallery writes the executed tutorials next to their sources.
    src = tmp_path / "src"
    shutil.copytree(ROOT / "docs", src / "docs", ignore=shutil.ignore_patterns("_build", "auto_tutorials"))
    shutil.copy(ROOT / "CHANGELOG.md", src / "CHANGELOG.md")
    (src / "benchmarks").mkdir()
    shutil.copy(ROOT / "benchmarks" / "README.md", src / "benchmarks" / "README.md")
    out = tmp_path / "html"
    proc = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(src / "docs"), str(out)],
        capture_output=True, text=True, cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]

    pages = {p.relative_to(out).as_posix() for p in out.rglob("*.html")}
    for page in ("index.html", "science.html", "glossary.html", "api/ops.html", "api/train.html",
                 "results.html", "benchmarks.html", "changelog.html", "citing.html"):  # fmt: skip
        assert page in pages, sorted(pages)
    # The tutorials ran during the build: their pages hold what the code printed.
    t1 = _text(out / "auto_tutorials" / "tutorial_1_grokking.html")
    assert "t_train = " in t1 and "error on 50 random sequences of length 5000: 0.0" in t1
    t2 = _text(out / "auto_tutorials" / "tutorial_2_custom_model.html")
    assert "test error by length" in t2 and "max |fused - reference|" in t2
    t3 = _text(out / "auto_tutorials" / "tutorial_3_scenario_a.html")
    assert "grokked" in t3 and "torchrun --nproc-per-node 2" in t3
    # The API reference is generated from the docstrings.
    ops = _text(out / "api" / "ops.html")
    assert "tn_attention" in ops and "Parameters" in ops


def test_readme_keeps_the_two_setup_commands_ci_runs():
    # CI runs the README's test command verbatim (.ci/run); the README must still show both.
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    test_cmd = ci[ci.index("# The README's test command, verbatim:") + 1]
    assert test_cmd in readme
    assert "python3 -m venv .venv && .venv/bin/pip install torch==2.13.0 . && .venv/bin/tnattn train" in readme
