import Synchronization

/// The daemon's own counters: requests by route template and status, refused bodies by reason.
///
/// Labels come from fixed sets only (route templates, never raw paths; status codes the router
/// can produce), so a client cannot create series at will: request-derived strings used as
/// labels without a bound are a cardinality bomb.
///
/// Every request bumps one request counter, from every event-loop thread at once, so those live
/// in a fixed table of atomics indexed by (route, status): no lock to contend for and no String
/// hashing per request. A status outside the table (none the daemon answers today) still counts,
/// in a dictionary under a mutex.
public final class DaemonCounters: Sendable {
    /// One `moe_metricsd_http_requests_total` series: a route template and a status code.
    public struct RouteCode: Hashable, Sendable, Comparable {
        public var route: String
        public var code: Int
        public static func < (a: RouteCode, b: RouteCode) -> Bool { (a.route, a.code) < (b.route, b.code) }
    }

    /// Every reason the router can give, exposed at 0 from the start so that `rate()` and
    /// `increase()` see the first rejection (Prometheus: "avoid missing metrics").
    public static let reasons = [
        "conflict", "cross_origin", "invalid", "malformed", "too_large", "too_many_experts",
        "too_many_layers", "unauthorized", "unsupported_media_type",
    ]

    /// The route labels with a row in the table: the router's templates, in table order, then
    /// `other` for requests no route matched.
    static let routes: [String] = DaemonRouter.routes.counterLabels

    /// The status codes with a column in the table: every status the router or the HTTP layer
    /// answers a request with.
    static let codes: [Int] = [
        200, 400, 401, 403, 404, 405, 408, 409, 413, 414, 415, 417, 422, 431, 500, 501, 503, 505, 507,
    ]

    /// The column of `code`, or nil for a status outside the table (a switch: this runs on
    /// every request; RequestCounterTests checks it against `codes`).
    static func column(_ code: Int) -> Int? {
        switch code {
        case 200: 0
        case 400: 1
        case 401: 2
        case 403: 3
        case 404: 4
        case 405: 5
        case 408: 6
        case 409: 7
        case 413: 8
        case 414: 9
        case 415: 10
        case 417: 11
        case 422: 12
        case 431: 13
        case 500: 14
        case 501: 15
        case 503: 16
        case 505: 17
        case 507: 18
        default: nil
        }
    }

    /// One counter, alone in its object so the table is a plain array of references.
    private final class Slot: Sendable {
        let count = Atomic<UInt64>(0)
    }

    private struct Rare {
        var requests: [RouteCode: UInt64] = [:]
        var rejected: [String: UInt64] = [:]
    }

    /// `routes.count * codes.count` counters, row by route.
    private let table: [Slot]
    private let rare: Mutex<Rare>

    public init() {
        table = (0..<(Self.routes.count * Self.codes.count)).map { _ in Slot() }
        var r = Rare()
        for reason in Self.reasons { r.rejected[reason] = 0 }
        rare = Mutex(r)
    }

    /// Counts one request by its route label (one of `routes`, else it is counted all the same,
    /// under the lock).
    public func recordRequest(route: String, code: Int) {
        if let row = Self.routes.firstIndex(of: route) {
            recordRequest(routeIndex: row, code: code)
        } else {
            rare.withLock { $0.requests[RouteCode(route: route, code: code), default: 0] &+= 1 }
        }
    }

    /// Counts one request by the row of its route in `routes`: the per-request path, lock-free.
    func recordRequest(routeIndex row: Int, code: Int) {
        if let column = Self.column(code) {
            table[row * Self.codes.count + column].count.wrappingAdd(1, ordering: .relaxed)
        } else {
            rare.withLock { $0.requests[RouteCode(route: Self.routes[row], code: code), default: 0] &+= 1 }
        }
    }

    public func recordRejection(reason: String) {
        rare.withLock { $0.rejected[reason, default: 0] &+= 1 }
    }

    /// Copies of both tables, sorted for a stable exposition; a (route, status) pair appears
    /// once it has been counted.
    public func snapshot() -> (requests: [(RouteCode, UInt64)], rejected: [(String, UInt64)]) {
        var requests = rare.withLock { $0.requests }
        for (row, route) in Self.routes.enumerated() {
            for (column, code) in Self.codes.enumerated() {
                let n = table[row * Self.codes.count + column].count.load(ordering: .relaxed)
                if n > 0 { requests[RouteCode(route: route, code: code), default: 0] &+= n }
            }
        }
        let rejected = rare.withLock { $0.rejected }
        return (
            requests.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
            rejected.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        )
    }
}
