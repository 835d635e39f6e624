/// The dashboard served at `GET /`: one self-contained HTML page (inline CSS and script, no external
/// scripts, fonts or CDNs, because the daemon runs on training machines without internet access).
///
/// It polls the JSON API (`GET /v1/layers`, then `GET /v1/layers/{layer}` for each layer whose
/// listing lacks the per-expert counts) and draws an expert-by-layer heatmap on a `<canvas>` (a
/// table of 64 x 256 cells would be 16k DOM nodes), with a colour legend and hover details, plus a
/// sortable table of each layer's efficiency, MaxVio, balancedness, entropy, dead experts, dropped
/// tokens and average losses. Script errors are also written into the page (`#errors`,
/// `data-errors` on `<body>`) and a successful render sets `data-render="ok"`, so a headless browser
/// test can check the page from its DOM alone.
enum DashboardPage {
    static let html: String = #"""
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>moe-metricsd</title>
<style>
:root { --fg: #1d2329; --muted: #5b6670; --line: #d6dbe0; --bg: #f6f7f9; --card: #fff; --bad: #b2182b; --warn: #b35806; }
* { box-sizing: border-box; }
body { margin: 0; font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; flex-wrap: wrap; align-items: center; gap: 12px 20px; padding: 10px 16px; background: #1d2329; color: #fff; }
header h1 { font-size: 16px; margin: 0; font-weight: 600; }
header label { color: #c9d1d9; }
header select { font: inherit; }
#status { margin-left: auto; color: #c9d1d9; }
#status.error { color: #ffb4a9; }
main { padding: 12px 16px 24px; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; margin-bottom: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 130px; }
.card .k { color: var(--muted); font-size: 11px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .s { color: var(--muted); font-size: 11px; }
section { background: var(--card); border: 1px solid var(--line); border-radius: 6px; padding: 10px 12px; margin-bottom: 12px; }
section h2 { font-size: 14px; margin: 0 0 8px; display: flex; flex-wrap: wrap; gap: 8px 16px; align-items: baseline; }
section h2 small { font-weight: normal; color: var(--muted); }
#heatwrap { position: relative; overflow-x: auto; }
#heatmap { display: block; cursor: crosshair; }
#legend { display: flex; align-items: center; gap: 10px; margin-top: 8px; color: var(--muted); flex-wrap: wrap; }
#tooltip { position: fixed; pointer-events: none; background: rgba(29,35,41,.95); color: #fff; padding: 6px 8px; border-radius: 4px; font-size: 12px; white-space: nowrap; display: none; z-index: 10; font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 6px; border-bottom: 1px solid var(--line); text-align: right; white-space: nowrap; }
th { white-space: normal; vertical-align: bottom; }
th { position: sticky; top: 0; background: #eef1f4; cursor: pointer; user-select: none; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
th[aria-sort="ascending"]::after { content: " \25B2"; }
th[aria-sort="descending"]::after { content: " \25BC"; }
tbody tr:hover { background: #f0f4f8; }
td.bad { color: var(--bad); font-weight: 600; }
td.warn { color: var(--warn); }
td.na { color: #9aa4ad; }
#tablewrap { max-height: 560px; overflow: auto; }
#errors { color: var(--bad); }
#errors:empty { display: none; }
.empty { color: var(--muted); padding: 24px; text-align: center; }
</style>
</head>
<body data-render="pending" data-render-count="0" data-errors="0">
<header>
  <h1>moe-metricsd</h1>
  <label>Colour <select id="mode">
    <option value="share">token share vs. uniform</option>
    <option value="util">utilization (tokens per batch token)</option>
  </select></label>
  <label>Refresh <select id="interval">
    <option value="0">off</option><option value="2">2 s</option><option value="5" selected>5 s</option><option value="15">15 s</option><option value="60">60 s</option>
  </select></label>
  <span id="status">loading…</span>
</header>
<main>
  <ul id="errors"></ul>
  <div class="cards" id="cards"></div>
  <section>
    <h2>Experts × layers <small id="heatinfo"></small></h2>
    <div id="heatwrap"><canvas id="heatmap" width="10" height="10" aria-label="expert by layer heatmap"></canvas></div>
    <div id="legend"><canvas id="legendbar" width="380" height="34"></canvas><span id="legendtext"></span></div>
  </section>
  <section>
    <h2>Layers <small>click a column to sort; red marks a problem</small></h2>
    <div id="tablewrap"><table id="layers"><thead></thead><tbody></tbody></table></div>
  </section>
</main>
<div id="tooltip"></div>
<script>
"use strict";
// Errors are written into the page so that a headless browser test can read them from the DOM.
(function () {
  function note(text) {
    var list = document.getElementById("errors");
    var li = document.createElement("li");
    li.textContent = text;
    list.appendChild(li);
    document.body.dataset.errors = String(list.children.length);
  }
  window.addEventListener("error", function (e) { note("error: " + (e.message || e) + " at " + (e.lineno || "?")); });
  window.addEventListener("unhandledrejection", function (e) { note("unhandled rejection: " + (e.reason && e.reason.message || e.reason)); });
  var original = console.error;
  console.error = function () { note("console.error: " + Array.prototype.join.call(arguments, " ")); original.apply(console, arguments); };
})();

var state = { layers: [], sortKey: "layer", sortDir: 1, timer: null, geometry: null, busy: false };

function $(id) { return document.getElementById(id); }
function isNum(v) { return typeof v === "number" && isFinite(v); }
function get(obj, path) {
  var parts = path.split(".");
  for (var i = 0; i < parts.length; i++) { if (obj == null) return null; obj = obj[parts[i]]; }
  return obj === undefined ? null : obj;
}
function fmt(v, digits) {
  if (!isNum(v)) return "–";
  if (digits === undefined) digits = 3;
  var a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return v.toFixed(digits);
}
function fmtInt(v) { return isNum(v) ? Math.round(v).toLocaleString("en-US") : "–"; }
function naturalCompare(a, b) {
  var ax = String(a).match(/(\d+|\D+)/g) || [], bx = String(b).match(/(\d+|\D+)/g) || [];
  for (var i = 0; i < Math.min(ax.length, bx.length); i++) {
    var x = ax[i], y = bx[i];
    if (x === y) continue;
    var nx = /^\d/.test(x), ny = /^\d/.test(y);
    if (nx && ny) return Number(x) - Number(y);
    return x < y ? -1 : 1;
  }
  return ax.length - bx.length;
}

// ---- data ----

// Paths are relative to the page, so the dashboard also works behind a reverse proxy that serves
// the daemon under a prefix.
// With auth_reads the daemon answers 401: ask once for the token, keep it for this tab only
// (sessionStorage) and send it as a Bearer header.
var TOKEN_KEY = "moe-metricsd-token", tokenAsked = false;
function fetchJSON(path) {
  var headers = { "Accept": "application/json" }, token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  return fetch(path, { headers: headers, cache: "no-store" }).then(function (r) {
    // A refused token is forgotten, so it is not resent on every refresh.
    if (r.status === 401 && token) sessionStorage.removeItem(TOKEN_KEY);
    if (r.status === 401 && !tokenAsked) {
      tokenAsked = true;
      var t = window.prompt("This daemon requires a bearer token for reads. Token:");
      if (t && t.trim()) { sessionStorage.setItem(TOKEN_KEY, t.trim()); tokenAsked = false; return fetchJSON(path); }
    }
    if (!r.ok) throw new Error(path + ": HTTP " + r.status);
    return r.json();
  });
}

// One request, GET /v1/summary, carries every layer's full summary. Should it fail or lack the
// per-expert counts, the page falls back to GET /v1/layers and one GET /v1/layers/{layer} each.
function layerEntries(listing) {
  var items = listing;
  if (items && !Array.isArray(items)) items = items.layers || items;
  if (items && !Array.isArray(items) && typeof items === "object") {
    items = Object.keys(items).map(function (k) {
      var v = items[k];
      return v && typeof v === "object" ? Object.assign({ layer: k }, v) : { layer: k };
    });
  }
  if (!Array.isArray(items)) return [];
  return items.map(function (it) { return typeof it === "object" && it !== null ? it : { layer: String(it) }; });
}
function complete(entries) {
  return entries.every(function (e) { return Array.isArray(e.expert_token_counts); });
}

function loadEach() {
  return fetchJSON("v1/layers").then(function (listing) {
    var entries = layerEntries(listing);
    if (complete(entries)) return entries;
    var out = new Array(entries.length), next = 0;
    function worker() {
      if (next >= entries.length) return Promise.resolve();
      var i = next++;
      return fetchJSON("v1/layers/" + encodeURIComponent(entries[i].layer)).then(function (s) {
        out[i] = s;
      }, function () {
        out[i] = null; // reset between the listing and this request
      }).then(worker);
    }
    var workers = [];
    for (var w = 0; w < Math.min(8, entries.length); w++) workers.push(worker());
    return Promise.all(workers).then(function () { return out.filter(Boolean); });
  });
}

function loadAll() {
  return fetchJSON("v1/summary").then(function (summary) {
    var entries = layerEntries(summary && summary.layers);
    return complete(entries) ? entries : loadEach();
  }, loadEach);
}

// ---- colours ----

// Diverging blue-white-red scale (ColorBrewer RdBu) on log2(load / fair share): white is a
// perfectly balanced expert, red an overloaded one, blue an underused one; near-black is dead.
var DIVERGING = ["#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b"];
// Sequential scale (light yellow to dark red) for utilization.
var SEQUENTIAL = ["#ffffcc", "#ffeda0", "#fed976", "#feb24c", "#fd8d3c", "#fc4e2a", "#e31a1c", "#bd0026", "#800026"];
var DEAD = "#1d2329", EMPTY = "#e4e7eb";
var RATIO_SPAN = 3; // log2: 1/8 .. 8 times the fair share

function hexToRgb(h) { return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]; }
var DIV_RGB = DIVERGING.map(hexToRgb), SEQ_RGB = SEQUENTIAL.map(hexToRgb);
function ramp(stops, t) {
  t = Math.max(0, Math.min(1, t));
  var x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
  var a = stops[i], b = stops[i + 1];
  return "rgb(" + Math.round(a[0] + (b[0] - a[0]) * f) + "," + Math.round(a[1] + (b[1] - a[1]) * f) + "," + Math.round(a[2] + (b[2] - a[2]) * f) + ")";
}
function shareColour(ratio) {
  if (!isNum(ratio)) return EMPTY;
  if (ratio <= 0) return DEAD;
  return ramp(DIV_RGB, (Math.log2(ratio) + RATIO_SPAN) / (2 * RATIO_SPAN));
}
function utilColour(u, max) {
  if (!isNum(u)) return EMPTY;
  if (u <= 0) return DEAD;
  return ramp(SEQ_RGB, max > 0 ? u / max : 0);
}

// ---- heatmap ----

function cellValue(layer, e) {
  var counts = layer.expert_token_counts || [];
  if (e >= counts.length) return null;
  var sum = layer._sum;
  var share = sum > 0 ? counts[e] / sum : null;
  return {
    tokens: counts[e], share: share,
    ratio: share === null ? null : share * counts.length,
    util: isNum((layer.expert_utilization || [])[e]) ? layer.expert_utilization[e] : null
  };
}

function drawHeatmap() {
  var layers = state.layers, canvas = $("heatmap"), ctx = canvas.getContext("2d");
  var mode = $("mode").value;
  var maxExperts = layers.reduce(function (m, l) { return Math.max(m, (l.expert_token_counts || []).length); }, 0);
  var labelW = 0;
  ctx.font = "11px system-ui, sans-serif";
  layers.forEach(function (l) { labelW = Math.max(labelW, ctx.measureText(String(l.layer)).width); });
  labelW = Math.ceil(Math.min(labelW, 160)) + 10;
  var topH = 18;
  var avail = Math.max(300, $("heatwrap").clientWidth - labelW - 4);
  var cellW = maxExperts > 0 ? Math.max(3, Math.min(28, Math.floor(avail / maxExperts))) : 10;
  var cellH = layers.length > 0 ? Math.max(7, Math.min(24, Math.floor(640 / layers.length))) : 10;
  var gap = cellW >= 6 && cellH >= 8 ? 1 : 0;
  var width = labelW + maxExperts * cellW + 4, height = topH + layers.length * cellH + 2;
  var dpr = window.devicePixelRatio || 1;
  canvas.width = Math.round(width * dpr); canvas.height = Math.round(height * dpr);
  canvas.style.width = width + "px"; canvas.style.height = height + "px";
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = "#5b6670"; ctx.textBaseline = "middle";
  // Expert index ticks: every expert when wide enough, else every 8th/16th/32nd.
  var step = [1, 2, 4, 8, 16, 32, 64].find(function (s) { return s * cellW >= 22; }) || 64;
  ctx.textAlign = "center";
  for (var e = 0; e < maxExperts; e += step) ctx.fillText(String(e), labelW + e * cellW + cellW / 2, topH / 2);
  var maxUtil = 0;
  if (mode === "util") layers.forEach(function (l) { (l.expert_utilization || []).forEach(function (u) { if (isNum(u)) maxUtil = Math.max(maxUtil, u); }); });
  state.maxUtil = maxUtil;
  layers.forEach(function (l, row) {
    var y = topH + row * cellH;
    ctx.textAlign = "right"; ctx.fillStyle = "#1d2329";
    var name = String(l.layer);
    if (ctx.measureText(name).width > labelW - 10) name = name.slice(0, 18) + "…";
    if (cellH >= 9 || row % Math.ceil(9 / cellH) === 0) ctx.fillText(name, labelW - 6, y + cellH / 2);
    var n = (l.expert_token_counts || []).length;
    for (var e = 0; e < maxExperts; e++) {
      var c = e < n ? cellValue(l, e) : null;
      ctx.fillStyle = c === null ? "transparent" : (mode === "util" ? utilColour(c.util, maxUtil) : shareColour(l._sum > 0 ? c.ratio : NaN));
      if (c !== null) ctx.fillRect(labelW + e * cellW, y, cellW - gap, cellH - gap);
    }
  });
  state.geometry = { labelW: labelW, topH: topH, cellW: cellW, cellH: cellH, experts: maxExperts };
  $("heatinfo").textContent = layers.length + " layers × " + maxExperts + " experts";
  drawLegend(mode, maxUtil);
}

function drawLegend(mode, maxUtil) {
  var c = $("legendbar"), ctx = c.getContext("2d"), w = 380, h = 34, barX = 60, barW = 300;
  var dpr = window.devicePixelRatio || 1;
  c.width = w * dpr; c.height = h * dpr; c.style.width = w + "px"; c.style.height = h + "px";
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = DEAD; ctx.fillRect(4, 2, 28, 14);
  for (var x = 0; x < barW; x++) {
    var t = x / (barW - 1);
    ctx.fillStyle = mode === "util" ? ramp(SEQ_RGB, t) : ramp(DIV_RGB, t);
    ctx.fillRect(barX + x, 2, 1, 14);
  }
  ctx.fillStyle = "#5b6670"; ctx.font = "10px system-ui, sans-serif"; ctx.textAlign = "center"; ctx.textBaseline = "top";
  ctx.fillText("dead", 18, 20);
  if (mode === "util") {
    [0, 0.25, 0.5, 0.75, 1].forEach(function (t) { ctx.fillText(fmt(t * maxUtil, 2), barX + t * (barW - 1), 20); });
    $("legendtext").textContent = "utilization: the mean share of a batch's tokens an expert received (sums to about k per layer)";
  } else {
    ["≤⅛×", "¼×", "½×", "1× fair", "2×", "4×", "≥8×"].forEach(function (label, i) { ctx.fillText(label, barX + i / 6 * (barW - 1), 20); });
    $("legendtext").textContent = "tokens an expert received relative to an even split over the layer's experts (white = balanced)";
  }
}

function cellAt(ev) {
  var g = state.geometry;
  if (!g) return null;
  var rect = $("heatmap").getBoundingClientRect();
  var x = ev.clientX - rect.left - g.labelW, y = ev.clientY - rect.top - g.topH;
  if (x < 0 || y < 0) return null;
  var e = Math.floor(x / g.cellW), row = Math.floor(y / g.cellH);
  if (row >= state.layers.length || e >= g.experts) return null;
  var layer = state.layers[row], c = cellValue(layer, e);
  return c ? { layer: layer, expert: e, cell: c } : null;
}

function showTooltip(ev) {
  var tip = $("tooltip"), hit = cellAt(ev);
  if (!hit) { tip.style.display = "none"; return; }
  var c = hit.cell, l = hit.layer;
  var dead = get(l, "balance.dead_expert_indices");
  var lines = [
    "layer " + l.layer + " · expert " + hit.expert + (c.tokens === 0 ? " · no tokens" : ""),
    "tokens: " + fmtInt(c.tokens),
    "share: " + (c.share === null ? "–" : (c.share * 100).toFixed(2) + "%") + " (" + (c.ratio === null ? "–" : fmt(c.ratio, 2) + "× fair") + ")",
    "utilization: " + fmt(c.util, 4)
  ];
  if (Array.isArray(dead) && dead.indexOf(hit.expert) >= 0) lines.push("dead in the recent window");
  tip.textContent = "";
  lines.forEach(function (t, i) { if (i) tip.appendChild(document.createElement("br")); tip.appendChild(document.createTextNode(t)); });
  tip.style.display = "block";
  var x = ev.clientX + 14, y = ev.clientY + 14;
  if (x + tip.offsetWidth > window.innerWidth) x = ev.clientX - tip.offsetWidth - 10;
  if (y + tip.offsetHeight > window.innerHeight) y = ev.clientY - tip.offsetHeight - 10;
  tip.style.left = x + "px"; tip.style.top = y + "px";
}

// ---- table ----

// Columns: key, header, value getter, formatter, class (problem marker), tooltip.
var COLUMNS = [
  ["layer", "Layer", function (l) { return l.layer; }, String, null, "layer name"],
  ["experts", "Experts", function (l) { return l.experts; }, fmtInt],
  ["routings", "Decisions", function (l) { return l.total_routings; }, fmtInt],
  ["tokens", "Tokens", function (l) { return l.total_tokens; }, fmtInt],
  ["eff", "Efficiency %", function (l) { return l.routing_efficiency; }, function (v) { return fmt(v, 2); }, function (v) { return v < 99 ? "bad" : null; }, "tokens not dropped, percent"],
  ["dropped", "Dropped", function (l) { return l.tokens_dropped; }, fmtInt, function (v) { return v > 0 ? "warn" : null; }],
  ["maxvio", "MaxVio", function (l) { return get(l, "balance.max_violation"); }, function (v) { return fmt(v, 3); }, function (v) { return v > 1 ? "bad" : v > 0.5 ? "warn" : null; }, "(max load - mean load) / mean load over the run"],
  ["maxviolast", "MaxVio last", function (l) { return get(l, "balance.max_violation_last"); }, function (v) { return fmt(v, 3); }, function (v) { return v > 1 ? "bad" : null; }, "MaxVio of the last decision"],
  ["balanced", "Balancedness", function (l) { return get(l, "balance.balancedness"); }, function (v) { return fmt(v, 3); }, null, "mean load / max load (1 = even)"],
  ["entropy", "Entropy", function (l) { return get(l, "balance.entropy"); }, function (v) { return fmt(v, 3); }, function (v) { return v < 0.8 ? "warn" : null; }, "load entropy / log(E) (1 = even)"],
  ["dead", "Dead", function (l) { return get(l, "balance.dead_experts"); }, fmtInt, function (v) { return v > 0 ? "bad" : null; }, "experts without a token in the recent window"],
  ["cv", "Util. CV", function (l) { return l.utilization_cv; }, function (v) { return fmt(v, 3); }],
  ["lb", "Avg LB loss", function (l) { return l.average_load_balance_loss; }, function (v) { return fmt(v, 4); }],
  ["z", "Avg z-loss", function (l) { return l.average_router_z_loss; }, function (v) { return fmt(v, 4); }],
  ["aux", "Avg aux loss", function (l) { return l.average_auxiliary_loss; }, function (v) { return fmt(v, 4); }],
  ["nonfinite", "Non-finite", function (l) { return l.nonfinite_losses; }, fmtInt, function (v) { return v > 0 ? "bad" : null; }, "losses sent as null (NaN or infinity)"],
  ["p99", "p99 ms", function (l) { return get(l, "latency.p99_ms"); }, function (v) { return fmt(v, 2); }, null, "routing latency, 99th percentile of the last 1000"]
];

function buildHeader() {
  var tr = document.createElement("tr");
  COLUMNS.forEach(function (col) {
    var th = document.createElement("th");
    th.textContent = col[1];
    if (col[5]) th.title = col[5];
    th.dataset.key = col[0];
    th.addEventListener("click", function () {
      state.sortDir = state.sortKey === col[0] ? -state.sortDir : (col[0] === "layer" ? 1 : -1);
      state.sortKey = col[0];
      renderTable();
    });
    tr.appendChild(th);
  });
  $("layers").tHead.appendChild(tr);
}

function renderTable() {
  var col = COLUMNS.find(function (c) { return c[0] === state.sortKey; }) || COLUMNS[0];
  var rows = state.layers.slice().sort(function (a, b) {
    var x = col[2](a), y = col[2](b);
    if (col[0] === "layer") return state.sortDir * naturalCompare(x, y);
    if (!isNum(x)) return isNum(y) ? 1 : 0;
    if (!isNum(y)) return -1;
    return state.sortDir * (x - y);
  });
  Array.prototype.forEach.call($("layers").tHead.rows[0].cells, function (th) {
    if (th.dataset.key === state.sortKey) th.setAttribute("aria-sort", state.sortDir > 0 ? "ascending" : "descending");
    else th.removeAttribute("aria-sort");
  });
  var body = document.createElement("tbody");
  rows.forEach(function (l) {
    var tr = document.createElement("tr");
    tr.dataset.layer = String(l.layer);
    COLUMNS.forEach(function (c) {
      var td = document.createElement("td"), v = c[2](l);
      td.textContent = c[3](v);
      if (c[0] !== "layer" && !isNum(v)) td.className = "na";
      else if (c[4] && isNum(v) && c[4](v)) td.className = c[4](v);
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  if (rows.length === 0) {
    var tr = document.createElement("tr"), td = document.createElement("td");
    td.colSpan = COLUMNS.length; td.className = "empty";
    td.textContent = "No layer yet: POST decisions to /v1/decisions.";
    tr.appendChild(td); body.appendChild(tr);
  }
  $("layers").replaceChild(body, $("layers").tBodies[0]);
}

function card(k, v, s) {
  var d = document.createElement("div"); d.className = "card";
  [["k", k], ["v", v], ["s", s || ""]].forEach(function (p) { var e = document.createElement("div"); e.className = p[0]; e.textContent = p[1]; d.appendChild(e); });
  return d;
}

function renderCards() {
  var L = state.layers, tokens = 0, dropped = 0, dead = 0, nonfinite = 0, worst = null, deadLayers = 0;
  L.forEach(function (l) {
    tokens += l.total_tokens || 0; dropped += l.tokens_dropped || 0; nonfinite += l.nonfinite_losses || 0;
    var d = get(l, "balance.dead_experts") || 0; dead += d; if (d > 0) deadLayers++;
    var mv = get(l, "balance.max_violation");
    if (isNum(mv) && (worst === null || mv > get(worst, "balance.max_violation"))) worst = l;
  });
  var box = $("cards"); box.textContent = "";
  box.appendChild(card("Layers", fmtInt(L.length)));
  box.appendChild(card("Tokens", fmtInt(tokens)));
  box.appendChild(card("Dropped", tokens > 0 ? (dropped / tokens * 100).toFixed(2) + "%" : "–", fmtInt(dropped) + " tokens"));
  box.appendChild(card("Worst MaxVio", worst ? fmt(get(worst, "balance.max_violation"), 3) : "–", worst ? "layer " + worst.layer : ""));
  box.appendChild(card("Dead experts", fmtInt(dead), deadLayers + (deadLayers === 1 ? " layer affected" : " layers affected")));
  box.appendChild(card("Non-finite losses", fmtInt(nonfinite)));
}

// ---- refresh loop ----

function setStatus(text, error) {
  var s = $("status"); s.textContent = text; s.className = error ? "error" : "";
}

function refresh() {
  if (state.busy) return Promise.resolve();
  state.busy = true;
  return loadAll().then(function (layers) {
    layers.forEach(function (l) { l._sum = (l.expert_token_counts || []).reduce(function (a, b) { return a + (b || 0); }, 0); });
    layers.sort(function (a, b) { return naturalCompare(a.layer, b.layer); });
    state.layers = layers;
    drawHeatmap();
    renderTable();
    renderCards();
    document.body.dataset.layers = layers.map(function (l) { return l.layer; }).join(" ");
    document.body.dataset.renderCount = String(Number(document.body.dataset.renderCount) + 1);
    document.body.dataset.render = "ok";
    setStatus("updated " + new Date().toLocaleTimeString());
  }, function (err) {
    document.body.dataset.fetchError = String(err && err.message || err);
    setStatus("cannot reach the daemon (" + (err && err.message || err) + "); retrying", true);
  }).then(function () { state.busy = false; });
}

function schedule() {
  if (state.timer) clearInterval(state.timer);
  state.timer = null;
  var seconds = Number($("interval").value);
  if (seconds > 0) state.timer = setInterval(refresh, seconds * 1000);
}

(function init() {
  var params = new URLSearchParams(location.search);
  if (params.has("refresh")) {
    var sel = $("interval"), want = params.get("refresh");
    if (!Array.prototype.some.call(sel.options, function (o) { return o.value === want; })) {
      var o = document.createElement("option"); o.value = want; o.textContent = want + " s"; sel.appendChild(o);
    }
    sel.value = want;
  }
  if (params.get("mode") === "util") $("mode").value = "util";
  buildHeader();
  $("interval").addEventListener("change", schedule);
  $("mode").addEventListener("change", function () { if (state.layers.length) drawHeatmap(); });
  $("heatmap").addEventListener("mousemove", showTooltip);
  $("heatmap").addEventListener("mouseleave", function () { $("tooltip").style.display = "none"; });
  var resizeTimer = null;
  window.addEventListener("resize", function () { clearTimeout(resizeTimer); resizeTimer = setTimeout(function () { if (state.layers.length) drawHeatmap(); }, 150); });
  refresh();
  schedule();
})();
</script>
</body>
</html>
"""#
}
