import Foundation
import HTTPCore
import JSONOutput
import Logging
import MoEStats
import Synchronization

/// The daemon's routes: a request in, a response out, no sockets.
///
/// Every error becomes a JSON `{"error", "field", "index"}` response here, in one place, with the
/// status the README lists (400 malformed or empty, 404 unknown, 405 with `Allow`, 409 conflict,
/// 413 a gzip body inflating past the body limit, 415 content type or coding, 422 invalid,
/// 507 caps). Handlers run on the connection's event-loop thread
/// and never block: each takes at most one short lock per layer, and rendering (JSON, /metrics,
/// gzip) happens on copies, outside every lock.
public final class DaemonRouter: HTTPHandler, Sendable {
    /// What a reload may change without restarting the listener.
    public struct Settings: Sendable, Equatable {
        public var decoderLimits = DecisionDecoder.Limits()
        public var perExpertSeries = true
        /// Token POST and DELETE require (and reads, with `authReads`); nil for none.
        public var authToken: AuthToken?
        public var authReads = false
        /// Seconds of silence after which a worker is stale; nil for never.
        public var workerTTLSeconds: Double?
        /// Seconds without an update after which a layer leaves /metrics; nil for never.
        public var layerTTLSeconds: Double?
        /// Largest body accepted after gzip content decoding (`http.max_body_bytes`), so a small
        /// compressed body cannot expand past the limit the transport enforces on the wire.
        public var maxBodyBytes = HTTPLimits().maxBodyBytes
        public init() {}
    }

    public let registry: LayerRegistry
    public let counters = DaemonCounters()
    public let version: String
    private let settings: Mutex<Settings>
    private let ready = Atomic<Bool>(false)
    private let changes = Atomic<UInt64>(0)
    private let openConnections: @Sendable () -> Int
    private let clock: @Sendable () -> Double
    private let logger: Logger

    public init(registry: LayerRegistry, settings: Settings, version: String, logger: Logger,
                openConnections: @escaping @Sendable () -> Int = { 0 },
                clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.registry = registry
        self.settings = Mutex(settings)
        self.version = version
        self.logger = logger
        self.openConnections = openConnections
        self.clock = clock
    }

    /// Builds the router for a configuration (the registry included).
    public convenience init(configuration c: DaemonConfiguration, version: String, logger: Logger,
                            openConnections: @escaping @Sendable () -> Int = { 0 },
                            clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.init(registry: LayerRegistry(configuration: c.statsConfiguration), settings: c.routerSettings(token: nil),
                  version: version, logger: logger, openConnections: openConnections, clock: clock)
    }

    /// Readiness as `/readyz` reports it: false before the listener is up and once shutdown began.
    public var isReady: Bool {
        get { ready.load(ordering: .acquiring) }
        set { ready.store(newValue, ordering: .releasing) }
    }

    public func update(settings new: Settings) { settings.withLock { $0 = new } }

    /// Counts ingests and resets, each counted after the registry changed, so a state save that
    /// read the generation before exporting can tell whether anything changed since (the state
    /// file is skipped when nothing did).
    public var generation: UInt64 { changes.load(ordering: .acquiring) }
    private func noteChange() { changes.add(1, ordering: .releasing) }
    public var currentSettings: Settings { settings.withLock { $0 } }

    // MARK: Routing

    /// Route templates, the only values of the `route` label.
    enum Route: String, CaseIterable {
        case decisions = "/v1/decisions"
        case layerDecisions = "/v1/layers/{layer}/decisions"
        case layers = "/v1/layers"
        case layer = "/v1/layers/{layer}"
        case summary = "/v1/summary"
        case metrics = "/metrics"
        case healthz = "/healthz"
        case readyz = "/readyz"
        case dashboard = "/"
        case unmatched = "other"

        /// This route's row in `DaemonCounters.routes` (its position in `allCases`).
        var counterRow: Int {
            switch self {
            case .decisions: 0
            case .layerDecisions: 1
            case .layers: 2
            case .layer: 3
            case .summary: 4
            case .metrics: 5
            case .healthz: 6
            case .readyz: 7
            case .dashboard: 8
            case .unmatched: 9
            }
        }

        var allow: String {
            switch self {
            case .decisions, .layerDecisions: "POST"
            case .layers, .layer: "GET, HEAD, DELETE"
            case .summary, .metrics, .healthz, .readyz, .dashboard: "GET, HEAD"
            case .unmatched: ""
            }
        }
    }

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        let (route, layer) = Self.match(request.path)
        // Read once per request: one lock instead of one per use, and one consistent view of a
        // configuration a reload may replace meanwhile.
        let current = settings.withLock { $0 }
        let response: HTTPResponse
        if let refusal = authorize(request, route: route, settings: current) {
            response = refusal
        } else {
            response = respond(request, route: route, layer: layer, settings: current)
        }
        counters.recordRequest(routeIndex: route.counterRow, code: response.status)
        return response
    }

    /// A request the protocol layer refused before routing (400, 408, 413, 414, 431, 501, 505):
    /// counted under the route label "other", since no route was matched, and answered with
    /// the JSON error body.
    public func refusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        counters.recordRequest(routeIndex: Route.unmatched.counterRow, code: status)
        return .error(status, message, headers: headers)
    }

    /// A connection past the cap gets the JSON error body too; no request was read, so none is counted.
    public func connectionRefusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        .error(status, message, headers: headers)
    }

    static func match(_ path: String) -> (Route, String?) {
        switch path {
        case "/v1/decisions": return (.decisions, nil)
        case "/v1/layers": return (.layers, nil)
        case "/v1/summary": return (.summary, nil)
        case "/metrics": return (.metrics, nil)
        case "/healthz": return (.healthz, nil)
        case "/readyz": return (.readyz, nil)
        case "/", "/dashboard": return (.dashboard, nil)
        default: break
        }
        let parts = path.split(separator: "/", omittingEmptySubsequences: false)
        // "", "v1", "layers", name [, "decisions"]
        guard parts.count == 4 || parts.count == 5, parts[0].isEmpty, parts[1] == "v1", parts[2] == "layers",
              !parts[3].isEmpty, let name = PercentDecoding.decode(parts[3], plusAsSpace: false) else {
            return (.unmatched, nil)
        }
        if parts.count == 4 { return (.layer, name) }
        return parts[4] == "decisions" ? (.layerDecisions, name) : (.unmatched, nil)
    }

    /// Nil when the request may proceed; a 401 with `WWW-Authenticate` (RFC 6750 section 3)
    /// when a token is configured and the request needs it but lacks it. Writes always need it;
    /// reads only with `authReads`; liveness, readiness and unknown paths never do.
    private func authorize(_ request: HTTPRequest, route: Route, settings current: Settings) -> HTTPResponse? {
        guard let token = current.authToken else { return nil }
        let reads = current.authReads
        let isWrite = request.method != "GET" && request.method != "HEAD"
        switch route {
        case .healthz, .readyz, .unmatched: return nil
        case .dashboard where !isWrite: return nil
        default: break
        }
        guard isWrite || reads else { return nil }
        if token.accepts(authorization: request.headers["authorization"]) { return nil }
        if route == .decisions || route == .layerDecisions { counters.recordRejection(reason: "unauthorized") }
        logger.debug("refused: no valid bearer token", metadata: ["path": "\(request.path)", "method": "\(request.method)"])
        let challenge = request.headers["authorization"] == nil
            ? "Bearer realm=\"moe-metricsd\"" : "Bearer realm=\"moe-metricsd\", error=\"invalid_token\""
        return .error(401, "a valid bearer token is required", headers: ["www-authenticate": challenge])
    }

    private func respond(_ request: HTTPRequest, route: Route, layer: String?, settings current: Settings) -> HTTPResponse {
        let method = request.method
        // Computed only by the cases that ask: an ingest POST matches before any of them, so it
        // pays for no comparison of two different strings (the slow path of String ==).
        var isGet: Bool { method == "GET" || method == "HEAD" }
        switch (route, method) {
        case (.unmatched, _):
            // The path is echoed for the caller's benefit, but bounded: a long target must not
            // come back as a long error body.
            let path = request.path.utf8.count <= 200 ? request.path : String(request.path.prefix(200)) + "..."
            return .error(404, "no such path: \(path)")
        case (.decisions, "POST"):
            return ingest(request, layer: nil, settings: current)
        case (.layerDecisions, "POST"):
            return ingest(request, layer: layer, settings: current)
        case (.layers, _) where isGet:
            return Self.negotiateEncoding(layersList(), request)
        case (.layers, "DELETE"):
            registry.resetAll()
            noteChange()
            logger.info("all layers reset")
            return .json(200, Array("{\"reset\":\"all\"}\n".utf8))
        case (.layer, _) where isGet:
            return Self.negotiateEncoding(layerSummary(layer ?? "", request: request), request)
        case (.layer, "DELETE"):
            let name = layer ?? ""
            guard registry.reset(name) else { return .error(404, "no such layer: \(name)", field: "layer") }
            noteChange()
            logger.info("layer reset", metadata: ["layer": "\(name)"])
            var w = JSONWriter()
            w.beginObject()
            w.field("reset", name)
            w.endObject()
            return .json(200, w.bytes + [0x0A])
        case (.summary, _) where isGet:
            return Self.negotiateEncoding(summary(request), request)
        case (.metrics, _) where isGet:
            return metrics(request)
        case (.healthz, _) where isGet:
            return .json(200, Array("{\"status\":\"ok\"}\n".utf8))
        case (.readyz, _) where isGet:
            return isReady ? .json(200, Array("{\"status\":\"ready\"}\n".utf8))
                : .error(503, "not ready: starting or shutting down")
        case (.dashboard, _) where isGet:
            guard let html = Self.dashboardHTML else { return .error(404, "no dashboard in this build") }
            return HTTPResponse(status: 200, headers: ["content-type": "text/html; charset=utf-8"],
                                body: Array(html.utf8))
        default:
            return .error(405, "method \(method) not allowed on \(route.rawValue)", headers: ["allow": route.allow])
        }
    }

    // MARK: Ingest

    /// Media types a POST may carry (RFC 9110 section 8.3). No Content-Type at all is taken as
    /// JSON, for scripts that send none; anything else named is refused with 415 and
    /// `Accept-Post` listing what we take.
    static func bodyFormat(_ contentType: String?) -> DecisionDecoder.Format? {
        guard let contentType else { return .json }
        // The value nearly every client sends, matched on its bytes (media types are
        // case-insensitive, RFC 9110 section 8.3.1); anything else takes the general parse below,
        // which gives the same answer for these values (tested), at a tenth of the cost.
        if let format = commonBodyFormat(contentType) { return format }
        return parsedBodyFormat(contentType)
    }

    /// `application/json` or `application/x-ndjson` exactly, in any ASCII case; nil for anything
    /// else (parameters, whitespace, other types), which `parsedBodyFormat` decides.
    static func commonBodyFormat(_ contentType: String) -> DecisionDecoder.Format? {
        contentType.utf8.withContiguousStorageIfAvailable { bytes -> DecisionDecoder.Format? in
            if asciiCaseInsensitiveEquals(bytes, "application/json") { return .json }
            if asciiCaseInsensitiveEquals(bytes, "application/x-ndjson") { return .ndjson }
            return nil
        } ?? nil
    }

    private static func asciiCaseInsensitiveEquals(_ bytes: UnsafeBufferPointer<UInt8>, _ lowercase: StaticString) -> Bool {
        guard bytes.count == lowercase.utf8CodeUnitCount else { return false }
        let l = lowercase.utf8Start
        for i in 0..<bytes.count {
            let b = bytes[i]
            if ((b >= 0x41 && b <= 0x5A) ? b | 0x20 : b) != l[i] { return false }
        }
        return true
    }

    /// The general parse of a Content-Type value: type, then `charset` parameters.
    static func parsedBodyFormat(_ contentType: String) -> DecisionDecoder.Format? {
        let parts = contentType.split(separator: ";").map { String($0).trimmingWhitespace().lowercased() }
        for p in parts.dropFirst() where p.hasPrefix("charset=") {
            let charset = p.dropFirst("charset=".count).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            if charset != "utf-8" && charset != "utf8" && charset != "us-ascii" { return nil }
        }
        switch parts.first ?? "" {
        case "application/json": return .json
        case "application/x-ndjson", "application/ndjson", "application/jsonl", "application/x-jsonlines": return .ndjson
        default: return nil
        }
    }

    static let acceptPost = "application/json, application/x-ndjson"

    /// The dashboard page served at `/` and `/dashboard`.
    static let dashboardHTML: String? = DashboardPage.html

    private func ingest(_ request: HTTPRequest, layer: String?, settings current: Settings) -> HTTPResponse {
        if let layer, !LayerName.isValid(layer) {
            counters.recordRejection(reason: "invalid")
            return .error(422, "layer name must be 1 to 64 characters of [A-Za-z0-9_.:-]", field: "layer")
        }
        guard let format = Self.bodyFormat(request.headers.value(lowercasedName: "content-type")) else {
            counters.recordRejection(reason: "unsupported_media_type")
            logger.debug("refused POST: content type", metadata: ["content-type": "\(request.headers["content-type"] ?? "")"])
            return .error(415, "Content-Type must be application/json or application/x-ndjson",
                          headers: ["accept-post": Self.acceptPost])
        }
        let (limits, maxBody) = (current.decoderLimits, current.maxBodyBytes)
        var body = request.body
        // Most bodies carry no Content-Encoding: one lookup instead of collecting every value.
        let coding = request.headers.value(lowercasedName: "content-encoding") == nil
            ? .identity : Self.bodyCoding(request.headers.values("content-encoding"))
        switch coding {
        case .identity:
            break
        case .unsupported:
            counters.recordRejection(reason: "unsupported_media_type")
            logger.debug("refused POST: content coding", metadata: ["content-encoding": "\(request.headers["content-encoding"] ?? "")"])
            // RFC 9110 section 15.5.16: a 415 for a content coding lists the codings accepted.
            return .error(415, "Content-Encoding must be gzip or identity", headers: ["accept-encoding": "gzip, identity"])
        case .gzip:
            switch Gzip.inflate(body, limit: maxBody) {
            case .inflated(let plain):
                body = plain
            case .tooLarge:
                counters.recordRejection(reason: "too_large")
                return .error(413, "the body inflates to more than \(maxBody) bytes (http.max_body_bytes)")
            case .corrupt:
                counters.recordRejection(reason: "malformed")
                return .error(400, "Content-Encoding is gzip but the body is not valid gzip data")
            }
        }
        // Zero decisions is never what a client meant: an empty JSON body and an empty (or blank)
        // NDJSON body are the same mistake and get the same answer.
        if body.allSatisfy({ $0 == 0x20 || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) {
            counters.recordRejection(reason: "malformed")
            return .error(400, Self.emptyBodyMessage)
        }
        do throws(DecisionError) {
            let decisions = try DecisionDecoder(limits: limits).decode(body, format: format)
            // `[]` is the same mistake as an empty body, whatever its syntax.
            guard !decisions.isEmpty else {
                counters.recordRejection(reason: "malformed")
                return .error(400, Self.emptyBodyMessage)
            }
            let accepted = try registry.ingest(decisions, defaultLayer: layer, now: clock())
            noteChange()
            return .json(200, Self.acceptedBody(accepted))
        } catch {
            let (status, reason) = Self.status(of: error.kind)
            counters.recordRejection(reason: reason)
            logger.debug("refused POST", metadata: ["path": "\(request.path)", "status": "\(status)",
                                                   "error": "\(error.description)"])
            return .error(status, error.message, field: error.field, index: error.index)
        }
    }

    /// `{"accepted":N}` and a newline, as `JSONWriter` writes it, in one buffer.
    static func acceptedBody(_ accepted: Int) -> [UInt8] {
        // One decision per POST is the common case: its answer is shared, not built each time.
        if accepted == 1 { return acceptedOne }
        return makeAcceptedBody(accepted)
    }

    static let acceptedOne = makeAcceptedBody(1)

    static func makeAcceptedBody(_ accepted: Int) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(32)
        body.append(contentsOf: "{\"accepted\":".utf8)
        body.append(contentsOf: String(accepted).utf8)
        body.append(contentsOf: "}\n".utf8)
        return body
    }

    static let emptyBodyMessage = "empty body: send at least one decision (a JSON object, an array of them, or NDJSON lines)"

    /// A request body's content coding (RFC 9110 section 8.4): none or `identity`, `gzip` (or
    /// `x-gzip`, section 8.4.1.3) once, or anything else, which we cannot decode.
    enum BodyCoding: Equatable { case identity, gzip, unsupported }

    static func bodyCoding(_ fieldValues: [String]) -> BodyCoding {
        let codings = fieldValues.flatMap { $0.split(separator: ",") }
            .map { String($0).trimmingWhitespace().lowercased() }
            .filter { !$0.isEmpty && $0 != "identity" }
        if codings.isEmpty { return .identity }
        if codings.count == 1, codings[0] == "gzip" || codings[0] == "x-gzip" { return .gzip }
        return .unsupported
    }

    /// JSON bodies at least this long are gzipped when the client allows it.
    static let gzipThreshold = 1024

    /// The `Accept-Encoding` negotiation of /metrics, for JSON answers: a large summary polled
    /// every few seconds by the dashboard shrinks tenfold. `Vary` is set on every answer of the
    /// route, compressed or not, so a cache never serves one coding for the other (RFC 9110
    /// section 12.5.5).
    static func negotiateEncoding(_ response: HTTPResponse, _ request: HTTPRequest) -> HTTPResponse {
        var r = response
        r.headers.add("vary", "Accept-Encoding")
        if r.status == 200, r.body.count >= gzipThreshold, Gzip.accepted(by: request.headers["accept-encoding"]),
           let gz = Gzip.compress(r.body) {
            r.body = gz
            r.headers.add("content-encoding", "gzip")
        }
        return r
    }

    static func status(of kind: DecisionError.Kind) -> (Int, String) {
        switch kind {
        case .malformed: (400, "malformed")
        case .invalid: (422, "invalid")
        case .conflict: (409, "conflict")
        case .tooManyLayers: (507, "too_many_layers")
        case .tooManyExperts: (507, "too_many_experts")
        }
    }

    // MARK: Queries

    /// `?window=N`: an integer from 1 to 1,000,000; absent means the configured default; given
    /// twice is refused rather than silently taking one of them.
    static func window(_ request: HTTPRequest) -> (window: Int?, error: HTTPResponse?) {
        let given = (request.query ?? "").split(separator: "&").filter {
            PercentDecoding.decode($0.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)[0]) == "window"
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

    private func layerSummary(_ name: String, request: HTTPRequest) -> HTTPResponse {
        let (window, windowError) = Self.window(request)
        if let windowError { return windowError }
        guard let snapshot = registry.snapshot(name) else {
            return .error(404, "no such layer: \(name)", field: "layer")
        }
        var w = JSONWriter(capacity: 1024 + snapshot.experts * 48)
        let ttl = settings.withLock { $0.workerTTLSeconds }
        snapshot.summary(window: window, now: clock(), workerTTL: ttl).writeJSON(&w)
        return .json(200, w.bytes + [0x0A])
    }

    private func layersList() -> HTTPResponse {
        let (now, ttl) = (clock(), settings.withLock { $0.workerTTLSeconds })
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

    private func summary(_ request: HTTPRequest) -> HTTPResponse {
        let (window, windowError) = Self.window(request)
        if let windowError { return windowError }
        let (now, ttl) = (clock(), settings.withLock { $0.workerTTLSeconds })
        let summaries = registry.snapshots().map { $0.summary(window: window, now: now, workerTTL: ttl) }
            .sorted { LayerOrder.precedes($0.layer, $1.layer) }
        var w = JSONWriter(capacity: 1024 + summaries.count * 2048)
        FleetSummary(summaries).writeJSON(&w)
        return .json(200, w.bytes + [0x0A])
    }

    private func metrics(_ request: HTTPRequest) -> HTTPResponse {
        let format = ExpositionFormat.negotiate(accept: request.headers["accept"])
        let (perExpert, workerTTL, layerTTL) = settings.withLock { ($0.perExpertSeries, $0.workerTTLSeconds, $0.layerTTLSeconds) }
        let now = clock()
        var snapshots = registry.metricsViews()
        if let layerTTL { snapshots.removeAll { $0.isIdle(now: now, ttl: layerTTL) } }
        let daemon = MetricsRenderer.DaemonState(
            counters: counters.snapshot(), openConnections: openConnections(), layers: snapshots.count,
            process: ProcessMetrics.read(), version: version)
        var body = MetricsRenderer.render(snapshots, daemon: daemon, format: format, perExpertSeries: perExpert,
                                          now: now, workerTTL: workerTTL)
        var headers: HTTPHeaders = ["content-type": format.contentType, "vary": "Accept, Accept-Encoding"]
        if Gzip.accepted(by: request.headers["accept-encoding"]), let gz = Gzip.compress(body) {
            body = gz
            headers.add("content-encoding", "gzip")
        }
        return HTTPResponse(status: 200, headers: headers, body: body)
    }
}

extension DaemonConfiguration {
    /// The statistics engine's part of the configuration (0 means "unknown" for the capacity defaults).
    public var statsConfiguration: StatsConfiguration {
        var s = StatsConfiguration()
        s.maxLayers = maxLayers
        s.maxExperts = maxExperts
        s.defaultWindow = defaultWindow
        s.latencyBucketsSeconds = latencyBucketsSeconds
        s.defaultTopK = defaultTopK > 0 ? defaultTopK : nil
        s.defaultCapacityFactor = defaultCapacityFactor > 0 ? defaultCapacityFactor : nil
        s.maxWorkersPerLayer = maxWorkersPerLayer
        return s
    }

    /// The router's part of the configuration, with the token resolved by `AuthToken.resolve`.
    public func routerSettings(token: AuthToken?) -> DaemonRouter.Settings {
        var r = DaemonRouter.Settings()
        r.authToken = token
        r.authReads = authReads
        r.workerTTLSeconds = workerTTLSeconds > 0 ? workerTTLSeconds : nil
        r.layerTTLSeconds = layerTTLSeconds > 0 ? layerTTLSeconds : nil
        r.decoderLimits.maxExperts = maxExperts
        r.decoderLimits.maxDecisions = maxDecisionsPerRequest
        r.decoderLimits.maxAssignments = maxAssignments
        r.decoderLimits.maxDepth = maxJSONDepth
        r.perExpertSeries = perExpertSeries
        r.maxBodyBytes = http.maxBodyBytes
        return r
    }
}

/// The order of layers in `/v1/layers` and `/v1/summary`: natural, so `syn.2` comes before
/// `syn.10` (digit runs compare as numbers, everything else byte by byte), as the dashboard shows
/// them. Equal-looking names (`l01`, `l1`) fall back to plain byte order, so the order is total.
enum LayerOrder {
    static func precedes(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var i = 0, j = 0
        while i < x.count && j < y.count {
            if isDigit(x[i]) && isDigit(y[j]) {
                let si = i, sj = j
                while i < x.count && isDigit(x[i]) { i += 1 }
                while j < y.count && isDigit(y[j]) { j += 1 }
                let p = x[si..<i].drop { $0 == UInt8(ascii: "0") }, q = y[sj..<j].drop { $0 == UInt8(ascii: "0") }
                if p.count != q.count { return p.count < q.count }
                if !p.elementsEqual(q) { return p.lexicographicallyPrecedes(q) }
            } else {
                if x[i] != y[j] { return x[i] < y[j] }
                i += 1
                j += 1
            }
        }
        if (x.count - i) != (y.count - j) { return (x.count - i) < (y.count - j) }
        return a.utf8.lexicographicallyPrecedes(b.utf8)
    }

    private static func isDigit(_ c: UInt8) -> Bool { c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
}
