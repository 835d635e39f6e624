import HTTPCore
import JSONOutput
import MoEPlacement
import MoEStats

/// The reads: layers, the summary, /metrics, health, and the dashboard page. Each copies what
/// it needs out of the registry and renders the copy, outside every lock.
extension DaemonRouter {
    // MARK: Layers and the summary

    /// An integer query parameter within `range`; absent is nil; not an integer, out of range or
    /// given twice is a 400 naming it, rather than silently taking one of two values.
    static func integer(_ name: String, in range: ClosedRange<Int>, _ request: HTTPRequest) -> (
        value: Int?, error: HTTPResponse?
    ) {
        let given = (request.query ?? "").split(separator: "&").filter {
            PercentDecoding.decode($0.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0])
                == name
        }
        if given.count > 1 {
            return (nil, .error(400, "\(name) is given more than once", field: name))
        }
        guard let raw = request.queryParameter(name) else { return (nil, nil) }
        guard let n = Int(raw), range.contains(n) else {
            return (
                nil,
                .error(400, "\(name) must be an integer from \(range.lowerBound) to \(range.upperBound)", field: name)
            )
        }
        return (n, nil)
    }

    /// `?window=N`: an integer from 1 to 1,000,000; absent means the configured default.
    static func window(_ request: HTTPRequest) -> (window: Int?, error: HTTPResponse?) {
        let (n, error) = integer("window", in: 1...1_000_000, request)
        return (n, error)
    }

    /// `?steps=N`: a window of the newest N buckets, 1 to the history's size.
    func steps(_ request: HTTPRequest) -> (steps: Int?, error: HTTPResponse?) {
        let (n, error) = Self.integer("steps", in: 1...registry.configuration.clampedHistorySteps, request)
        return (n, error)
    }

    /// `GET /v1/layers/{layer}`: one layer's full summary; with `?steps=N`, the summary over the
    /// newest N buckets.
    func layerSummary(_ name: String, request: HTTPRequest, settings current: Settings) -> HTTPResponse {
        let (window, windowError) = Self.window(request)
        if let windowError { return windowError }
        let (steps, stepsError) = steps(request)
        if let stepsError { return stepsError }
        let (now, ttl) = (clock(), current.workerTTLSeconds)
        let spec = placement
        if let steps {
            guard let window = registry.window(name, steps: steps, now: now, workerTTL: ttl) else {
                return .error(404, "no such layer: \(name)", field: "layer")
            }
            var w = JSONWriter(capacity: 1024 + window.experts * 24)
            window.writeJSON(&w, extra: placementField(spec, layer: name, tokens: window.totals.expertTokens))
            return .json(200, w.bytes + [0x0A])
        }
        guard let snapshot = registry.snapshot(name) else {
            return .error(404, "no such layer: \(name)", field: "layer")
        }
        var w = JSONWriter(capacity: 1024 + snapshot.experts * 48)
        snapshot.summary(window: window, now: now, workerTTL: ttl).writeJSON(
            &w, extra: placementField(spec, layer: name, tokens: snapshot.expertTokens))
        return .json(200, w.bytes + [0x0A])
    }

    /// `GET /v1/layers/{layer}/history?last=N&experts=1`: the newest N buckets, oldest first.
    func layerHistory(_ name: String, request: HTTPRequest, settings current: Settings) -> HTTPResponse {
        let (last, lastError) = Self.integer("last", in: 1...registry.configuration.clampedHistorySteps, request)
        if let lastError { return lastError }
        let experts: Bool
        switch request.queryParameter("experts") {
        case nil, "0", "false": experts = false
        case "1", "true": experts = true
        default: return .error(400, "experts must be 1 or 0", field: "experts")
        }
        guard
            let history = registry.history(
                name, last: last ?? 100, now: clock(), workerTTL: current.workerTTLSeconds)
        else {
            return .error(404, "no such layer: \(name)", field: "layer")
        }
        var w = JSONWriter(capacity: 512 + history.buckets.count * (400 + (experts ? history.experts * 16 : 0)))
        // With a placement, each step's rank figures, by the function of the run-wide ones.
        let stepPlacement = placement.map { spec in
            { (w: inout JSONWriter, totals: StepTotals) in spec.writeField(&w, layer: name, tokens: totals.expertTokens)
            }
        }
        history.writeJSON(&w, experts: experts, extra: stepPlacement)
        return .json(200, w.bytes + [0x0A])
    }

    /// `GET /v1/layers`: every layer's headline numbers and its newest complete step, in natural order.
    func layersList(settings current: Settings) -> HTTPResponse {
        let (now, ttl) = (clock(), current.workerTTLSeconds)
        let summaries = registry.snapshots().map { $0.summary(window: nil, now: now, workerTTL: ttl) }
            .sorted { LayerOrder.precedes($0.layer, $1.layer) }
        var steps = [String: StepHeadline]()
        for h in registry.stepHeadlines(now: now, workerTTL: ttl, recent: true) { steps[h.layer] = h }
        let spec = placementStore.withLock { $0 }
        var w = JSONWriter(capacity: 256 + summaries.count * 640)
        w.beginObject()
        w.key("layers")
        w.beginArray()
        for s in summaries {
            guard let spec else {
                Headline(s, steps: steps[s.layer]).writeJSON(&w)
                continue
            }
            // With a placement, each layer's rank balancedness and its straggler.
            var one = JSONWriter(capacity: 768)
            Headline(s, steps: steps[s.layer]).writeJSON(&one)
            let figures = try? spec.figures(layer: s.layer, tokens: s.expertTokenCounts).get()
            w.raw(
                JSONBody.appending(one.bytes) { f in
                    f.field("rank_balancedness", figures?.balancedness)
                    f.field("worst_rank", figures?.worstRank)
                })
        }
        w.endArray()
        w.endObject()
        return .json(200, w.bytes + [0x0A])
    }

    /// `GET /v1/summary`: every layer's full summary with totals and spreads, in natural order;
    /// with `?steps=N`, every layer's summary over its newest N buckets.
    func summary(_ request: HTTPRequest, settings current: Settings) -> HTTPResponse {
        let (window, windowError) = Self.window(request)
        if let windowError { return windowError }
        let (steps, stepsError) = steps(request)
        if let stepsError { return stepsError }
        let (now, ttl) = (clock(), current.workerTTLSeconds)
        if let steps {
            let windows = registry.windows(steps: steps, now: now, workerTTL: ttl)
                .sorted { LayerOrder.precedes($0.layer, $1.layer) }
            var w = JSONWriter(capacity: 1024 + windows.count * 2048)
            WindowFleetSummary(steps: steps, windows: windows, placement: placement).writeJSON(&w)
            return .json(200, w.bytes + [0x0A])
        }
        let summaries = registry.snapshots().map { $0.summary(window: window, now: now, workerTTL: ttl) }
            .sorted { LayerOrder.precedes($0.layer, $1.layer) }
        // Streamed: the text is written as the client reads it (`SummaryBody`).
        return HTTPResponse(
            status: 200, headers: HTTPResponse.jsonHeaders, source: SummaryBody(summaries, placement: placement))
    }

    // MARK: /metrics

    /// `GET /metrics`: the Prometheus exposition, in the format `Accept` asks for, gzipped when
    /// `Accept-Encoding` allows, whatever its size (a scrape is large and frequent).
    func metrics(_ request: HTTPRequest, settings current: Settings) -> HTTPResponse {
        let format = ExpositionFormat.negotiate(accept: request.headers["accept"])
        let now = clock()
        var snapshots = registry.metricsViews(now: now, workerTTL: current.workerTTLSeconds)
        if let layerTTL = current.layerTTLSeconds { snapshots.removeAll { $0.isIdle(now: now, ttl: layerTTL) } }
        let daemon = MetricsRenderer.DaemonState(
            counters: counters.snapshot(), openConnections: openConnections(), bufferedBytes: bufferedBytes(),
            layers: snapshots.count,
            process: ProcessMetrics.read(), version: version)
        var rankFigures: [String: PlacementFigures] = [:]
        if let spec = placementStore.withLock({ $0 }) {
            for v in snapshots {
                if case .success(let f) = spec.figures(layer: v.layer, tokens: v.expertTokens) {
                    rankFigures[v.layer] = f
                }
            }
        }
        // Streamed: the exposition is written as the client reads it (`MetricsBody`).
        let body = MetricsBody(
            snapshots, daemon: daemon, format: format, expertSeries: current.expertSeries,
            now: now, workerTTL: current.workerTTLSeconds, rankFigures: rankFigures)
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
