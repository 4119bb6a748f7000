"""The notebooks in notebooks/ run from top to bottom and draw their plots.

Each notebook is a jupytext pair: the ``.py`` (percent format) is what is reviewed and
edited, the ``.ipynb`` what a reader opens. The tests check that every ``.py`` has its
``.ipynb`` with the same cells (``jupytext --sync notebooks/*.py`` after an edit), then
execute every ``.ipynb`` in a fresh kernel with nbclient, as the README's test command:
no cell may raise, and every notebook must render at least one figure (matplotlib's inline
backend draws with Agg, so no display is needed). Notebooks define no logic of their own
(CONVENTIONS §16): the tests also refuse a ``def`` or ``class`` in a notebook.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.py"))
CELL_TIMEOUT_S = 600  # a busy 2-core machine; the longest cell is a simulation


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 3, NOTEBOOKS


@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_pairs_are_in_sync_and_define_no_logic(script: Path) -> None:
    paired = script.with_suffix(".ipynb")
    assert paired.exists(), f"run: jupytext --sync {script.relative_to(REPO)}"
    py_nb = jupytext.read(script)
    ipynb = nbformat.read(paired, as_version=4)
    want = [(c.cell_type, c.source.strip()) for c in py_nb.cells]
    have = [(c.cell_type, c.source.strip()) for c in ipynb.cells]
    assert have == want, f"out of sync: jupytext --sync {script.relative_to(REPO)}"
    tree = ast.parse(script.read_text(encoding="utf-8"))
    defined = [
        n.name
        for n in ast.walk(tree)
        if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    ]
    assert not defined, f"notebooks define no logic; move {defined} into the package"


@pytest.mark.slow
@pytest.mark.parametrize("script", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_and_plots(
    script: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    nb = nbformat.read(script.with_suffix(".ipynb"), as_version=4)
    # the kernel imports the work tree's packages whatever is installed, and writes
    # nothing into the repository (it runs in tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    client = NotebookClient(
        nb,
        timeout=CELL_TIMEOUT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert figures, "the notebook drew no figure"
