/// The dashboard served at `GET /`: one self-contained HTML page, `Resources/dashboard.html` (inline
/// CSS and script, no external scripts, fonts or CDNs, because the daemon runs on training machines
/// without internet access), embedded into the binary at build time so nothing is installed beside it.
///
/// Each refresh fetches `GET /v1/summary`, which carries every layer's full summary; should that
/// fail or lack the per-expert counts, it falls back to `GET /v1/layers` and one
/// `GET /v1/layers/{layer}` per layer. It draws an expert-by-layer heatmap on a `<canvas>` (a
/// table of 64 x 256 cells would be 16k DOM nodes), with a colour legend and hover details, plus a
/// sortable table of each layer's efficiency, MaxVio, balancedness, entropy, dead experts, dropped
/// tokens and average losses. Script errors are also written into the page (`#errors`,
/// `data-errors` on `<body>`) and a successful render sets `data-render="ok"`, so a headless browser
/// test can check the page from its DOM alone.
enum DashboardPage {
    static let html = String(decoding: PackageResources.dashboard_html, as: UTF8.self)
}
