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


def test_return_conditioning_plots_success_rates_and_bc_as_a_level_line(tmp_path, monkeypatch):
    """Key-to-Door: success rate against target, no std band; BC: one evaluation with no target, a level line
    (alone, across the dataset's returns); the labels say so."""
    import matplotlib.axes

    from minidt import plots

    labels, ylabels = [], []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_ylabel", lambda self, text, **kw: ylabels.append(text))
    legend = matplotlib.axes.Axes.legend

    def spy(self, *args, **kwargs):
        labels.extend(self.get_legend_handles_labels()[1])
        return legend(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "legend", spy)
    dt = [{"target_return": t, "return_mean": m, "return_std": 0.4, "success_rate": m}
          for t, m in ((0.0, 0.02), (0.5, 0.3), (1.0, 0.6))]
    bc = [{"target_return": None, "return_mean": 0.04, "return_std": 0.2, "success_rate": 0.04}]
    plots.plot_return_conditioning(dt, tmp_path / "dt.png", 1.0, success=True)
    plots.plot_return_conditioning(bc, tmp_path / "bc.png", 1.0, dataset_worst=0.0, success=True)
    plots.plot_return_conditioning([{**bc[0], "return_mean": -800.0, "return_std": 100.0}], tmp_path / "p.png",
                                   -150.0, dataset_worst=-1400.0)
    assert ylabels == ["success rate", "success rate", "achieved return"]
    assert "success rate" in labels and "BC, no target: 0.04" in labels and "BC, no target: -800 +- 100" in labels
    for name in ("dt", "bc", "p"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
