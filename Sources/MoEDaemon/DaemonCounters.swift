import Synchronization

/// The daemon's own counters: requests by route template and status, refused bodies by reason.
///
/// Labels come from fixed sets only (route templates, never raw paths; status codes the router
/// can produce), so a client cannot create series at will: request-derived strings used as
/// labels without a bound are a cardinality bomb.
public final class DaemonCounters: Sendable {
    /// One `moe_metricsd_http_requests_total` series: a route template and a status code.
    public struct RouteCode: Hashable, Sendable, Comparable {
        public var route: String
        public var code: Int
        public static func < (a: RouteCode, b: RouteCode) -> Bool { (a.route, a.code) < (b.route, b.code) }
    }

    private struct State {
        var requests: [RouteCode: UInt64] = [:]
        var rejected: [String: UInt64] = [:]
    }

    /// Every reason the router can give, exposed at 0 from the start so that `rate()` and
    /// `increase()` see the first rejection (Prometheus: "avoid missing metrics").
    public static let reasons = ["conflict", "invalid", "malformed", "too_many_experts", "too_many_layers",
                                 "unauthorized", "unsupported_media_type"]

    private let state: Mutex<State>

    public init() {
        var s = State()
        for r in Self.reasons { s.rejected[r] = 0 }
        state = Mutex(s)
    }

    public func recordRequest(route: String, code: Int) {
        state.withLock { $0.requests[RouteCode(route: route, code: code), default: 0] &+= 1 }
    }

    public func recordRejection(reason: String) {
        state.withLock { $0.rejected[reason, default: 0] &+= 1 }
    }

    /// Copies of both tables, sorted for a stable exposition.
    public func snapshot() -> (requests: [(RouteCode, UInt64)], rejected: [(String, UInt64)]) {
        state.withLock { s in
            (s.requests.sorted { $0.key < $1.key }.map { ($0.key, $0.value) },
             s.rejected.sorted { $0.key < $1.key }.map { ($0.key, $0.value) })
        }
    }
}
