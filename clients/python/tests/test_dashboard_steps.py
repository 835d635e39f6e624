"""The dashboard's step views in a real headless Chromium against the real daemon.

Four workers post 300 steps of six layers; layer `dec.3.moe` collapses at step 220 onto three
experts, and one worker has not yet sent the last step. The tests drive the page through the
DevTools protocol (see devtools.py), pick windows and click layers as a user would, and
read back what was drawn: table cells, the sparklines' SVG paths and canvas pixels. Every expected
value is computed here from the decisions posted, never read back from the daemon.

Set MOE_DASHBOARD_SCREENSHOT=PATH to keep the page's screenshot (scripts/test-adopt --screenshot
writes docs/dashboard.png that way).
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from typing import Any, Dict, List, Optional

import pytest

from conftest import Daemon, daemon_binary
from devtools import DevTools, wait_for

LAYERS, EXPERTS, WORKERS, STEPS = 6, 32, 4, 300
TOKENS, TOP_K = 512, 2
COLLAPSED, COLLAPSE_STEP, HOT = "dec.3.moe", 220, (5, 17, 26)
DEAD_LAYER, DEAD_EXPERT = "dec.1.moe", 9
LATE_WORKER = WORKERS - 1  # has not sent the newest step: that step is incomplete

DEAD_RGB = (0x1D, 0x23, 0x29)
HOTTEST_RGB = (0xB2, 0x18, 0x2B)  # the red end of the scale, 8 or more times the fair share
INCOMPLETE_RGB = (0x9A, 0xA4, 0xAD)


def layer_name(i: int) -> str:
    return f"dec.{i}.moe"


def loads(rng: random.Random, worker: int, layer: int, step: int) -> List[int]:
    """One worker's tokens per expert for one layer and step (top-2 routing of TOKENS tokens)."""
    name = layer_name(layer)
    if name == COLLAPSED and step >= COLLAPSE_STEP:
        # Collapse: every token goes to two of the three hot experts, which two turning with the
        # worker, so that each hot expert gets 8 or more times its fair share of every step.
        out = [0] * EXPERTS
        first = (worker + step) % 3
        out[HOT[first]] = TOKENS
        out[HOT[(first + 1) % 3]] = TOKENS
        return out
    weights = [1.0 + 0.15 * rng.random() for _ in range(EXPERTS)]
    if name == DEAD_LAYER:
        weights[DEAD_EXPERT] = 0.0
    total = sum(weights)
    out = [int(TOKENS * TOP_K * w / total) for w in weights]
    return [min(c, TOKENS) for c in out]


def decisions() -> List[List[Dict[str, Any]]]:
    """Per step, every worker's decisions; the late worker sends nothing for the newest step."""
    rng = random.Random(13)
    out = []
    for step in range(STEPS):
        batch = []
        for worker in range(WORKERS):
            if worker == LATE_WORKER and step == STEPS - 1:
                continue
            for layer in range(LAYERS):
                batch.append({"layer": layer_name(layer), "worker": f"rank-{worker}", "step": step, "top_k": TOP_K,
                              "total_tokens": TOKENS, "tokens_dropped": 0, "load_balance_loss": 1.0,
                              "expert_capacities": loads(rng, worker, layer, step)})
        out.append(batch)
    return out


def step_counts(posted: List[List[Dict[str, Any]]], layer: str) -> List[List[int]]:
    """Per step (oldest first), the layer's tokens per expert summed over its workers."""
    out = []
    for batch in posted:
        summed = [0] * EXPERTS
        for d in batch:
            if d["layer"] == layer:
                summed = [a + b for a, b in zip(summed, d["expert_capacities"])]
        out.append(summed)
    return out


def max_violation(counts: List[int]) -> Optional[float]:
    mean = sum(counts) / len(counts)
    return None if mean == 0 else (max(counts) - mean) / mean


def window_counts(per_step: List[List[int]], last: Optional[int]) -> List[int]:
    chosen = per_step if last is None else per_step[-last:]
    return [sum(column) for column in zip(*chosen)]


def fmt3(value: float) -> str:
    return f"{value:.3f}"


@pytest.fixture(scope="module")
def posted():
    return decisions()


@pytest.fixture(scope="module")
def stepped(posted):
    process = Daemon(daemon_binary())
    for batch in posted:
        body = "\n".join(json.dumps(d) for d in batch).encode()
        status, text = process.post("/v1/decisions", body, "application/x-ndjson")
        assert status == 200, text
    yield process
    process.stop()


def rendered(tools: DevTools, session: str, steps: str) -> None:
    wait_for(tools, session, f"document.body.dataset.render === 'ok' && document.body.dataset.steps === '{steps}'"
                             " && !state.busy")
    assert tools.evaluate(session, "document.body.dataset.errors") == "0", \
        tools.evaluate(session, "document.getElementById('errors').textContent")


def choose_window(tools: DevTools, session: str, value: str) -> None:
    """Picks an entry of the window menu the way the browser does when a user picks it."""
    tools.evaluate(session, "var s = document.getElementById('steps'); s.value = %s;"
                            " s.dispatchEvent(new Event('change', { bubbles: true })); true" % json.dumps(value))
    rendered(tools, session, value or "run")


def cell_text(tools: DevTools, session: str, layer: str, key: str) -> str:
    return tools.evaluate(session, "document.querySelector('tr[data-layer=%s] td[data-key=%s]').textContent"
                          % (json.dumps(layer), json.dumps(key)))


def card_value(tools: DevTools, session: str, title: str) -> str:
    return tools.evaluate(session, "Array.from(document.querySelectorAll('.card')).filter(function (c) {"
                                   " return c.querySelector('.k').textContent === %s; })[0].querySelector('.v').textContent"
                          % json.dumps(title))


def layer_pixel(tools: DevTools, session: str, row: int, expert: int) -> tuple:
    """The colour drawn at the centre of a cell of the expert-by-layer heatmap."""
    return tuple(tools.evaluate(session, """(function () {
      var g = state.geometry, d = window.devicePixelRatio || 1, c = document.getElementById('heatmap');
      var p = c.getContext('2d').getImageData(Math.floor((g.labelW + (%d + 0.5) * g.cellW) * d),
                                              Math.floor((g.topH + (%d + 0.5) * g.cellH) * d), 1, 1).data;
      return [p[0], p[1], p[2]];
    })()""" % (expert, row)))


def step_pixel(tools: DevTools, session: str, column: int, expert: int) -> tuple:
    """The colour drawn at the centre of a cell of the open layer's expert-by-step heatmap."""
    return tuple(tools.evaluate(session, """(function () {
      var g = state.detailGeometry, d = window.devicePixelRatio || 1, c = document.getElementById('stepmap');
      var p = c.getContext('2d').getImageData(Math.floor((g.labelW + (%d + 0.5) * g.cellW) * d),
                                              Math.floor((g.mapTop + (%d + 0.5) * g.cellH) * d), 1, 1).data;
      return [p[0], p[1], p[2]];
    })()""" % (column, expert)))


def flag_pixel(tools: DevTools, session: str, column: int) -> tuple:
    """The colour of the incomplete-step mark above a column of the step heatmap."""
    return tuple(tools.evaluate(session, """(function () {
      var g = state.detailGeometry, d = window.devicePixelRatio || 1, c = document.getElementById('stepmap');
      var p = c.getContext('2d').getImageData(Math.floor((g.labelW + (%d + 0.5) * g.cellW) * d),
                                              Math.floor((g.mapTop - 5) * d), 1, 1).data;
      return [p[0], p[1], p[2]];
    })()""" % column))


def click(tools: DevTools, session: str, element_js: str, x: Optional[float] = None, y: Optional[float] = None) -> None:
    """A real mouse click (press and release) through Chromium's input pipeline, at (x, y) from the
    element's top left corner (its centre by default), once the element is scrolled into view."""
    box = tools.evaluate(session, "(function () { var e = %s; e.scrollIntoView({ block: 'center' });"
                                  " var r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()"
                         % element_js)
    at_x = box[0] + (box[2] / 2 if x is None else x)
    at_y = box[1] + (box[3] / 2 if y is None else y)
    for kind in ("mousePressed", "mouseReleased"):
        tools.send("Input.dispatchMouseEvent", {"type": kind, "x": at_x, "y": at_y, "button": "left", "clickCount": 1},
                   session=session)


def is_light(rgb: tuple) -> bool:
    # Near the white middle of the scale: an expert that got about its fair share.
    return min(rgb) >= 190


def test_every_number_and_the_heatmap_follow_the_window(stepped, posted, browser):
    session = browser.open_page(stepped.url + "/?refresh=0")
    rendered(browser, session, "run")
    per_step = step_counts(posted, COLLAPSED)
    row = [layer_name(i) for i in range(LAYERS)].index(COLLAPSED)
    tokens_in = lambda last: sum(d["total_tokens"] for batch in (posted if last is None else posted[-last:]) for d in batch)

    # Whole run: the collapse is diluted by 220 balanced steps; no expert of the layer is dead.
    assert cell_text(browser, session, COLLAPSED, "maxvio") == fmt3(max_violation(window_counts(per_step, None)))
    assert card_value(browser, session, "Tokens") == f"{tokens_in(None):,}"
    assert card_value(browser, session, "Window") == "whole run"
    quiet = [e for e in range(EXPERTS) if e not in HOT]
    for e in quiet[:6]:
        rgb = layer_pixel(browser, session, row, e)
        assert rgb != DEAD_RGB and rgb[2] > rgb[0], (e, rgb)  # under its fair share: the blue side

    for last in (100, 10):
        choose_window(browser, session, str(last))
        expected = max_violation(window_counts(per_step, last))
        assert cell_text(browser, session, COLLAPSED, "maxvio") == fmt3(expected)
        assert card_value(browser, session, "Tokens") == f"{tokens_in(last):,}"
        assert card_value(browser, session, "Window") == f"last {last} steps"
        assert card_value(browser, session, "Worst MaxVio") == fmt3(expected)
    # The last 10 steps all come after the collapse: the three hot experts take everything.
    for e in HOT:
        assert layer_pixel(browser, session, row, e) == HOTTEST_RGB, e
    for e in quiet:
        assert layer_pixel(browser, session, row, e) == DEAD_RGB, e
    # A healthy layer stays near white in the same window.
    assert is_light(layer_pixel(browser, session, 0, 0))
    # The choice is kept in the address, so a reload shows the same window.
    assert "steps=10" in browser.evaluate(session, "location.search")


def sparkline_points(browser: DevTools, session: str, layer: str) -> List[tuple]:
    d = browser.evaluate(session, "document.querySelector('tr[data-layer=%s] svg.spark path.line').getAttribute('d')"
                         % json.dumps(layer))
    points = []
    for part in d.replace("M", "|M").replace("L", "|L").split("|"):
        if part:
            x, y = part[1:].split()
            points.append((float(x), float(y)))
    return points


def test_sparklines_draw_maxvio_step_by_step(stepped, posted, browser):
    session = browser.open_page(stepped.url + "/?refresh=0")
    rendered(browser, session, "run")
    height = 22
    for layer in (COLLAPSED, layer_name(0)):
        per_step = [max_violation(c) for c in step_counts(posted, layer)]
        points = sparkline_points(browser, session, layer)
        assert len(points) == STEPS
        assert [x for x, _ in points] == sorted(x for x, _ in points)  # oldest at the left
        peak = max(1.0, max(per_step))
        for (_, y), value in zip(points, per_step):
            assert y == pytest.approx(height - 1 - value / peak * (height - 2), abs=0.006)
    collapsed = sparkline_points(browser, session, COLLAPSED)
    # Near the bottom before the collapse, at the top from its step on.
    assert all(y > height - 3 for _, y in collapsed[:COLLAPSE_STEP])
    assert all(y < height / 4 for _, y in collapsed[COLLAPSE_STEP:])
    assert browser.evaluate(session, "document.querySelector('tr[data-layer=%s] svg.spark').classList.contains('bad')"
                            % json.dumps(COLLAPSED))
    assert not browser.evaluate(session, "document.querySelector('tr[data-layer=%s] svg.spark').classList.contains('bad')"
                                % json.dumps(layer_name(0)))
    # The sparklines follow the window too.
    choose_window(browser, session, "100")
    assert len(sparkline_points(browser, session, COLLAPSED)) == 100


def test_a_click_on_a_layer_opens_its_experts_by_step(stepped, posted, browser):
    session = browser.open_page(stepped.url + "/?refresh=0")
    rendered(browser, session, "run")
    assert browser.evaluate(session, "document.getElementById('detail').hidden")
    click(browser, session, "document.querySelector('tr[data-layer=%s] td')" % json.dumps(COLLAPSED))
    wait_for(browser, session, "document.body.dataset.detail === %s && document.body.dataset.detailSteps === '%d'"
             % (json.dumps(COLLAPSED), STEPS))
    assert not browser.evaluate(session, "document.getElementById('detail').hidden")
    assert "layer=" + COLLAPSED in browser.evaluate(session, "location.search")
    per_step = step_counts(posted, COLLAPSED)
    quiet = [e for e in range(EXPERTS) if e not in HOT]
    # Time runs left to right: balanced columns up to the collapse, then three red rows on black.
    for column in (0, COLLAPSE_STEP - 1):
        assert max_violation(per_step[column]) < 0.5
        for e in (HOT[0], quiet[0], quiet[-1]):
            assert is_light(step_pixel(browser, session, column, e)), (column, e)
    for column in (COLLAPSE_STEP, STEPS - 1):
        for e in HOT:
            assert step_pixel(browser, session, column, e) == HOTTEST_RGB, (column, e)
        for e in quiet:
            assert step_pixel(browser, session, column, e) == DEAD_RGB, (column, e)
    # Only the newest step lacks a worker, and only it is flagged.
    assert flag_pixel(browser, session, STEPS - 1) == INCOMPLETE_RGB
    assert flag_pixel(browser, session, STEPS - 2) != INCOMPLETE_RGB
    # Hovering a cell names its step and expert, with the tokens the workers sent it that step.
    geometry = browser.evaluate(session, "state.detailGeometry")
    box = browser.evaluate(session, "(function () { var r = document.getElementById('stepmap').getBoundingClientRect();"
                                    " return [r.left, r.top]; })()")
    browser.send("Input.dispatchMouseEvent",
                 {"type": "mouseMoved", "x": box[0] + geometry["labelW"] + (COLLAPSE_STEP + 0.5) * geometry["cellW"],
                  "y": box[1] + geometry["mapTop"] + (HOT[1] + 0.5) * geometry["cellH"]}, session=session)
    tip = wait_for(browser, session, "document.getElementById('tooltip').style.display === 'block'"
                                     " && document.getElementById('tooltip').innerText")
    assert f"step {COLLAPSE_STEP} · expert {HOT[1]}" in tip, tip
    assert f"tokens: {per_step[COLLAPSE_STEP][HOT[1]]:,}" in tip, tip
    assert "workers: 4" in tip, tip

    # A layer with a dead expert, opened from the expert-by-layer heatmap: that expert's row is black.
    row = [layer_name(i) for i in range(LAYERS)].index(DEAD_LAYER)
    geometry = browser.evaluate(session, "state.geometry")
    click(browser, session, "document.getElementById('heatmap')", x=geometry["labelW"] / 2,
          y=geometry["topH"] + (row + 0.5) * geometry["cellH"])
    wait_for(browser, session, "document.body.dataset.detail === %s && state.detailData && state.detailData.layer === %s"
             % (json.dumps(DEAD_LAYER), json.dumps(DEAD_LAYER)))
    for column in (0, STEPS // 2, STEPS - 1):
        assert step_pixel(browser, session, column, DEAD_EXPERT) == DEAD_RGB
        assert is_light(step_pixel(browser, session, column, DEAD_EXPERT + 1))

    # The step heatmap follows the window.
    choose_window(browser, session, "10")
    wait_for(browser, session, "document.body.dataset.detailSteps === '10'")


def test_screenshot_of_a_collapse(stepped, browser, tmp_path):
    session = browser.open_page(stepped.url + "/?refresh=0&layer=" + COLLAPSED, width=1280, height=900)
    rendered(browser, session, "run")
    wait_for(browser, session, "document.body.dataset.detailSteps === '%d'" % STEPS)
    height = browser.evaluate(session, "Math.ceil(document.documentElement.scrollHeight)")
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
    time.sleep(0.5)  # the page redraws on resize after 150 ms
    shot = browser.send("Page.captureScreenshot", {"format": "png"}, session=session)
    data = base64.b64decode(shot["data"])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    (tmp_path / "dashboard.png").write_bytes(data)
    keep = os.environ.get("MOE_DASHBOARD_SCREENSHOT")
    if keep:
        with open(keep, "wb") as out:
            out.write(data)
