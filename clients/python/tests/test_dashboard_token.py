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
import urllib.error
import urllib.request

import pytest

from conftest import Daemon, daemon_binary
from devtools import wait_for

TOKEN = "s3cret-token-for-the-dashboard-test"


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
