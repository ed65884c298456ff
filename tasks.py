#!/usr/bin/env python3
"""The project's two commands, with nothing but Python 3.10+ needed to start them.

    python3 tasks.py book    build the book (executing every notebook) into _build/html
    python3 tasks.py test    run every test: unit, property, notebooks (nbval), strict build, browser

Both create the virtual environment .venv on first use (or when requirements.txt or
pyproject.toml change) and install what they need into it: the CPU build of torch, pinned in
requirements.txt, then nnopt itself in editable mode.

    python3 tasks.py notebooks [PATH ...]   re-execute notebooks and store their outputs
    python3 tasks.py notebooks --large DIR [PATH ...]
                                            run them at NNOPT_SCALE=large into DIR instead
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
PY = VENV / "bin" / "python"
STAMP = VENV / ".nnopt-installed"
CHROMIUM = Path("/usr/bin/chromium")


def run(*cmd: str | Path, env: dict[str, str] | None = None) -> int:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    return subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env).returncode


def ensure_venv() -> None:
    """Create .venv and install requirements.txt + nnopt, unless already up to date."""
    digest = hashlib.sha256(
        (ROOT / "requirements.txt").read_bytes() + (ROOT / "pyproject.toml").read_bytes()
    ).hexdigest()
    if STAMP.exists() and STAMP.read_text() == digest and PY.exists():
        return
    if not PY.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = [PY, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    for cmd in (pip + ["--upgrade", "pip"], pip + ["-r", "requirements.txt"],
                pip + ["--no-deps", "-e", "."]):
        if run(*cmd) != 0:
            sys.exit("installation failed")
    run(PY, "-m", "ipykernel", "install", "--sys-prefix", "--name", "python3")
    STAMP.write_text(digest)


def ensure_chromium() -> None:
    """Install Debian's chromium for the browser check when we can (root with apt-get)."""
    if CHROMIUM.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        if run("apt-get", "update", "-qq", env=env) == 0:
            run("apt-get", "install", "-y", "-qq", "chromium", env=env)
    if not CHROMIUM.exists():
        print("warning: /usr/bin/chromium is missing (apt-get install chromium); "
              "the browser check will be skipped, or fail under CI", flush=True)


def book() -> int:
    ensure_venv()
    return run(PY, "scripts/build_book.py")


def _threads(n: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(n), "MKL_NUM_THREADS": str(n), "PYTHONHASHSEED": "0"}


def test(extra: list[str]) -> int:
    """Unit, property, freshness, typing and browser tests on two processes of one thread each;
    then every notebook under nbval, one at a time on two threads, as they were stored.

    Two notebook kernels of two threads each on a 2-core machine oversubscribe it so badly that
    a 20-second chapter takes minutes, hence the second, serial run.
    """
    ensure_venv()
    ensure_chromium()
    pytest = [PY, "-m", "pytest", "-p", "no:cacheprovider"]
    unit = run(*pytest, "-n", "2", "--dist", "loadfile", "tests", *extra, env=_threads(1))
    notebooks = run(*pytest, "-p", "no:xdist", "--nbval-lax", "chapters", "back", *extra,
                    env=_threads(2))
    return unit or notebooks


def notebooks(paths: list[str]) -> int:
    ensure_venv()
    return run(PY, "scripts/run_notebooks.py", *paths)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in {"book", "test", "notebooks"}:
        print(__doc__)
        return 2
    command, rest = argv[0], argv[1:]
    if command == "book":
        return book()
    if command == "test":
        return test(rest)
    return notebooks(rest)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
