"""scripts/run_notebooks.py: stored runs are stamped; --large runs elsewhere and reports failures."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat

from scripts.book_files import ROOT, notebook_fingerprint

# prints the scale it ran at, then fails only at the large size
CELLS = [
    "import nnopt.device\nprint(nnopt.device.scale())",
    "assert nnopt.device.scale() == 'default', 'a claim of the default size'",
]


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in CELLS]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def _run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    # a reader's shell may have NNOPT_SCALE=large exported: the stored run must not inherit it
    env = {**os.environ, "NNOPT_SCALE": "large"}
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "run_notebooks.py"),
                           *map(str, args)], capture_output=True, text=True, timeout=300, env=env)


def test_stored_run_is_at_the_default_size_with_its_fingerprint(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "probe.ipynb")
    done = _run(path)
    assert done.returncode == 0, done.stderr[-2000:]
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].outputs[0]["text"].strip() == "default"
    assert nb.metadata["nnopt"]["fingerprint"] == notebook_fingerprint(nb)


def test_large_run_writes_a_copy_and_reports_the_failure(tmp_path: Path) -> None:
    path = _notebook(tmp_path / "probe.ipynb")
    before = path.read_text(encoding="utf-8")
    out = tmp_path / "large"
    done = _run("--large", out, path)
    assert done.returncode == 1
    assert "FAILED at the large size" in done.stdout and "a claim of the default size" in done.stdout
    assert path.read_text(encoding="utf-8") == before  # the stored notebook is untouched
    copy = nbformat.read(out / "probe.ipynb", as_version=4)
    assert copy.cells[0].outputs[0]["text"].strip() == "large"
    assert copy.cells[1].outputs[0]["output_type"] == "error"  # saved up to the failure
    assert copy.metadata["nnopt"]["scale"] == "large" and "fingerprint" not in copy.metadata["nnopt"]
