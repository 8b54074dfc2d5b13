"""How a tutorial shows a figure (minidt.plots.figure_dir and show): figures/ beside the tutorial file, whatever
the working directory; beside the notebook (its working directory) when there is no __file__; $MINIDT_FIGURES
overrides; show() writes the PNG and closes the figure."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from minidt.plots import figure_dir, show


def test_figure_dir_is_beside_the_tutorial(tmp_path, monkeypatch):
    monkeypatch.delenv("MINIDT_FIGURES", raising=False)
    (tmp_path / "tutorials").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert figure_dir(str(tmp_path / "tutorials" / "01_x.py")) == tmp_path / "tutorials" / "figures"
    assert figure_dir(None) == tmp_path / "elsewhere" / "figures"  # a notebook: its own folder
    monkeypatch.setenv("MINIDT_FIGURES", str(tmp_path / "override"))
    assert figure_dir(str(tmp_path / "tutorials" / "01_x.py")) == tmp_path / "override"
    assert (tmp_path / "override").is_dir()


def test_show_writes_a_png_and_closes_the_figure(tmp_path):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    show(fig, tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
