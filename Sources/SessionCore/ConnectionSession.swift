/// What the transport does after a session has consumed input or handled an event.
public enum SessionDisposition: Sendable, Equatable {
    /// Keep the connection; write any output and go on reading.
    case keepOpen
    /// Write the output already produced, then close the connection.
    case closeAfterWrite
}

/// One protocol's state machine on one connection (HTTP/1.1, HTTP/2, or the session that picks
/// between them), over plain bytes: the contract between the transport and the protocols.
///
/// The transport owns the socket and the event loop; a session never touches either. It is fed
/// the bytes that arrived and appends the bytes to send, which keeps every protocol testable
/// from byte strings and lets the server detect the protocol from the first bytes (the HTTP/2
/// client preface, RFC 9113 section 3.4) before it creates the protocol's session.
///
/// All calls for one connection come from one thread, one at a time (sessions check this in
/// debug builds, see `ThreadOwner`). Times are monotonic nanoseconds (`monotonicNanoseconds()`)
/// supplied by the caller, so tests control the clock.
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

    /// True when the session has work it held back: input not yet processed because its output
    /// is backed up (pipelined requests held back so one read cannot multiply into unbounded
    /// output) or its turn is over (a budget of work per call, so that other connections get
    /// theirs), or a response body still to be generated (written a piece at a time as the output
    /// drains). The transport reads no more from the peer meanwhile, and calls `receive` with no
    /// bytes on a later pass over its connections, once the output has drained.
    var hasBufferedInput: Bool { get }
}

extension ConnectionSession {
    /// Sessions that never hold input back need not implement it.
    public var hasBufferedInput: Bool { false }
}
