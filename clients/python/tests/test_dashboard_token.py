"""The dashboard's bearer-token prompt, driven in a real headless Chromium.

With `auth_reads` the daemon answers the page's reads with 401; the page then asks for the token
with window.prompt, keeps it in sessionStorage and retries with `Authorization: Bearer`. A
`--dump-dom` run cannot answer a prompt, so these tests drive Chromium through the DevTools
protocol over `--remote-debugging-pipe` (file descriptors 3 and 4, messages ended by NUL): no
WebSocket library is needed. Each test answers the prompt the way a user would and checks what
the page rendered and what the daemon was sent.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any, Dict, List, Optional

import pytest

from conftest import Daemon, daemon_binary
from test_dashboard import chromium

TOKEN = "s3cret-token-for-the-dashboard-test"


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, profile: str) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # The child's ends, moved above the range dup2 writes to, so neither overwrites the other.
        child_in, child_out = os.dup(to_browser_r) + 100, os.dup(from_browser_w) + 100
        os.dup2(to_browser_r, child_in)
        os.dup2(from_browser_w, child_out)

        def wire() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        os.set_inheritable(child_in, True)
        os.set_inheritable(child_out, True)
        self.process = subprocess.Popen(
            [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
             "--remote-debugging-pipe", "--user-data-dir=" + profile, "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            close_fds=False, preexec_fn=wire)
        for fd in (to_browser_r, from_browser_w, child_in, child_out):
            os.close(fd)
        self.out = to_browser_w
        self.inp = from_browser_r
        self.buffer = b""
        self.next_id = 0
        self.events: List[Dict[str, Any]] = []

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except Exception:  # noqa: BLE001 - the browser may already be gone; kill it below
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        os.close(self.out)
        os.close(self.inp)

    def _read_message(self, deadline: float) -> Dict[str, Any]:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no DevTools message in time")
            ready, _, _ = select.select([self.inp], [], [], left)
            if ready:
                chunk = os.read(self.inp, 1 << 16)
                if not chunk:
                    stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                    raise RuntimeError("Chromium closed the debugging pipe: " + stderr[-2000:])
                self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: Optional[Dict[str, Any]] = None, session: Optional[str] = None,
             timeout: float = 30) -> Dict[str, Any]:
        self.next_id += 1
        request: Dict[str, Any] = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            request["sessionId"] = session
        os.write(self.out, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._read_message(deadline)
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def wait_event(self, method: str, timeout: float = 30) -> Dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["method"] == method:
                    return self.events.pop(i)
            message = self._read_message(deadline)
            if "method" in message:
                self.events.append(message)

    def open_page(self, url: str) -> str:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable", session=session)
        self.send("Runtime.enable", session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        return session

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        return result["result"].get("value")


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("token") / "token"
    token_file.write_text(TOKEN + "\n")
    process = Daemon(daemon_binary(), ["--auth-token-file", str(token_file), "--auth-reads", "true"])
    body = json.dumps({"layer": "guarded.0", "expert_capacities": [3, 1, 0, 4], "total_tokens": 4,
                       "top_k": 2, "tokens_dropped": 0}).encode()
    request = urllib.request.Request(process.url + "/v1/decisions", data=body, method="POST",
                                     headers={"Content-Type": "application/json",
                                              "Authorization": "Bearer " + TOKEN})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    yield process
    process.stop()


@pytest.fixture
def browser(tmp_path):
    tools = DevTools(str(tmp_path / "profile"))
    yield tools
    tools.close()


def wait_for(tools: DevTools, session: str, expression: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = tools.evaluate(session, expression)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"page never satisfied {expression!r}; body: "
                                 + str(tools.evaluate(session, "JSON.stringify(document.body.dataset)")))
        time.sleep(0.1)


def test_reads_really_need_the_token(guarded):
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(guarded.url + "/v1/summary", timeout=5)
    assert refused.value.code == 401


def test_prompt_takes_the_token_and_the_page_renders(guarded, browser):
    session = browser.open_page(guarded.url + "/?refresh=0")
    dialog = browser.wait_event("Page.javascriptDialogOpening")
    assert dialog["params"]["type"] == "prompt"
    assert "token" in dialog["params"]["message"].lower()
    browser.send("Page.handleJavaScriptDialog", {"accept": True, "promptText": "  " + TOKEN + "  "}, session=session)
    wait_for(browser, session, "document.body.dataset.render === 'ok'")
    assert browser.evaluate(session, "document.body.dataset.layers") == "guarded.0"
    assert browser.evaluate(session, "document.body.dataset.errors") == "0"
    # Kept trimmed, for this tab only.
    assert browser.evaluate(session, "sessionStorage.getItem('moe-metricsd-token')") == TOKEN
    assert browser.evaluate(session, "localStorage.length") == 0
    # The history reads carry the token too: the layer's sparkline is drawn, and its step heatmap
    # (one bucket of arrival time, since the decision sent no step) shows expert 2 without a token.
    assert browser.evaluate(session, "document.querySelectorAll('tr[data-layer=\"guarded.0\"] svg.spark path.line').length") == 1
    browser.evaluate(session, "selectLayer('guarded.0'); true")
    wait_for(browser, session, "document.body.dataset.detailSteps === '1'")
    assert "arrival time" in browser.evaluate(session, "document.getElementById('detailinfo').textContent")
    dead = browser.evaluate(session, """(function () {
      var g = state.detailGeometry, d = window.devicePixelRatio || 1;
      var p = document.getElementById('stepmap').getContext('2d').getImageData(
        Math.floor((g.labelW + g.cellW / 2) * d), Math.floor((g.mapTop + 2.5 * g.cellH) * d), 1, 1).data;
      return [p[0], p[1], p[2]];
    })()""")
    assert dead == [0x1D, 0x23, 0x29]
    # A refresh uses the stored token: no second prompt, a second render.
    browser.evaluate(session, "refresh(); true")
    wait_for(browser, session, "document.body.dataset.renderCount === '2'")
    assert not any(e["method"] == "Page.javascriptDialogOpening" for e in browser.events)


def test_a_wrong_token_is_asked_again_and_a_cancel_shows_the_error(guarded, browser):
    session = browser.open_page(guarded.url + "/?refresh=0")
    first = browser.wait_event("Page.javascriptDialogOpening")
    assert first["params"]["type"] == "prompt"
    browser.send("Page.handleJavaScriptDialog", {"accept": True, "promptText": "not-the-token"}, session=session)
    # The daemon refuses the wrong token with 401 again, so the page asks again.
    second = browser.wait_event("Page.javascriptDialogOpening")
    assert second["params"]["type"] == "prompt"
    browser.send("Page.handleJavaScriptDialog", {"accept": False}, session=session)
    error = wait_for(browser, session, "document.body.dataset.fetchError")
    assert "401" in error, error
    assert browser.evaluate(session, "document.body.dataset.render") != "ok"
    # A refused token is forgotten, not resent on every refresh.
    assert browser.evaluate(session, "sessionStorage.getItem('moe-metricsd-token')") is None
