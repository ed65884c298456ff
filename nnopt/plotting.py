"""One figure style for the whole book.

Every chapter calls :func:`use_book_style` once and draws with matplotlib as usual;
:func:`figure` makes a figure of the book's standard size, and :data:`COLORS` is the
palette (colour-blind safe, from Okabe and Ito) in the order series are drawn.
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
from cycler import cycler

__all__ = ["COLORS", "use_book_style", "figure"]

#: The palette, in the order series are drawn (Okabe–Ito, colour-blind safe).
COLORS = (
    "#0072B2",  # blue
    "#D55E00",  # vermillion
    "#009E73",  # green
    "#CC79A7",  # purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",  # black
    "#F0E442",  # yellow
)

_STYLE: dict[str, Any] = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "savefig.dpi": 150,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "legend.frameon": False,
    "lines.linewidth": 1.8,
    "axes.prop_cycle": cycler(color=list(COLORS)),
}


def use_book_style() -> None:
    """Apply the book's matplotlib style (idempotent)."""
    plt.style.use(_STYLE)


def figure(ncols: int = 1, nrows: int = 1, *, width: float = 6.4, height: float = 4.0,
           **kwargs: Any) -> tuple[plt.Figure, Any]:
    """A figure in the book style with an ``nrows × ncols`` grid of axes.

    ``width`` and ``height`` are per panel, in inches.
    """
    use_book_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             layout="constrained", **kwargs)
    return fig, axes
