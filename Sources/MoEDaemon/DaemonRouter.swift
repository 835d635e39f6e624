import Foundation
import HTTPCore
import Logging
import MoEStats
import Synchronization

/// The daemon's routes: a request in, a response out, no sockets.
///
/// `routes` below is the one place an endpoint is declared; matching, the `Allow` header, the
/// request counter's `route` label, 404 and 405 all follow from it. Every error becomes a JSON
/// `{"error", "field", "index"}` response, with the status docs/api.md lists (400 malformed or
/// empty, 401 no token, 404 unknown, 405 with `Allow`, 409 conflict, 413 a gzip body inflating
/// past the body limit, 415 content type or coding, 422 invalid, 507 caps). Handlers run on the
/// connection's event-loop thread and never block: each takes at most one short lock per layer,
/// and rendering (JSON, /metrics, gzip) happens on copies, outside every lock.
public final class DaemonRouter: HTTPHandler, Sendable {
    public let registry: LayerRegistry
    public let counters = DaemonCounters()
    public let version: String
    private let settings: Mutex<Settings>
    private let ready = Atomic<Bool>(false)
    private let changes = Atomic<UInt64>(0)
    /// The placement set by `PUT /v1/placement` (nil: none); read once per request that uses it.
    let placementStore = Mutex<PlacementSpec?>(nil)
    /// Plans being computed; at most `Settings.maxConcurrentPlans`.
    let plansRunning = Atomic<Int>(0)
    /// Where plans run: never on an event loop, whose other connections would wait (a large
    /// plan takes tens of milliseconds).
    let planQueue = DispatchQueue(label: "moe-metricsd.plan", attributes: .concurrent)
    let openConnections: @Sendable () -> Int
    /// Bytes the server holds against its buffer budget, for `/metrics`.
    let bufferedBytes: @Sendable () -> Int
    let clock: @Sendable () -> Double
    let logger: Logger

    public init(
        registry: LayerRegistry, settings: Settings, version: String, logger: Logger,
        openConnections: @escaping @Sendable () -> Int = { 0 },
        bufferedBytes: @escaping @Sendable () -> Int = { 0 },
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) {
        self.registry = registry
        self.bufferedBytes = bufferedBytes
        self.settings = Mutex(settings)
        self.version = version
        self.logger = logger
        self.openConnections = openConnections
        self.clock = clock
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
    func noteChange() { changes.add(1, ordering: .releasing) }
    public var currentSettings: Settings { settings.withLock { $0 } }

    // MARK: The route table

    /// Every endpoint the daemon serves, in the order of the request counter's rows. A new
    /// endpoint is one row here, its handler, and its row in the README's API table (a test
    /// checks that the two agree).
    static let routes = RouteTable([
        Route(
            "/v1/decisions", ingests: true,
            .post { r, request, _, s in r.ingest(request, layer: nil, settings: s) }),
        Route(
            "/v1/layers/{layer}/decisions", ingests: true,
            .post { r, request, layer, s in r.ingest(request, layer: layer, settings: s) }),
        Route(
            "/v1/layers",
            .get { r, request, _, s in negotiateEncoding(r.layersList(settings: s), request) },
            .delete { r, _, _, _ in r.resetAll() }),
        Route(
            "/v1/layers/{layer}",
            .get { r, request, layer, s in
                negotiateEncoding(r.layerSummary(layer, request: request, settings: s), request)
            },
            .delete { r, _, layer, _ in r.reset(layer) }),
        Route(
            "/v1/layers/{layer}/history",
            .get { r, request, layer, s in
                negotiateEncoding(r.layerHistory(layer, request: request, settings: s), request)
            }),
        Route(
            "/v1/summary",
            .get { r, request, _, s in negotiateEncoding(r.summary(request, settings: s), request) }),
        Route(
            "/v1/placement",
            .get { r, _, _, _ in r.getPlacement() },
            .put { r, request, _, _ in r.putPlacement(request) },
            .delete { r, _, _, _ in r.deletePlacement() }),
        Route(
            "/v1/export/load",
            .get { r, request, _, _ in r.exportLoad(request) }),
        Route(
            "/v1/plan",
            .post { r, request, _, s in r.plan(request, settings: s) }),
        Route(
            "/metrics",
            .get { r, request, _, s in r.metrics(request, settings: s) }),
        Route(
            "/healthz", access: .open,
            .get { _, _, _, _ in healthz() }),
        Route(
            "/readyz", access: .open,
            .get { r, _, _, _ in r.readyz() }),
        Route(
            "/", aliases: ["/dashboard"], access: .openReads,
            .get { _, _, _, _ in dashboard() }),
    ])

    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        let table = Self.routes
        let (row, layer) = table.match(request.path)
        // Read once per request: one lock instead of one per use, and one consistent view of a
        // configuration a reload may replace meanwhile.
        let current = settings.withLock { $0 }
        let response: HTTPResponse
        if row == table.unmatchedRow {
            response = Self.notFound(request)
        } else {
            let route = table.routes[row]
            if let refusal = admission(request, route: route, settings: current) {
                response = refusal
            } else if let handler = route.handler(for: request.method) {
                response = handler(self, request, layer ?? "", current)
            } else {
                response = .error(
                    405, "method \(request.method) not allowed on \(route.template)",
                    headers: ["allow": route.allow])
            }
        }
        // A deferred answer is counted when it is complete, with its status.
        if response.deferred == nil { counters.recordRequest(routeIndex: row, code: response.status) }
        return response
    }

    /// A request whose body has not been sent yet (`Expect: 100-continue`): the refusal it would
    /// get whatever its body (401, 403, 400 for its credentials or origin), so that the client
    /// learns it before sending the body (RFC 9110 section 10.1.1); nil to ask for the body.
    /// Counted like any answered request.
    public func precheck(_ head: HTTPRequest) -> HTTPResponse? {
        let table = Self.routes
        let (row, _) = table.match(head.path)
        guard row != table.unmatchedRow else { return nil }
        let current = settings.withLock { $0 }
        guard let refusal = admission(head, route: table.routes[row], settings: current) else { return nil }
        counters.recordRequest(routeIndex: row, code: refusal.status)
        return refusal
    }

    /// Nil when the request may reach its handler; otherwise its refusal: 400 for two
    /// `Authorization` fields, 403 for a cross-origin browser write, 401 without the token.
    @inline(__always)
    private func admission(_ request: HTTPRequest, route: Route, settings current: Settings) -> HTTPResponse? {
        // GET, HEAD and OPTIONS are safe methods (RFC 9110 section 9.2.1), as Go's check counts them.
        let isSafe = request.method == "GET" || request.method == "HEAD" || request.method == "OPTIONS"
        if !isSafe, let refusal = crossOriginRefusal(request, route: route) { return refusal }
        // Without a token every request may proceed, so the common case makes no call.
        guard current.authToken != nil else { return nil }
        return authorize(request, route: route, settings: current)
    }

    /// A 403 for a write a browser sends on behalf of a page of another origin, nil otherwise,
    /// by the rules of Go's `http.CrossOriginProtection`: `Sec-Fetch-Site` when the browser sends
    /// it (same-origin, or none for a user's own navigation, may write), else `Origin` compared
    /// with `Host`; a request with neither is not from a browser (curl, workers) and may write.
    /// A page can POST a body without a preflight (`mode: "no-cors"`), so CORS alone does not
    /// stop it; the dashboard's own requests are same-origin.
    private func crossOriginRefusal(_ request: HTTPRequest, route: Route) -> HTTPResponse? {
        if let site = request.headers.value(lowercasedName: "sec-fetch-site") {
            let s = site.trimmingWhitespace().asciiLowercased()
            if s == "same-origin" || s == "none" { return nil }
        } else if let origin = request.headers.value(lowercasedName: "origin") {
            if let host = request.headers.value(lowercasedName: "host"), Self.origin(origin, matchesHost: host) {
                return nil
            }
        } else {
            return nil
        }
        if route.ingests { counters.recordRejection(reason: "cross_origin") }
        logger.debug(
            "refused: cross-origin browser write", metadata: ["path": "\(request.path)", "method": "\(request.method)"])
        return .error(403, "cross-origin writes from a browser are refused")
    }

    /// Whether an `Origin` (RFC 6454 section 7: scheme "://" host [":" port], or "null") names
    /// the host and port the request was sent to. Host names compare without case, in ASCII.
    static func origin(_ origin: String, matchesHost host: String) -> Bool {
        let o = origin.trimmingWhitespace()
        guard let separator = o.range(of: "://") else { return false }
        let authority = o[separator.upperBound...]
        guard !authority.isEmpty, !authority.contains("/") else { return false }
        return authority.asciiLowercased() == host.trimmingWhitespace().asciiLowercased()
    }

    /// A request the protocol layer refused before routing (400, 408, 413, 414, 431, 501, 505):
    /// counted under the route label "other", since no route was matched, and answered with
    /// the JSON error body.
    public func refusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        counters.recordRequest(routeIndex: Self.routes.unmatchedRow, code: status)
        return .error(status, message, headers: headers)
    }

    /// A connection past the cap gets the JSON error body too; no request was read, so none is counted.
    public func connectionRefusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        .error(status, message, headers: headers)
    }

    /// 404 for a path no route matches. The path is echoed for the caller's benefit, but
    /// bounded: a long target must not come back as a long error body.
    private static func notFound(_ request: HTTPRequest) -> HTTPResponse {
        let path = request.path.utf8.count <= 200 ? request.path : String(request.path.prefix(200)) + "..."
        return .error(404, "no such path: \(path)")
    }

    /// Nil when the request may proceed; a 401 with `WWW-Authenticate` (RFC 6750 section 3)
    /// when a token is configured and the route's access rule asks for it but the request lacks it.
    private func authorize(_ request: HTTPRequest, route: Route, settings current: Settings) -> HTTPResponse? {
        guard let token = current.authToken else { return nil }
        let isWrite = request.method != "GET" && request.method != "HEAD"
        switch route.access {
        case .open: return nil
        case .openReads: if !isWrite { return nil }
        case .token: if !isWrite && !current.authReads { return nil }
        }
        let credentials = request.headers.values("authorization")
        // Authorization is a singleton field (RFC 9110 section 11.6.2): two of them are
        // ambiguous, and which one a proxy in front of us checked is unknown.
        if credentials.count > 1 {
            if route.ingests { counters.recordRejection(reason: "malformed") }
            return .error(400, "more than one Authorization header")
        }
        if token.accepts(authorization: credentials.first) { return nil }
        if route.ingests { counters.recordRejection(reason: "unauthorized") }
        logger.debug(
            "refused: no valid bearer token", metadata: ["path": "\(request.path)", "method": "\(request.method)"])
        let challenge =
            request.headers["authorization"] == nil
            ? "Bearer realm=\"moe-metricsd\"" : "Bearer realm=\"moe-metricsd\", error=\"invalid_token\""
        return .error(401, "a valid bearer token is required", headers: ["www-authenticate": challenge])
    }
}

// MARK: Routes

extension DaemonRouter {
    /// A route's handler: the router, the request, the `{layer}` segment percent-decoded ("" for
    /// a template without one), and the settings read for this request.
    typealias Handler = @Sendable (DaemonRouter, HTTPRequest, String, Settings) -> HTTPResponse

    /// Who may call a route when a bearer token is configured. Writes are every method but GET
    /// and HEAD (RFC 9110 section 9.2.1: the safe methods).
    enum Access: Sendable {
        /// Never needs the token (liveness and readiness probes carry none).
        case open
        /// Reads are open; writes need the token.
        case openReads
        /// Writes need the token; reads too when `auth_reads` is set.
        case token
    }

    /// One method a route answers, with its handler.
    struct Method: Sendable {
        let name: String
        let handler: Handler

        static func get(_ handler: @escaping Handler) -> Method { Method(name: "GET", handler: handler) }
        static func post(_ handler: @escaping Handler) -> Method { Method(name: "POST", handler: handler) }
        static func delete(_ handler: @escaping Handler) -> Method { Method(name: "DELETE", handler: handler) }
        static func put(_ handler: @escaping Handler) -> Method { Method(name: "PUT", handler: handler) }
    }

    /// One row of the route table (a class, so that handing a row to a request copies one
    /// reference rather than each of its fields).
    final class Route: Sendable {
        /// The path, with `{layer}` standing for one non-empty, percent-decoded segment; also
        /// the request counter's `route` label (a template, never a raw path, so that clients
        /// cannot create series).
        let template: String
        /// Other literal paths answered the same way (counted under `template`).
        let aliases: [String]
        let access: Access
        /// Whether the route takes decisions: a 401 on it also counts as a rejected decision.
        let ingests: Bool
        let methods: [Method]
        /// Every method answered: the declared ones, with HEAD after GET, since HEAD is answered
        /// wherever GET is (RFC 9110 section 9.3.2).
        let allowedMethods: [String]
        /// The `Allow` value of a 405 (RFC 9110 section 10.2.1).
        let allow: String

        init(
            _ template: String, aliases: [String] = [], access: Access = .token, ingests: Bool = false,
            _ methods: Method...
        ) {
            self.template = template
            self.aliases = aliases
            self.access = access
            self.ingests = ingests
            self.methods = methods
            allowedMethods = methods.flatMap { $0.name == "GET" ? ["GET", "HEAD"] : [$0.name] }
            allow = allowedMethods.joined(separator: ", ")
        }

        /// The handler for `method`; HEAD takes GET's (the protocol layer drops the body).
        @inline(__always)
        func handler(for method: String) -> Handler? {
            for i in methods.indices where methods[i].name == method { return methods[i].handler }
            guard method == "HEAD" else { return nil }
            for i in methods.indices where methods[i].name == "GET" { return methods[i].handler }
            return nil
        }
    }

    /// The routes and the lookups derived from them: literal paths, compared whole, and
    /// templates with a `{layer}` segment, compared segment by segment.
    final class RouteTable: Sendable {
        let routes: [Route]
        /// The row of requests no route matched, counted under the label `other`.
        let unmatchedRow: Int
        /// Every literal path (templates without `{layer}`, and aliases), in table order, with
        /// its row: the ingest path comes first, so the hot POST is one comparison.
        private let literalPaths: [String]
        private let literalRows: [Int]
        /// The templates with a `{layer}` segment, split at `/`; nil marks the segment.
        private let patterns: [(row: Int, segments: [Substring?])]

        static let parameter = "{layer}"

        init(_ routes: [Route]) {
            self.routes = routes
            unmatchedRow = routes.count
            var paths: [String] = [], rows: [Int] = []
            var patterns: [(row: Int, segments: [Substring?])] = []
            for (row, route) in routes.enumerated() {
                precondition(route.template.hasPrefix("/") && !route.methods.isEmpty, "bad route \(route.template)")
                let segments = route.template.split(separator: "/", omittingEmptySubsequences: false)
                let parameters = segments.filter { $0.hasPrefix("{") }
                precondition(
                    parameters.allSatisfy { $0 == Self.parameter } && parameters.count <= 1,
                    "\(route.template): the one parameter a template may have is \(Self.parameter)")
                if parameters.isEmpty {
                    paths.append(route.template)
                    rows.append(row)
                } else {
                    patterns.append((row, segments.map { $0 == Self.parameter ? nil : $0 }))
                }
                precondition(route.aliases.allSatisfy { !$0.contains("{") }, "\(route.template): aliases are literal")
                paths += route.aliases
                rows += route.aliases.map { _ in row }
            }
            precondition(Set(paths).count == paths.count, "a path is declared twice")
            literalPaths = paths
            literalRows = rows
            self.patterns = patterns
        }

        /// The row of `path` and its decoded `{layer}` segment, or `unmatchedRow`.
        func match(_ path: String) -> (row: Int, layer: String?) {
            // Lengths first: `==` on two different strings takes the general comparison.
            let length = path.utf8.count
            for i in literalPaths.indices where literalPaths[i].utf8.count == length && literalPaths[i] == path {
                return (literalRows[i], nil)
            }
            let parts = path.split(separator: "/", omittingEmptySubsequences: false)
            for pattern in patterns where pattern.segments.count == parts.count {
                var layer: Substring?
                var matches = true
                for (segment, part) in zip(pattern.segments, parts) {
                    if let segment {
                        if segment != part { matches = false; break }
                    } else {
                        if part.isEmpty { matches = false; break }
                        layer = part
                    }
                }
                guard matches, let layer else { continue }
                // A segment that is not valid percent-encoding names no layer.
                guard let name = PercentDecoding.decode(layer, plusAsSpace: false) else { return (unmatchedRow, nil) }
                return (pattern.row, name)
            }
            return (unmatchedRow, nil)
        }

        /// The request counter's row labels: each route's template, then `other`.
        var counterLabels: [String] { routes.map(\.template) + ["other"] }
    }
}
