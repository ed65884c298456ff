"""Stored notebook outputs must be what the current code produces.

``scripts/run_notebooks.py`` stamps each executed notebook with a fingerprint of nnopt's sources
and the notebook's code cells. If either changed after the outputs were stored, the fingerprint
no longer matches and this test names the notebook to re-run. It also checks that the stored run
is complete: every code cell executed once, in order, with no error output.
"""

from __future__ import annotations

import json
import re

import pytest

from scripts.book_files import ROOT, book_notebooks, notebook_fingerprint, toc_files

NOTEBOOKS = book_notebooks()


def test_every_toc_entry_exists() -> None:
    missing = [f for f in toc_files()
               if not (ROOT / f"{f}.ipynb").exists() and not (ROOT / f"{f}.md").exists()]
    assert not missing, f"_toc.yml names files that do not exist: {missing}"


def test_every_chapter_notebook_is_in_the_toc() -> None:
    listed = {str(p.relative_to(ROOT)) for p in NOTEBOOKS}
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "chapters").glob("*.ipynb")}
    assert on_disk <= listed, f"chapters missing from _toc.yml: {sorted(on_disk - listed)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_outputs_are_current(path) -> None:  # type: ignore[no-untyped-def]
    nb = json.loads(path.read_text(encoding="utf-8"))
    stamp = nb.get("metadata", {}).get("nnopt", {})
    hint = f"re-run: python scripts/run_notebooks.py {path.relative_to(ROOT)}"
    assert "fingerprint" in stamp, f"{path.name} was not executed by run_notebooks.py; {hint}"
    assert stamp["fingerprint"] == notebook_fingerprint(nb), (
        f"{path.name}: nnopt or the notebook's code changed since its outputs were stored; {hint}"
    )
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: cells not run once, in order; {hint}"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"{path.name} has stored error outputs"


def test_fingerprint_changes_with_the_code() -> None:
    nb = json.loads(NOTEBOOKS[0].read_text(encoding="utf-8"))
    before = notebook_fingerprint(nb)
    first_code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    first_code["source"] = "".join(first_code["source"]) + "\nx = 1"
    assert notebook_fingerprint(nb) != before


def test_verified_equations_page_lists_the_chapters_current_ledgers() -> None:
    """The back-matter page renders the ledgers stored in the chapters' outputs; its own
    fingerprint does not cover them, so a chapter whose checks change leaves it stale."""
    from nnopt.symbolic import collect_ledgers

    page = ROOT / "back" / "verified_equations.ipynb"
    nb = json.loads(page.read_text(encoding="utf-8"))
    stored = "".join(
        "".join(o["data"]["text/markdown"]) for c in nb["cells"] if c["cell_type"] == "code"
        for o in c.get("outputs", []) if "text/markdown" in o.get("data", {}))
    chapters = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
    ledgers = collect_ledgers(chapters)
    total = sum(len(led["checks"]) for led in ledgers)
    hint = f"re-run: python scripts/run_notebooks.py {page.relative_to(ROOT)}"
    assert stored.startswith(f"**{total} steps verified in {len(ledgers)} chapters.**"), hint
    rows = [line for line in stored.splitlines() if line.startswith("| [")]
    expected = [f"({c['label']}) | {c['kind']} | {c['note']} |"
                for led in ledgers for c in led["checks"]]
    assert len(rows) == len(expected), hint
    stale = [(r, e) for r, e in zip(rows, expected) if not r.endswith(e)]
    assert not stale, f"first stale row {stale[0]}; {hint}"


@pytest.mark.parametrize("doc", ["README.md", "intro.md"])
def test_chapter_tables_give_the_stored_execution_times(doc: str) -> None:
    """The chapter tables of the README and of the book's introduction quote each chapter's CPU
    time; it must be the one its stored run recorded (rounded to a second), so re-executing a
    chapter without updating the tables fails here."""
    lines = (ROOT / doc).read_text(encoding="utf-8").splitlines()
    stale = []
    for path in sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb")):
        row = [line for line in lines if f"chapters/{path.stem}" in line and line.startswith("|")]
        assert len(row) == 1, f"{doc}: expected one table row for {path.name}, found {len(row)}"
        quoted = re.search(r"\| (\d+) s \|", row[0])
        assert quoted, f"{doc}: no CPU time in the row of {path.name}"
        seconds = json.loads(path.read_text(encoding="utf-8"))["metadata"]["nnopt"]["execution_seconds"]
        if int(quoted.group(1)) != int(seconds + 0.5):
            stale.append(f"{path.name}: {quoted.group(1)} s quoted, {seconds} s stored")
    assert not stale, f"{doc}: {stale}"
