import Foundation

/// The process' limit on open files (RLIMIT_NOFILE) against `http.max_connections`.
///
/// Each connection is a descriptor. With the usual soft limit of 1024 outside systemd and the
/// default cap of 1024 connections, accept(2) would fail with EMFILE before the cap: no 503, and
/// new clients left waiting. So the soft limit is raised to the hard one at start, and a cap that
/// still does not fit is lowered to what fits, with a warning, so that the 503 is kept at the cap.
public enum FileDescriptorLimit {
    /// Descriptors kept for everything but connections: standard streams, each loop's epoll and
    /// eventfd and listener copies, the state file and its directory, logging, /proc reads,
    /// and connections refused with 503 while they drain.
    static func reserved(eventLoops: Int, listeners: Int) -> Int {
        3 + eventLoops * (2 + listeners) + 64
    }

    /// Raises the soft limit to the hard limit; returns the soft limit in force (nil if unknown).
    @discardableResult
    public static func raiseSoftLimit() -> Int? {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return nil }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
        }
        // RLIM_INFINITY is the largest rlim_t, which clamps to Int.max.
        return Int(clamping: limit.rlim_cur)
    }

    /// The connection cap that fits `softLimit` descriptors: `requested`, or fewer (at least 1).
    static func fittingCap(requested: Int, softLimit: Int, eventLoops: Int, listeners: Int) -> Int {
        let available = softLimit - reserved(eventLoops: eventLoops, listeners: listeners)
        return max(1, min(requested, available))
    }
}
