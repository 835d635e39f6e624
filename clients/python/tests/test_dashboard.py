"""The dashboard page in a real headless Chromium against the real daemon.

The page marks a successful render on <body> (data-render="ok", data-layers="...") and writes
script errors into the DOM (data-errors); Chromium's --enable-logging=stderr prints every console
message as a CONSOLE line, and a healthy page prints none. The step views (window, sparklines,
a layer's experts by step) and the documentation's screenshot are in test_dashboard_steps.py.
"""

from __future__ import annotations

import html.parser
import json
import threading
import re
import shutil
import subprocess
import sys
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import CLIENT_ROOT, Daemon, daemon_binary

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


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_page_renders_the_posted_layers_without_errors(loaded, tmp_path, path):
    result = run_chromium(tmp_path, "--dump-dom", loaded.url + path + "?refresh=0")
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


# Moves the mouse over one heatmap cell once the page has rendered; the tooltip is then in the DOM.
HOVER_SCRIPT = """<script>
var hoverTimer = setInterval(function () {
  if (document.body.dataset.render !== "ok") return;
  clearInterval(hoverTimer);
  var canvas = document.getElementById("heatmap"), r = canvas.getBoundingClientRect(), g = state.geometry;
  canvas.dispatchEvent(new MouseEvent("mousemove", { bubbles: true,
    clientX: r.left + g.labelW + (EXPERT + 0.5) * g.cellW, clientY: r.top + g.topH + (ROW + 0.5) * g.cellH }));
  document.body.dataset.hovered = "yes";
}, 20);
</script></body>"""


class HoverProxy:
    """Serves the daemon's own page with HOVER_SCRIPT appended; forwards the API to the daemon."""

    def __init__(self, daemon_url, page):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path.split("?")[0] == "/":
                    body, kind = page.encode(), "text/html; charset=utf-8"
                else:
                    with urllib.request.urlopen(daemon_url + self.path, timeout=10) as response:
                        body, kind = response.read(), response.headers["Content-Type"]
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d" % self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_hovering_a_cell_shows_its_expert(loaded, tmp_path):
    row, expert = 3, 5
    with urllib.request.urlopen(loaded.url + "/", timeout=5) as response:
        page = response.read().decode()
    assert "</body>" in page
    script = HOVER_SCRIPT.replace("EXPERT", str(expert)).replace("ROW", str(row))
    proxy = HoverProxy(loaded.url, page.replace("</body>", script))
    try:
        result = run_chromium(tmp_path, "--window-size=1280,900", "--dump-dom", proxy.url + "/?refresh=0")
    finally:
        proxy.close()
    parser = BodyAttributes()
    parser.feed(result.stdout)
    assert parser.body.get("data-hovered") == "yes", parser.body
    tooltip = re.search(r'<div id="tooltip"[^>]*>(.*?)</div>', result.stdout, re.S)
    assert tooltip, result.stdout[-2000:]
    text = re.sub(r"<br>", "\n", tooltip.group(1))
    layer = f"dash.{row}.moe"
    assert f"layer {layer} · expert {expert}" in text, text
    counts = json.loads(urllib.request.urlopen(loaded.url + "/v1/layers/" + layer, timeout=5).read())["expert_token_counts"]
    assert f"tokens: {counts[expert]:,}" in text, text
    assert "display: block" in tooltip.group(0)


# A window longer than the daemon's history (512 steps by default) is refused by the daemon; with no
# layer to learn the history size from, the page must still render.
@pytest.mark.parametrize("query", ["", "&steps=1000"])
def test_page_renders_an_empty_daemon(tmp_path, query):
    empty = Daemon(daemon_binary())
    try:
        result = run_chromium(tmp_path, "--dump-dom", empty.url + "/?refresh=0" + query)
    finally:
        empty.stop()
    console = [line for line in result.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], "console messages:\n" + "\n".join(console)
    parser = BodyAttributes()
    parser.feed(result.stdout)
    assert parser.body.get("data-render") == "ok" and parser.body.get("data-errors") == "0", parser.body
    assert parser.body.get("data-layers") == ""
    assert "No layer yet" in result.stdout
