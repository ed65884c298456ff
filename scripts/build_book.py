#!/usr/bin/env python3
"""Build the book strictly (-W -n --keep-going) from a clean output folder.

    python scripts/build_book.py                    # execute every notebook, into _build/
    python scripts/build_book.py --stored --out DIR # use the stored outputs (for the tests)

With ``--stored`` the notebooks are not re-executed: the build renders the outputs stored in
them, which ``tests/test_notebooks_fresh.py`` proves are what the current code produces.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def build(out: Path, *, stored: bool) -> int:
    """Run jupyter-book into ``out/_build`` (deleted first); return its exit status."""
    if (out / "_build").exists():
        shutil.rmtree(out / "_build")
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    if stored:
        config["execute"]["execute_notebooks"] = "off"
    with tempfile.NamedTemporaryFile("w", suffix=".yml", delete=False, dir=ROOT) as handle:
        yaml.safe_dump(config, handle, sort_keys=False, allow_unicode=True)
        config_path = Path(handle.name)
    jb = Path(sys.executable).with_name("jupyter-book")
    try:
        cmd = [str(jb), "build", str(ROOT), "--path-output", str(out), "--config",
               str(config_path), "-W", "-n", "--keep-going", "--all"]
        return subprocess.run(cmd, cwd=ROOT).returncode
    finally:
        config_path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser(description="Build the book strictly.")
    parser.add_argument("--stored", action="store_true", help="render stored outputs, no execution")
    parser.add_argument("--out", type=Path, default=ROOT, help="output root (HTML in OUT/_build/html)")
    args = parser.parse_args()
    status = build(args.out.resolve(), stored=args.stored)
    html = args.out.resolve() / "_build" / "html" / "index.html"
    if status == 0:
        print(f"\nThe book is built: open {html}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
