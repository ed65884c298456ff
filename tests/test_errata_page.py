"""The errata page lists every erratum box of every chapter."""

from __future__ import annotations

import re

import nbformat

from scripts.book_files import ROOT

_BOX = re.compile(r"```\{admonition\} Erratum")
_LABEL = re.compile(r"\((ch\d\d)\)=")


def _boxes_per_chapter() -> dict[str, int]:
    counts = {}
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        label = _LABEL.match(nb.cells[0].source)
        assert label, f"{path.name} does not start with its (chNN)= label"
        counts[label.group(1)] = sum(len(_BOX.findall(c.source)) for c in nb.cells
                                     if c.cell_type == "markdown")
    return counts


def test_every_erratum_box_has_a_row_on_the_errata_page():
    """A box may cover several rows (one row per corrected equation), never the reverse."""
    page = (ROOT / "back" / "errata.md").read_text(encoding="utf-8")
    table = page.split("## Claims we could not derive")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "{ref}`ch" in line]
    boxes = _boxes_per_chapter()
    assert sum(boxes.values()) >= 30
    short = {ch: (n, sum(f"{{ref}}`{ch}`" in r for r in rows)) for ch, n in boxes.items()}
    short = {ch: v for ch, v in short.items() if v[1] < v[0]}
    assert not short, f"chapters with more erratum boxes than errata-page rows (boxes, rows): {short}"


def test_readme_states_the_number_of_errata():
    page = (ROOT / "back" / "errata.md").read_text(encoding="utf-8")
    table = page.split("## Claims we could not derive")[0]
    n_rows = sum(1 for line in table.splitlines() if line.startswith("| ") and "{ref}`ch" in line)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"errata ({n_rows} found in" in readme
