"""Project-wide pytest setup: fixed thread count and the per-notebook execution-time table."""

from __future__ import annotations

import os
from collections import defaultdict

# Float32 results depend on the thread count: notebooks run (and were stored) with the reference
# CPU's two threads unless the caller chose otherwise (tasks.py gives unit-test workers one each).
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")

_notebook_seconds: dict[str, float] = defaultdict(float)
_notebook_failed: dict[str, int] = defaultdict(int)


def pytest_runtest_logreport(report):  # type: ignore[no-untyped-def]
    path = report.nodeid.split("::", 1)[0]
    if path.endswith(".ipynb"):
        _notebook_seconds[path] += report.duration
        if report.failed:
            _notebook_failed[path] += 1


def pytest_terminal_summary(terminalreporter):  # type: ignore[no-untyped-def]
    if not _notebook_seconds:
        return
    tr = terminalreporter
    tr.section("notebook execution times (nbval)")
    width = max(len(p) for p in _notebook_seconds)
    tr.write_line(f"{'notebook':<{width}}  {'seconds':>8}  status")
    for path in sorted(_notebook_seconds):
        status = "FAILED" if _notebook_failed[path] else "ok"
        tr.write_line(f"{path:<{width}}  {_notebook_seconds[path]:8.1f}  {status}")
    tr.write_line(f"{'total':<{width}}  {sum(_notebook_seconds.values()):8.1f}")
