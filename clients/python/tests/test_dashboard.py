"""The dashboard page in a real headless Chromium against the real daemon.

The page marks a successful render on <body> (data-render="ok", data-layers="...") and writes
script errors into the DOM (data-errors); Chromium's --enable-logging=stderr prints every console
message as a CONSOLE line, and a healthy page prints none. Set MOE_DASHBOARD_SCREENSHOT=PATH to
keep the screenshot (scripts/test-adopt --screenshot writes docs/dashboard.png that way).
"""

from __future__ import annotations

import html.parser
import os
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from conftest import CLIENT_ROOT

LAYERS, EXPERTS = 8, 64


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium not found: install Debian's `chromium` (scripts/install-deps test)")


def run_chromium(tmp_path, *args):
    command = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
               "--no-first-run", "--user-data-dir=" + str(tmp_path / "profile"),
               "--virtual-time-budget=5000", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


class BodyAttributes(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.body = None
        self.rows = []
        self.errors = []
        self._in_errors = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "body" and self.body is None:
            self.body = attrs
        if tag == "tr" and "data-layer" in attrs:
            self.rows.append(attrs["data-layer"])
        if tag == "ul" and attrs.get("id") == "errors":
            self._in_errors = True

    def handle_endtag(self, tag):
        if tag == "ul":
            self._in_errors = False

    def handle_data(self, data):
        if self._in_errors and data.strip():
            self.errors.append(data.strip())


@pytest.fixture(scope="module")
def loaded(daemon):
    load = subprocess.run(
        [sys.executable, str(CLIENT_ROOT / "examples" / "synthetic_load.py"), daemon.url,
         "--layers", str(LAYERS), "--experts", str(EXPERTS), "--steps", "20", "--prefix", "dash"],
        capture_output=True, text=True, timeout=120)
    assert load.returncode == 0, load.stdout + load.stderr
    return daemon


def test_page_is_self_contained_html(loaded):
    with urllib.request.urlopen(loaded.url + "/", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/html")
        page = response.read().decode()
    assert "<canvas" in page
    # No external scripts, stylesheets, fonts or images: the daemon runs without internet.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external reference in the page"
    assert "@import" not in page and "url(http" not in page


def test_page_renders_the_posted_layers_without_errors(loaded, tmp_path):
    result = run_chromium(tmp_path, "--dump-dom", loaded.url + "/?refresh=0")
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], "console messages:\n" + "\n".join(console)
    parser = BodyAttributes()
    parser.feed(result.stdout)
    assert parser.body is not None, result.stdout[:2000]
    assert parser.errors == [], parser.errors
    assert parser.body.get("data-errors") == "0"
    assert parser.body.get("data-render") == "ok", parser.body
    names = [f"dash.{i}.moe" for i in range(LAYERS)]
    shown = parser.body.get("data-layers", "").split()
    assert set(names) <= set(shown), shown
    assert set(names) <= set(parser.rows)
    # Layers sort naturally: dash.2 before dash.10 would matter at 10+ layers; here check order.
    dash = [n for n in shown if n.startswith("dash.")]
    assert dash == sorted(dash, key=lambda n: int(n.split(".")[1]))


def test_screenshot(loaded, tmp_path):
    shot = tmp_path / "dashboard.png"
    run_chromium(tmp_path, "--window-size=1280,900", "--hide-scrollbars", "--screenshot=" + str(shot),
                 loaded.url + "/?refresh=0")
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    keep = os.environ.get("MOE_DASHBOARD_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
