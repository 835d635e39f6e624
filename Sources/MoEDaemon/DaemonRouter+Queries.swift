import HTTPCore
import JSONOutput
import MoEStats

/// The reads: layers, the summary, /metrics, health, and the dashboard page. Each copies what
/// it needs out of the registry and renders the copy, outside every lock.
extension DaemonRouter {
    // MARK: Layers and the summary

    /// `?window=N`: an integer from 1 to 1,000,000; absent means the configured default; given
    /// twice is refused rather than silently taking one of them.
    static func window(_ request: HTTPRequest) -> (window: Int?, error: HTTPResponse?) {
        let given = (request.query ?? "").split(separator: "&").filter {
            PercentDecoding.decode($0.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0])
                == "window"
        }
        if given.count > 1 {
            return (nil, .error(400, "window is given more than once", field: "window"))
        }
        guard let raw = request.queryParameter("window") else { return (nil, nil) }
        guard let n = Int(raw), (1...1_000_000).contains(n) else {
            return (nil, .error(400, "window must be an integer from 1 to 1000000", field: "window"))
        }
        return (n, nil)
    }

    /// `GET /v1/layers/{layer}`: one layer's full summary.
    func layerSummary(_ name: String, request: HTTPRequest, settings current: Settings) -> HTTPResponse {
        let (window, windowError) = Self.window(request)
        if let windowError { return windowError }
        guard let snapshot = registry.snapshot(name) else {
            return .error(404, "no such layer: \(name)", field: "layer")
        }
        var w = JSONWriter(capacity: 1024 + snapshot.experts * 48)
        snapshot.summary(window: window, now: clock(), workerTTL: current.workerTTLSeconds).writeJSON(&w)
        return .json(200, w.bytes + [0x0A])
    }

    /// `GET /v1/layers`: every layer's headline numbers, in natural order.
    func layersList(settings current: Settings) -> HTTPResponse {
        let (now, ttl) = (clock(), current.workerTTLSeconds)
        let summaries = registry.snapshots().map { $0.summary(window: nil, now: now, workerTTL: ttl) }
            .sorted { LayerOrder.precedes($0.layer, $1.layer) }
        var w = JSONWriter(capacity: 256 + summaries.count * 512)
        w.beginObject()
        w.key("layers")
        w.beginArray()
        for s in summaries { Headline(s).writeJSON(&w) }
        w.endArray()
        w.endObject()
        return .json(200, w.bytes + [0x0A])
    }

    /// `GET /v1/summary`: every layer's full summary with totals and spreads, in natural order.
    func summary(_ request: HTTPRequest, settings current: Settings) -> HTTPResponse {
        let (window, windowError) = Self.window(request)
        if let windowError { return windowError }
        let (now, ttl) = (clock(), current.workerTTLSeconds)
        let summaries = registry.snapshots().map { $0.summary(window: window, now: now, workerTTL: ttl) }
            .sorted { LayerOrder.precedes($0.layer, $1.layer) }
        // Streamed: the text is written as the client reads it (`SummaryBody`).
        return HTTPResponse(status: 200, headers: HTTPResponse.jsonHeaders, source: SummaryBody(summaries))
    }

    // MARK: /metrics

    /// `GET /metrics`: the Prometheus exposition, in the format `Accept` asks for, gzipped when
    /// `Accept-Encoding` allows, whatever its size (a scrape is large and frequent).
    func metrics(_ request: HTTPRequest, settings current: Settings) -> HTTPResponse {
        let format = ExpositionFormat.negotiate(accept: request.headers["accept"])
        let now = clock()
        var snapshots = registry.metricsViews()
        if let layerTTL = current.layerTTLSeconds { snapshots.removeAll { $0.isIdle(now: now, ttl: layerTTL) } }
        let daemon = MetricsRenderer.DaemonState(
            counters: counters.snapshot(), openConnections: openConnections(), layers: snapshots.count,
            process: ProcessMetrics.read(), version: version)
        // Streamed: the exposition is written as the client reads it (`MetricsBody`).
        let body = MetricsBody(
            snapshots, daemon: daemon, format: format, perExpertSeries: current.perExpertSeries,
            now: now, workerTTL: current.workerTTLSeconds)
        return Self.negotiateEncoding(
            HTTPResponse(status: 200, headers: ["content-type": format.contentType], source: body),
            request, vary: "Accept, Accept-Encoding", threshold: 0)
    }

    // MARK: Health and the dashboard

    /// `GET /healthz`: liveness, the process answers.
    static func healthz() -> HTTPResponse { .json(200, Array("{\"status\":\"ok\"}\n".utf8)) }

    /// `GET /readyz`: listening and not shutting down.
    func readyz() -> HTTPResponse {
        isReady
            ? .json(200, Array("{\"status\":\"ready\"}\n".utf8)) : .error(503, "not ready: starting or shutting down")
    }

    /// The dashboard page served at `/` and `/dashboard`.
    static let dashboardHTML: String? = DashboardPage.html

    /// `GET /`, `GET /dashboard`: the page, self-contained.
    static func dashboard() -> HTTPResponse {
        guard let html = dashboardHTML else { return .error(404, "no dashboard in this build") }
        return HTTPResponse(status: 200, headers: ["content-type": "text/html; charset=utf-8"], body: Array(html.utf8))
    }
}
