"""nnopt ships py.typed, so its annotations must type-check."""

from __future__ import annotations

import subprocess
import sys

from scripts.book_files import ROOT


def test_mypy_on_nnopt():
    result = subprocess.run([sys.executable, "-m", "mypy", "--no-incremental", "nnopt"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
