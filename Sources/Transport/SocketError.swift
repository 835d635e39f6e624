#if canImport(Glibc)
import Glibc
#endif

/// A failed system call, with the call's name and the errno it left, captured at once.
///
/// Every system call in this module goes through one wrapper that builds this value (the habit
/// FlyingFox follows), so an error always says which call failed and why, e.g.
/// `bind 127.0.0.1:9477: Address already in use (errno 98)`.
public struct SocketError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The system call, e.g. "bind".
    public var call: String
    /// errno right after the call; 0 when the error is not a system call's (a bad address string).
    public var errno: Int32
    /// What the call was about (an address), or a message when `errno` is 0.
    public var detail: String

    public init(call: String, errno: Int32, detail: String = "") {
        self.call = call
        self.errno = errno
        self.detail = detail
    }

    public var description: String {
        let subject = detail.isEmpty ? call : "\(call) \(detail)"
        if errno == 0 { return subject }
        return "\(subject): \(String(cString: strerror(errno))) (errno \(errno))"
    }

    /// True for the errors a non-blocking socket reports when it would block.
    public var wouldBlock: Bool { errno == EAGAIN || errno == EWOULDBLOCK }
}

/// One wrapper per system call: each returns its result or throws a `SocketError` naming the call.
/// `EINTR` is retried here, so no caller has to.
enum Syscall {
    @inline(__always)
    static func check(_ call: StaticString, detail: @autoclosure () -> String = "", _ body: () -> Int32) throws(SocketError) -> Int32 {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SocketError(call: "\(call)", errno: e, detail: detail())
        }
    }

    @inline(__always)
    static func checkSize(_ call: StaticString, _ body: () -> Int) throws(SocketError) -> Int {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SocketError(call: "\(call)", errno: e)
        }
    }

    static func close(_ fd: Int32) {
        // close(2) must not be retried on EINTR on Linux: the descriptor is already released.
        _ = Glibc.close(fd)
    }
}
