"""The built book, opened page by page in a real browser (headless Debian Chromium).

The book is built strictly from the stored notebook outputs (which test_notebooks_fresh.py proves
current), served on 127.0.0.1, and every HTML page is loaded. A page fails on:

* a math element that MathJax did not typeset, or a MathJax TeX error;
* a stray ``$`` in the visible text (math that the parser did not recognise);
* a console error or an uncaught page error (except the theme noise in KNOWN_NOISE);
* any request that leaves 127.0.0.1 (it is blocked and reported);
* a local request that fails, or that is still in flight two minutes after the page loaded
  while the server cannot serve it;
* a broken image, or an internal link to a missing page or a missing anchor.

Chromium comes from Debian (``apt-get install chromium``), driven by the ``playwright`` Python
package; no browser is ever downloaded.
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urljoin, urlparse
from urllib.request import urlopen

import pytest
from bs4 import BeautifulSoup

from scripts.build_book import build

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("NNOPT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
]
# Console messages from the theme that say nothing about the book. Keep this list short.
KNOWN_NOISE: tuple[str, ...] = (
    # pydata-sphinx-theme, on a first visit with empty localStorage (no light/dark choice yet)
    "Got invalid theme mode",
)

TEXT_WITHOUT_CODE_JS = """
() => {
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'MJX-CONTAINER', 'MJX-ASSISTIVE-MML', 'TEXTAREA']);
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const parts = [];
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    let el = node.parentElement, hidden = false;
    while (el) { if (skip.has(el.tagName) || el.classList.contains('highlight')) { hidden = true; break; } el = el.parentElement; }
    if (!hidden) parts.push(node.textContent);
  }
  return parts.join(' ');
}
"""

MATH_STATUS_JS = """
async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) { await MathJax.startup.promise; }
  const math = Array.from(document.querySelectorAll('span.math, div.math'));
  return {
    loaded: !!(window.MathJax && MathJax.version),
    total: math.length,
    untypeset: math.filter(m => !m.querySelector('mjx-container')).map(m => m.textContent.slice(0, 80)),
    errors: Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]')).map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 120)),
  };
}
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"Chromium not found at {CHROMIUM}: CI must install it (apt-get install chromium)")
        pytest.skip(f"Chromium not found at {CHROMIUM} (apt-get install chromium)")
    out = tmp_path_factory.mktemp("book")
    assert build(out, stored=True) == 0, "strict build (-W -n --keep-going) failed: see its log above"
    html = out / "_build" / "html"
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield html, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    shutil.rmtree(out, ignore_errors=True)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # type: ignore[no-untyped-def]
        pass


def _pages(html: Path) -> list[str]:
    return sorted(str(p.relative_to(html)) for p in html.rglob("*.html")
                  if "_static" not in p.parts and "_sources" not in p.parts)


def _launch(pw):  # type: ignore[no-untyped-def]
    return pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)


@contextmanager
def _probe_file(path: Path, text: str) -> Iterator[None]:
    """A test page written into the served site for the duration of the block."""
    path.write_text(text)
    try:
        yield
    finally:
        path.unlink()


def _track_requests(page) -> tuple[set, list[str]]:  # type: ignore[no-untyped-def]
    """The page's requests in flight (started, neither finished nor failed) and the URLs of
    those that failed, both kept current."""
    in_flight: set = set()
    failed: list[str] = []

    def on_failed(request):  # type: ignore[no-untyped-def]
        in_flight.discard(request)
        failed.append(request.url)

    page.on("request", lambda r: in_flight.add(r))  # Playwright needs Python functions, not builtins
    page.on("requestfinished", lambda r: in_flight.discard(r))
    page.on("requestfailed", on_failed)
    return in_flight, failed


def _settle(page, in_flight: set, quiet_s: float = 0.5, timeout_s: float = 120.0) -> list[str]:  # type: ignore[no-untyped-def]
    """Wait until no request has been in flight for ``quiet_s``; return the URLs still pending at
    ``timeout_s`` (empty when the page settled).

    This replaces ``wait_for_load_state("networkidle")``, whose Chromium lifecycle event
    occasionally never fires (it hung a CI run for its full 120 s with nothing reported); the
    page's own request events say exactly what, if anything, is still loading.
    """
    step, quiet, waited = 0.1, 0.0, 0.0
    while waited < timeout_s:
        page.wait_for_timeout(step * 1000)  # lets Playwright deliver the request events
        waited += step
        quiet = quiet + step if not in_flight else 0.0
        if quiet >= quiet_s:
            return []
    return sorted(r.url for r in in_flight)


def _served(url: str) -> bool:
    """Whether the local server answers ``url`` with 200 (asked directly, outside the browser).

    A request the browser still reports in flight after :func:`_settle`'s timeout fails the page
    only if the server cannot serve it: a file that is there but whose completion event the
    browser never delivered says nothing about the book, and is printed instead.
    """
    try:
        with urlopen(url, timeout=30) as response:
            ok = response.status == 200
    except OSError:
        ok = False
    print(f"request still in flight after the wait: {url} (served directly: {ok})")
    return ok


def _anchors(path: Path, cache: dict[Path, set[str]]) -> set[str]:
    if path not in cache:
        soup = BeautifulSoup(path.read_text(encoding="utf-8"), "html.parser")
        cache[path] = {t["id"] for t in soup.find_all(id=True)} | {t["name"] for t in soup.find_all("a", attrs={"name": True})}
    return cache[path]


def test_every_page_in_a_real_browser(site):
    from playwright.sync_api import sync_playwright

    html, base = site
    pages = _pages(html)
    assert "intro.html" in pages and any(p.startswith("chapters/") for p in pages)
    problems: list[str] = []
    anchor_cache: dict[Path, set[str]] = {}
    with sync_playwright() as pw:
        browser = _launch(pw)
        context = browser.new_context()
        outside: list[str] = []

        def guard(route):  # type: ignore[no-untyped-def]
            if urlparse(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        for rel in pages:
            soup = BeautifulSoup((html / rel).read_text(encoding="utf-8"), "html.parser")
            refresh = soup.find("meta", attrs={"http-equiv": lambda v: v and v.lower() == "refresh"})
            if refresh is not None:  # a redirect stub (index.html): its target must exist
                target = refresh["content"].split("url=", 1)[-1].strip()
                if not (html / rel).parent.joinpath(target).exists():
                    problems.append(f"{rel}: redirects to missing {target}")
                continue
            page = context.new_page()
            messages: list[str] = []
            page.on("console", lambda m, bag=messages: bag.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e, bag=messages: bag.append(f"page error: {e}"))
            in_flight, failed = _track_requests(page)
            outside.clear()
            page.goto(base + rel, wait_until="load")
            math = page.evaluate(MATH_STATUS_JS)
            problems += [f"{rel}: request never finished and the server does not serve it: {u}"
                         for u in _settle(page, in_flight) if not _served(u)]
            if math["total"] and not math["loaded"]:
                problems.append(f"{rel}: MathJax did not load")
            problems += [f"{rel}: math not typeset: {m!r}" for m in math["untypeset"]]
            problems += [f"{rel}: MathJax error: {e}" for e in math["errors"]]
            text = page.evaluate(TEXT_WITHOUT_CODE_JS)
            if "$" in text:
                i = text.index("$")
                problems.append(f"{rel}: stray '$' in text: ...{text[max(0, i - 60):i + 40]!r}")
            broken = page.evaluate(
                "() => Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.src)")
            problems += [f"{rel}: broken image {src}" for src in broken]
            problems += [f"{rel}: console: {m}" for m in messages if not any(n in m for n in KNOWN_NOISE)]
            problems += [f"{rel}: request left localhost: {u}" for u in outside]
            problems += [f"{rel}: request failed: {u}" for u in failed if urlparse(u).hostname == "127.0.0.1"]
            hrefs = page.evaluate("() => Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
            for href in hrefs:
                target = urlparse(urljoin(base + rel, href))
                if target.hostname != "127.0.0.1" or target.scheme not in ("http", "https"):
                    continue
                path = html / unquote(target.path.lstrip("/"))
                if path.is_dir():
                    path = path / "index.html"
                if not path.exists():
                    problems.append(f"{rel}: broken link {href}")
                elif target.fragment and path.suffix == ".html" and unquote(target.fragment) not in _anchors(path, anchor_cache):
                    problems.append(f"{rel}: link to missing anchor {href}")
            page.close()
        browser.close()
    assert not problems, "\n".join(problems)


def test_the_guard_catches_an_outside_request(site):
    """The checks above can fail: a page that loads a CDN script is reported."""
    from playwright.sync_api import sync_playwright

    html, base = site
    page_text = '<html><body><p>x $y</p><script src="https://cdn.example.org/a.js"></script></body></html>'
    with _probe_file(html / "_probe.html", page_text), sync_playwright() as pw:
        browser = _launch(pw)
        context = browser.new_context()
        outside: list[str] = []
        context.route("**/*", lambda r: (r.continue_() if urlparse(r.request.url).hostname == "127.0.0.1"
                                         else (outside.append(r.request.url), r.abort())))
        page = context.new_page()
        page.goto(base + "_probe.html", wait_until="load")
        assert "$" in page.evaluate(TEXT_WITHOUT_CODE_JS)
        browser.close()
    assert outside == ["https://cdn.example.org/a.js"]


def test_settle_reports_a_request_that_never_finishes(site):
    """The wait can fail: a request held open (a route that never answers) is named, while a page
    whose requests all finish settles with nothing to report."""
    from playwright.sync_api import sync_playwright

    html, base = site
    page_text = '<html><body><script>fetch("_never.txt"); fetch("intro.html");</script></body></html>'
    with _probe_file(html / "_probe_hang.html", page_text), sync_playwright() as pw:
        browser = _launch(pw)
        context = browser.new_context()
        context.route("**/_never.txt", lambda route: None)  # neither continued nor aborted
        page = context.new_page()
        in_flight, _ = _track_requests(page)
        page.goto(base + "_probe_hang.html", wait_until="load")
        assert _settle(page, in_flight, timeout_s=3.0) == [base + "_never.txt"]
        assert not _served(base + "_never.txt") and _served(base + "intro.html")
        quiet_page = context.new_page()
        quiet, failed = _track_requests(quiet_page)
        quiet_page.goto(base + "intro.html", wait_until="load")
        assert _settle(quiet_page, quiet, timeout_s=60.0) == [] and failed == []
        browser.close()
