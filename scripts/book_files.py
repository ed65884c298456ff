"""What the book is made of: its notebooks (from _toc.yml) and their freshness fingerprint."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def toc_files(toc: Path = ROOT / "_toc.yml") -> list[str]:
    """Every file named in the table of contents, root first, without suffix."""
    data = yaml.safe_load(toc.read_text(encoding="utf-8"))
    found = [data["root"]]

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "file" in node:
                found.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []):
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(data)
    return found


def book_notebooks() -> list[Path]:
    """The notebooks of the book, in table-of-contents order."""
    paths = [ROOT / f"{name}.ipynb" for name in toc_files()]
    return [p for p in paths if p.exists()]


def library_digest() -> str:
    """sha256 over every source file of the nnopt package (path and content)."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "nnopt").rglob("*.py")):
        h.update(str(path.relative_to(ROOT)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def notebook_fingerprint(nb: Any) -> str:
    """sha256 of nnopt's sources and the notebook's code cells, in order.

    Markdown may change without re-execution; code or library changes may not.
    """
    h = hashlib.sha256(library_digest().encode())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"]
            if isinstance(source, list):
                source = "".join(source)
            h.update(source.strip().encode())
            h.update(b"\x00")
    return h.hexdigest()


def notebook_client(nb: Any, path: Path, timeout: int, *, scale: str = "default",
                    allow_errors: bool = False) -> Any:
    """An ``nbclient.NotebookClient`` that runs ``nb`` as the book's notebooks are run.

    The kernel starts in the notebook's folder and inherits the environment, which is set to
    2 torch threads (as on the reference CPU), a fixed hash seed and ``NNOPT_SCALE=scale``.
    """
    from nbclient import NotebookClient

    os.environ.update({"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "PYTHONHASHSEED": "0",
                       "NNOPT_SCALE": scale})
    return NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=allow_errors,
                          resources={"metadata": {"path": str(path.parent)}})
