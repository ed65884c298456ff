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
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.book_files import book_notebooks, notebook_fingerprint  # noqa: E402


def execute(path: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("nnopt", None)
    env_threads = {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}
    os.environ.update(env_threads)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    )
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    nb.metadata["nnopt"] = {
        "fingerprint": notebook_fingerprint(nb),
        "execution_seconds": round(seconds, 1),
    }
    nbformat.write(nb, path)
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per cell")
    args = parser.parse_args()
    paths = args.notebooks or book_notebooks()
    for path in paths:
        seconds = execute(path.resolve(), args.timeout)
        print(f"{path}: executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
