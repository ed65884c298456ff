#!/usr/bin/env python3
"""Execute the book's notebooks in place and stamp them with a freshness fingerprint.

    python scripts/run_notebooks.py                 # every notebook in _toc.yml
    python scripts/run_notebooks.py chapters/01_linear_models.ipynb

Each notebook is run top to bottom in a fresh kernel (its own folder as working directory,
2 torch threads as on the reference CPU) and saved with its outputs. Its metadata gets

    "nnopt": {"fingerprint": <sha256 of nnopt's sources and the notebook's code>,
              "execution_seconds": <wall time>}

``tests/test_notebooks_fresh.py`` recomputes the fingerprint and fails when the code has
changed since the outputs were stored. Stored outputs are thus always what the current code
produces.

    python scripts/run_notebooks.py --large _build/large [NOTEBOOK ...]

runs the notebooks with ``NNOPT_SCALE=large`` instead and writes the executed copies into the
given folder, leaving the stored notebooks alone. A notebook whose cell fails is saved up to
the failure, the error is printed, the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.book_files import book_notebooks, notebook_client, notebook_fingerprint  # noqa: E402


def execute(path: Path, timeout: int, large_dir: Path | None = None) -> float:
    """Run one notebook at the default size and store it in place, fingerprinted; with
    ``large_dir``, run it at ``NNOPT_SCALE=large`` and write the copy there instead."""
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("nnopt", None)
    # stored outputs are always those of the default size
    client = notebook_client(nb, path, timeout, scale="default" if large_dir is None else "large")
    start = time.perf_counter()
    try:
        client.execute()
    finally:
        seconds = time.perf_counter() - start
        if large_dir is not None:  # saved even after a failure, to show where it stopped
            nb.metadata["nnopt"] = {"scale": "large", "execution_seconds": round(seconds, 1)}
            large_dir.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, large_dir / path.name)
    if large_dir is None:
        nb.metadata["nnopt"] = {
            "fingerprint": notebook_fingerprint(nb),
            "execution_seconds": round(seconds, 1),
        }
        nbformat.write(nb, path)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds per cell (default 900; 3600 with --large, whose parity "
                             "experiment in chapter 4 runs about 20 minutes in one cell on a 2-core CPU)")
    parser.add_argument("--large", type=Path, metavar="DIR", default=None,
                        help="run with NNOPT_SCALE=large and write the executed copies into DIR")
    args = parser.parse_args()
    if args.timeout is None:
        args.timeout = 900 if args.large is None else 3600
    paths = args.notebooks or book_notebooks()
    failed = []
    for path in paths:
        try:
            seconds = execute(path.resolve(), args.timeout, args.large)
        except (CellExecutionError, CellTimeoutError) as err:
            if args.large is None:
                raise
            failed.append(path)
            print(f"{path}: FAILED at the large size\n{err}", flush=True)
            continue
        print(f"{path}: executed in {seconds:.1f} s", flush=True)
    if failed:
        print("failed:", ", ".join(map(str, failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
