"""Sphinx extension: drop repeated inline scripts from every page.

Jupyter Book v1 registers sphinx-thebe's configuration script twice, and the second copy of
``const THEBE_JS_URL = ...`` is a JavaScript error on every page ("Identifier has already been
declared"). This removes exact repeats of a script: same source (an inline script has filename None or "") and
same inline body.
"""

from __future__ import annotations

from typing import Any


def _unique_scripts(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen: set[tuple[str, str]] = set()
    unique = []
    for script in scripts:
        key = (str(getattr(script, "filename", script) or ""),  # None and "" both mean inline
               str(getattr(script, "attributes", {}).get("body", "")))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _unique_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
