"""Build the minidt book: `python docs/build.py [BUILD_DIR]` (default docs/_build) writes BUILD_DIR/html/index.html.

The book's sources are staged in BUILD_DIR/src, a tree that mirrors the repository's paths (so the README's and
the tutorials' relative links and pictures work unchanged):

    index.md                 the README: the front page
    docs/*.md                the reference pages (the command line, run directories, ...), which the README links
                             to as docs/NAME.md: the same links work on GitHub and in the book
    docs/*.png, docs/*.gif   the pictures of the README and of those pages
    docs/studies/NAME/       the studies' committed full-size results (study.json, NAME.png): tutorial 13 reads them
    tutorials/README.md      the tutorials' overview, with their names linked to their pages
    tutorials/NN_*.py        the tutorials, executed by myst-nb at build time (MINIDT_SMOKE=1: tiny sizes)
    assignments/*.md         one page per graded assignment, written now from minidt.coursework.assignments()
    api.md                   the API reference (autodoc, from the public docstrings)

then runs Sphinx with docs/conf.py. The stage is made afresh every time, so a tutorial's outputs (figures,
tutorial 9's saved model) come from this build only.
"""

from __future__ import annotations

import inspect
import re
import shutil
import sys
from pathlib import Path

from sphinx.cmd.build import build_main

from minidt.coursework import assignments

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def assignment_pages(tutorials: list[Path]) -> dict[str, str]:
    """{file name: MyST text}: an index and one page per assignment, from the skeletons' docstrings."""
    table = assignments()
    rows = "\n".join(f"| {a.number} | [`{a.name}`]({a.name}.md) | {a.title} | {a.max_score()} |"
                     for a in table.values())
    pages = {"index.md": "# Assignments\n\nGraded exercises: write each function of a skeleton, then grade it "
                         "(`pip install -e \".[coursework]\"`):\n\n```bash\nminidt assignment start NAME DIR    "
                         "# DIR/NAME.py: signatures, docstrings, raise NotImplementedError\nminidt grade DIR/NAME.py"
                         "\n```\n\nPoints are the checks on NumPy, the default; `--backends numpy,strict` (portable Array API code) "
                         "doubles them, and a Gradescope kit counts every check twice, on the public inputs and on the "
                         "hidden ones.\n\n| # | name | what | points |\n|---|---|---|---|\n" + rows +
                         "\n\n```{toctree}\n:hidden:\n\n" + "\n".join(table) + "\n```\n"}
    for a in table.values():
        covered = [p for p in tutorials if f"minidt assignment start {a.name} " in p.read_text()]
        lines = [f"# Assignment {a.number} · {a.title}", "",
                 f"**{a.max_score()} points.** Start with `minidt assignment start {a.name} DIR`, which writes "
                 f"`DIR/{a.name}.py`; grade it with `minidt grade DIR/{a.name}.py`."]
        if covered:
            links = ", ".join(f"[tutorial {p.name[:2]}](../tutorials/{p.name})" for p in covered)
            lines += ["", f"The tutorial that derives these functions: {links}."]
        lines += ["", "```text", inspect.cleandoc(a.intro), "```", "", "## What to write"]
        for f in a.functions:
            lines += ["", f"### `{f.name}({', '.join(a.parameters(f.name))})`", "", "```text",
                      inspect.cleandoc(f.doc), "```"]
        # the file as the student gets it, its long docstring lines wrapped on the page (the `wrap` class)
        lines += ["", ":::{dropdown} The whole skeleton file", f"```{{code-block}} python\n:class: wrap\n\n"
                  f"{a.source()}\n```", ":::", ""]
        pages[f"{a.name}.md"] = "\n".join(lines)
    return pages


def reference_pages() -> list[Path]:
    """docs/*.md but api.md (staged as the book's own api page): in the order the README links to them, then any
    it does not link to."""
    pages = {p.stem: p for p in sorted(DOCS.glob("*.md")) if p.name != "api.md"}
    linked = re.findall(r"\]\(docs/([\w-]+)\.md\)", (ROOT / "README.md").read_text())
    return [pages[name] for name in dict.fromkeys(linked + list(pages)) if name in pages]


def stage(src: Path) -> None:
    """Write the book's sources into src (emptied first)."""
    shutil.rmtree(src, ignore_errors=True)
    (src / "tutorials").mkdir(parents=True)
    (src / "assignments").mkdir()
    (src / "docs").mkdir()
    tutorials = sorted((ROOT / "tutorials").glob("[0-9][0-9]_*.py"))
    for p in tutorials:
        shutil.copy2(p, src / "tutorials" / p.name)
    for p in [*DOCS.glob("*.png"), *DOCS.glob("*.gif"), *reference_pages()]:
        shutil.copy2(p, src / "docs" / p.name)
    if (DOCS / "studies").is_dir():
        shutil.copytree(DOCS / "studies", src / "docs" / "studies")
    shutil.copy2(DOCS / "api.md", src / "api.md")
    for name, text in assignment_pages(tutorials).items():
        (src / "assignments" / name).write_text(text)
    overview = (ROOT / "tutorials" / "README.md").read_text()
    overview = re.sub(r"\| `(\d\d_\w+)\.py` \|", r"| [`\1.py`](\1.py) |", overview)
    (src / "tutorials" / "README.md").write_text(
        overview + "\n```{toctree}\n:hidden:\n\n" + "\n".join(p.stem for p in tutorials) + "\n```\n")
    contents = ["tutorials/README", *(f"docs/{p.stem}" for p in reference_pages()), "assignments/index", "api"]
    (src / "index.md").write_text((ROOT / "README.md").read_text() + "\n```{toctree}\n:hidden:\n\n"
                                  + "\n".join(contents) + "\n```\n")


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: python docs/build.py [BUILD_DIR]", file=sys.stderr)
        return 2
    build = Path(argv[0]) if argv else DOCS / "_build"
    stage(build / "src")
    status = build_main(["-b", "html", "-E", "-c", str(DOCS), str(build / "src"), str(build / "html")])
    if status == 0:
        print(f"the book: {build / 'html' / 'index.html'}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
