#!/usr/bin/env python3
"""Run chapters with every seed shifted: do their statistical assertions hold for other draws?

    python scripts/seed_audit.py 1                              # every chapter, seeds + 1000
    python scripts/seed_audit.py 2 chapters/08_pl.ipynb         # one chapter, seeds + 2000

A chapter asserts what it claims, but a claim checked on one random draw may hold only for that
draw. This script rewrites each code cell of a copy of the notebook so that
``seed_everything(s)`` becomes ``seed_everything(s + 1000·shift)`` and ``manual_seed(e)``
becomes ``manual_seed((e) + 1000·shift)``, executes the copy at the default size (2 threads, as
``run_notebooks.py`` does) to the end, errors or not, and reports, per notebook, every cell
that failed and its error (a later cell may fail only because an earlier one did). The copies go to ``_build/seed_audit/shift<shift>/``; the stored notebooks are not
touched. A failure is a claim to re-examine: either it holds only for the stored seed (then the
text says so, or the experiment averages over more draws) or the code is wrong. Seeds passed as
arguments to ``nnopt`` functions (``seed=0``) are not shifted. Exit status 1 if any notebook
failed.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.book_files import notebook_client  # noqa: E402

_SEED_EVERYTHING = re.compile(r"seed_everything\((\d+)\)")
_MANUAL_SEED = re.compile(r"manual_seed\(([^()]*(?:\([^()]*\))?[^()]*)\)")


def shift_seeds(source: str, shift: int) -> tuple[str, int]:
    """``source`` with every literal seed moved by 1000·shift, and the number of seeds moved."""
    offset = 1000 * shift
    source, n_global = _SEED_EVERYTHING.subn(lambda m: f"seed_everything({int(m.group(1)) + offset})", source)
    source, n_manual = _MANUAL_SEED.subn(lambda m: f"manual_seed(({m.group(1)}) + {offset})", source)
    return source, n_global + n_manual


def failed_cells(nb: nbformat.NotebookNode) -> list[str]:
    """One line per code cell with an error output: its index, the error and the failing line."""
    out = []
    for i, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                lines = [re.sub(r"\x1b\[[0-9;]*m", "", line)
                         for entry in output.get("traceback", []) for line in entry.split("\n")]
                arrows = [line.strip() for line in lines if "--->" in line]
                where = arrows[-1] if arrows else ""
                out.append(f"  cell {i}: {output['ename']}: {output['evalue'][:200]}  {where}")
    return out


def audit(path: Path, shift: int, out_dir: Path, timeout: int) -> list[str]:
    """Execute a seed-shifted copy of ``path`` to the end; the failed cells (empty if none)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.source, _ = shift_seeds(cell.source, shift)
    notebook_client(nb, path, timeout, allow_errors=True).execute()
    nbformat.write(nb, out_dir / path.name)
    return failed_cells(nb)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("shift", type=int, help="seeds move by 1000 times this (>= 1)")
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args()
    if args.shift < 1:
        parser.error("shift must be >= 1")
    paths = [p.resolve() for p in args.notebooks] or sorted((ROOT / "chapters").glob("*.ipynb"))
    out_dir = ROOT / "_build" / "seed_audit" / f"shift{args.shift}"
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in paths:
        start = time.perf_counter()
        errors = audit(path, args.shift, out_dir, args.timeout)
        status = "ok" if not errors else f"FAILED in {len(errors)} cell(s)"
        print(f"{path.name}: {status} ({time.perf_counter() - start:.0f} s)", flush=True)
        if errors:
            failed += 1
            print("\n".join(errors), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
