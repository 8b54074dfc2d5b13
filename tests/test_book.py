"""The book, built and read in a real browser: the README's Book command builds it in smoke mode, and headless
Chromium opens every page and checks what a reader would see: math typeset by MathJax (no raw `$$` or `\\(` left
in the visible text), every image loaded, every internal link pointing at a page (and anchor) that exists, and no
JavaScript error or failed request (the network is closed: everything must be served from the build). At 1280 px,
with every collapsed block opened, no display equation and no code block is wider than its box (no sideways
scrollbar), and no page shows a warning or anything a cell wrote to stderr.

Needs the docs extra (Sphinx, myst-nb), Playwright (the Python package only: it drives the system's Chromium,
`/usr/bin/chromium`, Debian's `chromium` package; never `playwright install`). Under CI=true a missing browser or
package fails the test instead of skipping it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from conftest import require

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TUTORIALS = sorted(p.stem for p in ROOT.glob("tutorials/[0-9][0-9]_*.py"))
REFERENCE = sorted(p.stem for p in ROOT.glob("docs/*.md") if p.name != "api.md")  # the README's links: docs/NAME.md
BUILD_TIMEOUT = 900  # seconds for the smoke build (about 2 minutes on 2 idle cores)
VIEWPORT = {"width": 1280, "height": 900}  # a laptop's browser window: the width the book is read at


def book_command() -> str:
    """The first shell block after the README heading that contains 'Book'."""
    readme = (ROOT / "README.md").read_text()
    heading = re.search(r"^#+ .*\bBook\b.*$", readme, re.M)
    assert heading, "README.md: no heading containing 'Book'"
    block = re.search(r"```(?:bash|sh|shell)\n(.*?)\n```", readme[heading.end():], re.S)
    assert block, "README.md: no shell code block after the Book heading"
    return block.group(1).strip()


def test_the_readme_is_a_front_page() -> None:
    """Under 150 lines, with the two commands CI and reviewers run, a picture, and a link to every reference page
    of the book (docs/NAME.md: the same link works on GitHub and in the book)."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 150, len(readme.splitlines())
    for command in ("pip install -e . && minidt train", 'pip install -e ".[test]" && pytest'):
        assert f"```bash\n{command}\n```" in readme, command
    assert re.search(r"!\[[^]]*\]\(docs/\w+\.(png|gif)\)", readme), "no picture"
    unlinked = [name for name in REFERENCE if f"](docs/{name}.md)" not in readme]
    assert REFERENCE and not unlinked, f"README.md links to no docs/NAME.md for {unlinked}"


@pytest.fixture(scope="module")
def book(tmp_path_factory) -> Path:
    """Build the book exactly as the README says, in smoke mode, into a temporary directory; -> its html/."""
    require("sphinx")
    require("myst_nb")
    install, build = (part.strip() for part in book_command().split("&&"))
    assert install == 'pip install -e ".[docs]"', install  # the test environment has the docs extra already
    assert build == "python docs/build.py", build
    out = tmp_path_factory.mktemp("book")
    env = dict(os.environ, MINIDT_SMOKE="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "docs/build.py", str(out)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, f"the book build failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    html = out / "html"
    assert (html / "index.html").is_file(), sorted(p.name for p in html.iterdir())
    return html


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not os.path.exists(CHROMIUM):
        message = f"no Chromium at {CHROMIUM}: apt-get install chromium (.ci/run does)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    sync_api = require("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        profile = tmp_path_factory.mktemp("chromium-profile")  # a fresh --user-data-dir
        context = p.chromium.launch_persistent_context(str(profile), executable_path=CHROMIUM, headless=True,
                                                       args=FLAGS, viewport=VIEWPORT)
        yield context
        context.close()


def _pages(html: Path) -> list[str]:
    pages = [f"tutorials/{name}.html" for name in TUTORIALS]
    pages += [f"docs/{name}.html" for name in REFERENCE]
    pages += ["index.html", "tutorials/README.html", "api.html"]
    pages += sorted(str(p.relative_to(html)) for p in (html / "assignments").glob("*.html"))
    return pages


def test_the_book_has_a_page_per_tutorial_and_assignment(book: Path) -> None:
    from minidt.coursework import assignments

    missing = [p for p in _pages(book) if not (book / p).is_file()]
    missing += [f"assignments/{name}.html" for name in assignments() if not (book / "assignments" /
                                                                            f"{name}.html").is_file()]
    assert not missing, f"pages missing from the book: {missing}"


READ_PAGE = """async () => {
    if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
    for (const img of document.images) img.loading = "eager";
    await Promise.all([...document.images].map(img => img.decode().catch(() => null)));
    return {
        text: document.body.innerText,
        math: document.querySelectorAll("mjx-container").length,
        images: [...document.images].map(img => [img.getAttribute("src"), img.naturalWidth]),
        links: [...document.querySelectorAll("a[href]")].map(a => a.getAttribute("href")),
        ids: [...document.querySelectorAll("[id]")].map(e => e.id),
    };
}"""


def _ids(path: Path) -> set[str]:
    return set(re.findall(r'\bid="([^"]+)"', path.read_text()))


@pytest.mark.parametrize("page", [f"tutorials/{name}.html" for name in TUTORIALS]
                         + [f"docs/{name}.html" for name in REFERENCE] + ["index.html", "api.html"])
def test_page_reads_in_a_browser(browser, book: Path, page: str) -> None:  # no browser: fail before building
    path = book / page
    errors: list[str] = []
    tab = browser.new_page()
    tab.on("pageerror", lambda e: errors.append(f"JavaScript error: {e}"))
    tab.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    tab.on("requestfailed", lambda r: errors.append(f"failed request: {r.url} ({r.failure})"))
    tab.goto(path.as_uri(), wait_until="load")
    seen = tab.evaluate(READ_PAGE)
    tab.close()

    assert not errors, f"{page}: {errors}"
    for raw in ("$$", "\\(", "\\["):
        assert raw not in seen["text"], f"{page}: raw math {raw!r} left in the visible text (MathJax did not run)"
    if page.startswith("tutorials/"):
        assert seen["math"] > 0, f"{page}: no typeset math (mjx-container) at all"
        assert seen["images"], f"{page}: no figure"
        assert "Exercises" in seen["text"], f"{page}: no Exercises section"
    broken = [src for src, width in seen["images"] if width == 0]
    assert not broken, f"{page}: images that did not load: {broken}"
    bad = []
    for href in seen["links"]:
        url = urlsplit(href)
        if url.scheme or href.startswith("//"):
            continue  # external (http, mailto): not ours to check offline
        target = (path.parent / unquote(url.path)).resolve() if url.path else path
        if target.is_dir():
            target = target / "index.html"
        if not target.is_file():
            bad.append(href)
        elif url.fragment and url.fragment not in (set(seen["ids"]) if target == path else _ids(target)):
            bad.append(href)
    assert not bad, f"{page}: internal links that lead nowhere: {sorted(set(bad))}"


MEASURE_PAGE = """async () => {
    if (window.MathJax && MathJax.startup) await MathJax.startup.promise;
    for (const d of document.querySelectorAll("details")) d.open = true;  // collapsed cells count too
    const wide = [];
    const boxes = [...document.querySelectorAll("article mjx-container[display='true'], article div.math")]
        .map(e => ["equation", e]).concat([...document.querySelectorAll("article pre")].map(e => ["code", e]));
    for (const [kind, e] of boxes) {
        if (e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1) {
            const longest = e.innerText.split("\\n").reduce((a, b) => b.length > a.length ? b : a, "");
            wide.push(`${kind} ${e.scrollWidth} px in ${e.clientWidth} px: ${longest.slice(0, 90)}`);
        }
    }
    const outputs = [...document.querySelectorAll("div.cell_output")].map(e => e.innerText);
    return {
        wide: wide,
        stderr: [...document.querySelectorAll("div.output.stderr")].map(e => e.innerText.slice(0, 200)),
        warnings: outputs.filter(t => /Warning\\b/.test(t)).map(t => t.slice(0, 200)),
    };
}"""


def test_every_page_fits_its_column_and_prints_no_warning(browser, book: Path) -> None:
    """Display equations and code blocks fit their boxes (scrollWidth against clientWidth, as the browser reports
    them, with every collapsed block open), and no cell output holds stderr or a warning."""
    problems = []
    tab = browser.new_page()
    for page in _pages(book):
        tab.goto((book / page).as_uri(), wait_until="load")
        seen = tab.evaluate(MEASURE_PAGE)
        problems += [f"{page}: {w}" for w in seen["wide"]]
        problems += [f"{page}: stderr output: {t!r}" for t in seen["stderr"]]
        problems += [f"{page}: a warning in the output: {t!r}" for t in seen["warnings"]]
    tab.close()
    assert not problems, "\n".join(problems)
