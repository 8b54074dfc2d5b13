"""Sphinx configuration of the minidt book; `python docs/build.py` stages the sources and runs Sphinx with it.

myst-nb reads the tutorials, jupytext percent files, directly (nb_custom_formats) and executes every one of them
at build time (MINIDT_SMOKE=1 at tiny sizes), so each page shows the outputs and figures of a real run; a failing
tutorial fails the build. MathJax is served from the build itself (sphinx-mathjax-offline): no CDN.
"""

project = "minidt"
author = "the minidt authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx_design", "sphinx-mathjax-offline"]

html_theme = "furo"
html_title = "minidt"
html_static_path = ["_static"]
html_css_files = ["minidt.css"]  # wrap output and text blocks at the column (the file says why)

myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3  # the README's and tutorials' section links

nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "force"  # the .py files hold no outputs: run every tutorial
nb_execution_timeout = -1  # tutorial 09 trains for minutes at full size
nb_execution_raise_on_error = True  # a tutorial whose checks fail fails the book
nb_execution_show_tb = True
nb_merge_streams = True
nb_code_prompt_show = "Show the solution"  # the exercises; the set-up and the reference code say so
nb_code_prompt_hide = "Hide"

exclude_patterns = ["**/figures/**", "**/runs/**", "jupyter_execute/**"]
autodoc_member_order = "bysource"
highlight_language = "text"  # unlabelled blocks (the README's tables and usage lines) are not Python
autodoc_typehints = "signature"


def literal_docstring(app, what, name, obj, options, lines: list[str]) -> None:
    """minidt's docstrings are plain text (shapes, ASCII math, aligned columns), not reStructuredText: show each
    one as written, in a literal block."""
    if lines:
        lines[:] = ["::", ""] + ["    " + line for line in lines] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", literal_docstring)
