"""nnopt.plotting: the style is applied and figures have the requested grid."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib as mpl  # noqa: E402

from nnopt.plotting import COLORS, figure, use_book_style  # noqa: E402


def test_style_and_figure_grid():
    use_book_style()
    assert mpl.rcParams["axes.prop_cycle"].by_key()["color"][0] == COLORS[0]
    fig, axes = figure(ncols=3, nrows=2, width=2.0, height=1.5)
    assert axes.shape == (2, 3)
    assert tuple(fig.get_size_inches()) == (6.0, 3.0)
