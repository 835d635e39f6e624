/// What the event loop does after a session has consumed input or handled an event.
public enum StreamDisposition: Sendable, Equatable {
    /// Keep the connection; write any output and go on reading.
    case keepOpen
    /// Write the output already produced, then close the connection.
    case closeAfterWrite
}

/// The per-connection protocol logic the transport drives; the transport itself knows no HTTP.
///
/// The same shape as HTTPCore's `ConnectionSession` (bytes in, bytes out, monotonic nanoseconds
/// supplied by the caller), declared here so that this module depends on nothing above it. All
/// calls for one connection come from the one event-loop thread that owns it.
public protocol StreamSession: AnyObject {
    func receive(_ bytes: UnsafeRawBufferPointer, now: UInt64, output: inout [UInt8]) -> StreamDisposition
    func peerClosed(now: UInt64, output: inout [UInt8]) -> StreamDisposition
    /// When the session must hear from the peer, or nil; read after every call.
    var deadline: UInt64? { get }
    func deadlineExpired(now: UInt64, output: inout [UInt8]) -> StreamDisposition
    func beginShutdown(now: UInt64, output: inout [UInt8]) -> StreamDisposition
    var isIdle: Bool { get }
    /// The session holds input it has not processed because its output is backed up; once the
    /// output has drained, the loop calls `receive` with no bytes.
    var hasBufferedInput: Bool { get }
}

/// Monotonic nanoseconds (`CLOCK_MONOTONIC`), the clock every session deadline is expressed in.
public func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

#if canImport(Glibc)
import Glibc
#endif
