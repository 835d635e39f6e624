/// What the transport does after a session has consumed input or handled an event.
public enum SessionDisposition: Sendable, Equatable {
    /// Keep the connection; write any output and go on reading.
    case keepOpen
    /// Write the output already produced, then close the connection.
    case closeAfterWrite
}

/// One protocol's state machine on one connection (HTTP/1.1 or HTTP/2), over plain bytes.
///
/// The transport owns the socket and the event loop; a session never touches either. It is fed
/// the bytes that arrived and appends the bytes to send, which keeps every protocol testable
/// from byte strings and lets the transport detect the protocol from the first bytes (the
/// HTTP/2 client preface, RFC 9113 section 3.4) before it creates the session.
///
/// All calls for one connection come from one thread, one at a time. Times are monotonic
/// nanoseconds (`CLOCK_MONOTONIC`) supplied by the caller, so tests control the clock.
public protocol ConnectionSession: AnyObject {
    /// Consumes `bytes` read from the peer; appends anything to send to `output`.
    func receive(_ bytes: UnsafeRawBufferPointer, now: UInt64, output: inout [UInt8]) -> SessionDisposition

    /// The peer closed its sending side (EOF). A session may still append a final response.
    func peerClosed(now: UInt64, output: inout [UInt8]) -> SessionDisposition

    /// The instant by which the session must hear from the peer (header, body or idle timeout),
    /// or nil when it waits for nothing. Read after every call.
    var deadline: UInt64? { get }

    /// `deadline` has passed: append a final response if one is due (408 for an incomplete
    /// request) and say what to do; a session that returns `.keepOpen` must move its deadline.
    func deadlineExpired(now: UInt64, output: inout [UInt8]) -> SessionDisposition

    /// The server is shutting down gracefully: stop taking new requests (HTTP/2 sends GOAWAY),
    /// finish those in flight. Returns `.closeAfterWrite` once nothing is in flight.
    func beginShutdown(now: UInt64, output: inout [UInt8]) -> SessionDisposition

    /// True when the session could be closed without cutting a request short.
    var isIdle: Bool { get }

    /// True when the session holds input it has not yet processed because its output is backed
    /// up (pipelined requests held back so one read cannot multiply into unbounded output). The
    /// transport calls `receive` with no bytes once the output has drained.
    var hasBufferedInput: Bool { get }
}

extension ConnectionSession {
    /// Sessions that never hold input back need not implement it.
    public var hasBufferedInput: Bool { false }
}

/// Limits shared by both protocols. Each is a documented daemon setting with a safe default.
///
/// Timeouts are seconds: 0 or less (or NaN) means the timeout expires at once (a safe failure,
/// never "no timeout"), and values above 1e9 s (about 31.7 years, infinity included) count as
/// 1e9 s, so no value can overflow a nanosecond deadline.
public struct HTTPLimits: Sendable, Equatable {
    /// Longest request line (method, target, version) in bytes; past it, 414.
    public var maxRequestLineBytes: Int = 8 * 1024
    /// Total bytes of the header section (HTTP/2: the header list size); past it, 431.
    public var maxHeaderBytes: Int = 16 * 1024
    /// Most header fields in one request; past it, 431.
    public var maxHeaderCount: Int = 100
    /// Largest request body in bytes; past it, 413.
    public var maxBodyBytes: Int = 16 * 1024 * 1024
    /// Time allowed to receive a request's header section once it has started; past it, 408.
    public var headerTimeoutSeconds: Double = 10
    /// Time allowed between body bytes of a request (each read resets it); past it, 408.
    public var bodyTimeoutSeconds: Double = 30
    /// Time an idle keep-alive connection is kept before it is closed.
    public var idleTimeoutSeconds: Double = 60
    /// Most concurrent connections; past it, new ones get 503 with Retry-After and are closed.
    public var maxConnections: Int = 1024
    /// Most concurrent HTTP/2 streams per connection (SETTINGS_MAX_CONCURRENT_STREAMS).
    public var maxConcurrentStreams: Int = 128

    public init() {}
}

extension HTTPLimits {
    /// Longest timeout honoured, about 31.7 years: "never" for a connection, while the
    /// nanoseconds still fit in a `UInt64` deadline (the transport uses the same bound).
    public static let maxTimeoutSeconds: Double = 1e9

    /// `anchor + seconds` in monotonic nanoseconds, defined for every `Double`: NaN, 0 and
    /// negative timeouts expire at once, larger ones than `maxTimeoutSeconds` (infinity
    /// included) count as that maximum, and the sum saturates instead of wrapping.
    /// `UInt64(seconds * 1e9)` alone traps for NaN and for anything above about 1.8e10 s.
    public static func deadline(after seconds: Double, from anchor: UInt64) -> UInt64 {
        guard seconds > 0 else { return anchor }  // false for NaN as well
        let nanoseconds = UInt64(min(seconds, maxTimeoutSeconds) * 1e9)
        let (sum, overflow) = anchor.addingReportingOverflow(nanoseconds)
        return overflow ? .max : sum
    }
}
