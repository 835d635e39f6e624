"""The dashboard's rank views in a real headless Chromium against the real daemon.

Three layers of 8 experts receive a few decisions; an expert placement on 4 ranks in 2 nodes is
set (contiguous for two layers, replicated for the one with a hot expert). The layer table then
shows each layer's rank balancedness and worst rank, and the heatmap, coloured by rank, has one
column per rank whose hover names the rank and its tokens. Every expected value is computed here
from the decisions posted and the placement, never read back from the daemon.
"""

from __future__ import annotations

import json
import urllib.request
from typing import Dict, List

import pytest

from conftest import Daemon, daemon_binary
from devtools import wait_for
from test_dashboard_steps import cell_text, rendered

RANKS, NODES, EXPERTS = 4, 2, 8
COUNTS: Dict[str, List[List[int]]] = {
    "pl.0.moe": [[9, 1, 0, 2, 3, 3, 1, 5], [7, 0, 1, 2, 2, 4, 0, 8]],
    "pl.1.moe": [[2, 2, 3, 2, 2, 3, 2, 2], [3, 2, 2, 2, 3, 2, 2, 2]],
    "pl.2.moe": [[1, 1, 1, 1, 2, 2, 12, 4], [0, 2, 1, 1, 3, 1, 10, 6]],
}
# pl.2.moe's hot expert 6 has three replicas, on ranks 0, 1 and 2 (12 slots, 3 per rank).
HOT_MAP = [6, 0, 1, 6, 2, 3, 6, 4, 5, 7, 0, 1]


def tokens(layer: str) -> List[int]:
    return [sum(column) for column in zip(*COUNTS[layer])]


def rank_loads(layer: str) -> List[float]:
    """Slot p on rank p / (slots / ranks); a replica carries its expert's tokens over its replicas."""
    mapping = HOT_MAP if layer == "pl.2.moe" else list(range(EXPERTS))
    per_rank = len(mapping) // RANKS
    replicas = [mapping.count(e) for e in range(EXPERTS)]
    out = [0.0] * RANKS
    for slot, expert in enumerate(mapping):
        out[slot // per_rank] += tokens(layer)[expert] / replicas[expert]
    return out


def put(daemon: Daemon, path: str, body: str) -> int:
    request = urllib.request.Request(daemon.url + path, data=body.encode(), method="PUT")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status


@pytest.fixture(scope="module")
def placed():
    process = Daemon(daemon_binary())
    lines = [json.dumps({"layer": layer, "expert_capacities": c, "total_tokens": sum(c)})
             for layer, decisions in COUNTS.items() for c in decisions]
    status, text = process.post("/v1/decisions", "\n".join(lines).encode(), "application/x-ndjson")
    assert status == 200, text
    yield process
    process.stop()


def test_rank_columns_appear_with_a_placement(placed, browser):
    # No placement yet: no rank columns.
    session = browser.open_page(placed.url + "/?refresh=0")
    rendered(browser, session, "run")
    assert browser.evaluate(session, "document.querySelector('th[data-key=rankbal]') === null")
    assert browser.evaluate(session, "document.querySelector('th[data-key=worstrank]') === null")

    body = {"ranks": RANKS, "nodes": NODES, "layers": {"pl.2.moe": HOT_MAP}}
    assert put(placed, "/v1/placement", json.dumps(body)) == 200
    session = browser.open_page(placed.url + "/?refresh=0")
    rendered(browser, session, "run")
    for layer in COUNTS:
        loads = rank_loads(layer)
        peak = max(loads)
        balancedness = sum(loads) / len(loads) / peak
        assert cell_text(browser, session, layer, "rankbal") == f"{balancedness:.3f}", layer
        assert cell_text(browser, session, layer, "worstrank") == str(loads.index(peak)), layer
    # The replicated layer's straggler is not where the contiguous placement would put it.
    assert rank_loads("pl.2.moe").index(max(rank_loads("pl.2.moe"))) != 3
    errors = browser.evaluate(session, "document.body.dataset.errors")
    assert errors == "0", browser.evaluate(session, "document.getElementById('errors').textContent")


HOVER = """(function () {
  var canvas = document.getElementById("heatmap"), r = canvas.getBoundingClientRect(), g = state.geometry;
  canvas.dispatchEvent(new MouseEvent("mousemove", { bubbles: true,
    clientX: r.left + g.labelW + (%d + 0.5) * g.cellW, clientY: r.top + g.topH + (%d + 0.5) * g.cellH }));
  return document.getElementById("tooltip").innerText;
})()"""


def test_the_heatmap_coloured_by_rank(placed, browser):
    body = {"ranks": RANKS, "nodes": NODES, "layers": {"pl.2.moe": HOT_MAP}}
    assert put(placed, "/v1/placement", json.dumps(body)) == 200
    session = browser.open_page(placed.url + "/?refresh=0&mode=rank")
    rendered(browser, session, "run")
    wait_for(browser, session, "document.body.dataset.heatColumns === 'ranks'")
    assert browser.evaluate(session, "state.geometry.experts") == RANKS
    layers = list(COUNTS)
    for row, layer in enumerate(layers):
        loads = rank_loads(layer)
        worst = loads.index(max(loads))
        for rank in range(RANKS):
            text = browser.evaluate(session, HOVER % (rank, row))
            assert f"layer {layer} · rank {rank}" in text, text
            assert ("the busiest" in text) == (rank == worst), text
            assert f"tokens: {loads[rank]:.2f}" in text, text
            mean = sum(loads) / len(loads)
            assert f"vs. mean rank: {loads[rank] / mean:.2f}×" in text, text
    # Back to experts: one column per expert again.
    browser.evaluate(session, "var m = document.getElementById('mode'); m.value = 'share';"
                              " m.dispatchEvent(new Event('change', { bubbles: true })); true")
    wait_for(browser, session, "document.body.dataset.heatColumns === 'experts'")
    assert browser.evaluate(session, "state.geometry.experts") == EXPERTS
