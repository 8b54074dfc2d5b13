"""The tutorials are executed, not just read: each runs as a plain script in smoke mode (tiny sizes), must exit 0
(a tutorial asserts its own gradient checks, so a rotted derivation fails here) and must write its figures; each
must also parse as a jupytext notebook with markdown cells."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parent.parent
TUTORIALS = sorted(ROOT.glob("tutorials/[0-9][0-9]_*.py"))
TIMEOUT = 120  # seconds per tutorial in smoke mode (each should take well under 60)


def _id(path: Path) -> str:
    return path.stem


@pytest.mark.parametrize("path", TUTORIALS, ids=_id)
def test_tutorial_runs_in_smoke_mode(path: Path, tmp_path: Path) -> None:
    env = dict(os.environ, MINIDT_SMOKE="1", MINIDT_FIGURES=str(tmp_path), MPLBACKEND="Agg")
    try:
        proc = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=TIMEOUT)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{path.name} took more than {TIMEOUT} s in smoke mode:\n{(e.stdout or '')[-2000:]}")
    assert proc.returncode == 0, (f"{path.name} exited with {proc.returncode}\n--- stdout (tail)\n"
                                  f"{proc.stdout[-3000:]}\n--- stderr (tail)\n{proc.stderr[-3000:]}")
    pngs = sorted(p.name for p in tmp_path.rglob("*.png"))
    assert pngs, f"{path.name} wrote no PNG figure into MINIDT_FIGURES={tmp_path}"


@pytest.mark.parametrize("path", TUTORIALS, ids=_id)
def test_tutorial_is_a_jupytext_notebook(path: Path) -> None:
    jupytext = require("jupytext")  # a test dependency: fails instead of skipping under CI=true
    notebook = jupytext.read(path)
    kinds = [cell.cell_type for cell in notebook.cells]
    assert "markdown" in kinds, f"{path.name}: no markdown cell (expected '# %% [markdown]' cells with the prose)"
    assert "code" in kinds, f"{path.name}: no code cell"
    assert kinds[0] == "markdown", f"{path.name}: expected the first cell to be the markdown title, got {kinds[0]}"
    title = notebook.cells[0].source
    assert re.search(r"\*Full size: about \d+ (s|min)\b", title), (
        f"{path.name}: the title cell must state the full-size run time ('*Full size: about N s ...'), got {title!r}")


def test_there_are_at_least_ten_tutorials() -> None:
    assert len(TUTORIALS) >= 10, f"expected >= 10 tutorials in tutorials/, got {[p.name for p in TUTORIALS]}"


def test_readme_lists_every_tutorial() -> None:
    readme = (ROOT / "tutorials" / "README.md").read_text()
    missing = [p.name for p in TUTORIALS if p.name not in readme]
    assert not missing, f"tutorials/README.md does not list {missing}"


# What a tutorial may print the code of, in its body: library functions no assignment asks for. The code of a graded
# function (and of its library twin: the block as a Module, the model's embedding) is listed only under the
# Solutions heading, in a cell collapsed in the book, after a heading "After you have done assignment N".
UNGRADED_LISTINGS = {"array_namespace", "numerical_grad", "rel_error", "scatter_add", "split_heads", "returns_to_go",
                     "context", "DecisionTransformerGPT2Model.forward_last"}


@pytest.mark.parametrize("path", TUTORIALS, ids=_id)
def test_graded_code_is_listed_only_after_the_assignment(path: Path) -> None:
    from minidt.coursework import assignments

    graded = {f.name for a in assignments().values() for f in a.functions}
    assert not graded & {name.rsplit(".", 1)[-1] for name in UNGRADED_LISTINGS}
    cells = require("jupytext").read(path).cells
    solutions = next((i for i, c in enumerate(cells) if c.cell_type == "markdown" and "### Solutions" in c.source),
                     len(cells))
    for i, cell in enumerate(cells):
        if cell.cell_type != "code" or "getsource(" not in cell.source:
            continue
        if i < solutions:
            shown = set(re.findall(r"getsource\(([\w.]+)\)", cell.source))
            assert shown <= UNGRADED_LISTINGS, f"{path.name}: cell {i} prints {shown - UNGRADED_LISTINGS} before the " \
                                               "Solutions heading"
        else:
            assert "hide-cell" in cell.metadata.get("tags", []), f"{path.name}: cell {i} lists code uncollapsed"
            heading = cells[i - 1].source if cells[i - 1].cell_type == "markdown" else ""
            n = re.search(r"#### After you have done assignment (\d)", heading)
            assert n, f"{path.name}: cell {i} lists code without an 'After you have done assignment N' heading"
            assert cell.metadata["mystnb"]["code_prompt_show"] == f"Show the code (after assignment {n.group(1)})"
