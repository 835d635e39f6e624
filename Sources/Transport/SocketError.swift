import CTransport

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
    static func check(_ call: StaticString, detail: @autoclosure () -> String = "", _ body: () -> Int32)
        throws(SocketError) -> Int32
    {
        while true {
            let r = body()
            if r >= 0 { return r }
            let e = Glibc.errno
            if e == EINTR { continue }
            throw SocketError(call: "\(call)", errno: e, detail: detail())
        }
    }

    // Hot-path calls on non-blocking descriptors: nil means "would block" (EAGAIN), any other
    // failure throws with the call's name. Typed throws keep this free of allocation until an
    // error actually happens.

    /// recv(2) without flags on a connected socket: bytes read, 0 at end of stream, nil when
    /// nothing is available. The same result as read(2), but straight into the socket layer:
    /// read(2) first passes through the generic file layer (position lock, read checks), which
    /// showed up in the kernel's profile of every request; nginx reads with recv too.
    @inline(__always)
    static func read(_ fd: Int32, into buffer: UnsafeMutableRawBufferPointer) throws(SocketError) -> Int? {
        while true {
            let n = Glibc.recv(fd, buffer.baseAddress, buffer.count, 0)
            if n >= 0 { return n }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SocketError(call: "recv", errno: e)
        }
    }

    /// send(2) with MSG_NOSIGNAL (a peer that went away gives EPIPE, not a process-killing
    /// SIGPIPE): bytes accepted, nil when the socket buffer is full.
    @inline(__always)
    static func send(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(SocketError) -> Int? {
        while true {
            let n = Glibc.send(fd, bytes.baseAddress, bytes.count, Int32(MSG_NOSIGNAL))
            if n >= 0 { return n }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK { return nil }
            throw SocketError(call: "send", errno: e)
        }
    }

    /// accept4(2), non-blocking and close-on-exec: the new descriptor, or nil when none is pending
    /// (or the connection was aborted before we took it).
    static func accept(_ listener: Int32) throws(SocketError) -> Int32? {
        while true {
            let fd = accept4(listener, nil, nil, Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue))
            if fd >= 0 { return fd }
            let e = Glibc.errno
            if e == EINTR { continue }
            if e == EAGAIN || e == EWOULDBLOCK || e == ECONNABORTED { return nil }
            throw SocketError(call: "accept4", errno: e)
        }
    }

    static func epollWait(
        _ epfd: Int32, _ events: UnsafeMutablePointer<epoll_event>, _ max: Int32,
        timeoutMilliseconds: Int32
    ) throws(SocketError) -> Int {
        let n = epoll_wait(epfd, events, max, timeoutMilliseconds)
        if n >= 0 { return Int(n) }
        let e = Glibc.errno
        if e == EINTR { return 0 }
        throw SocketError(call: "epoll_wait", errno: e)
    }

    static func setOption(
        _ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32,
        _ call: StaticString
    ) throws(SocketError) {
        var v = value
        _ = try check(call) { setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) }
    }

    static func shutdownWrite(_ fd: Int32) throws(SocketError) {
        _ = try check("shutdown") { Glibc.shutdown(fd, Int32(SHUT_WR)) }
    }

    /// Adds 1 to an eventfd counter (wakes the loop waiting on it). EAGAIN means the counter is
    /// already at its maximum, which wakes the loop just as well.
    static func signalEventFD(_ fd: Int32) {
        var one: UInt64 = 1
        _ = Glibc.write(fd, &one, 8)
    }

    /// Resets an eventfd counter.
    static func drainEventFD(_ fd: Int32) {
        var value: UInt64 = 0
        _ = Glibc.read(fd, &value, 8)
    }

    /// A second descriptor for the same open socket, close-on-exec (fcntl(2) F_DUPFD_CLOEXEC).
    static func duplicate(_ fd: Int32) throws(SocketError) -> Int32 {
        try check("fcntl(F_DUPFD_CLOEXEC)") { fcntl(fd, F_DUPFD_CLOEXEC, 0) }
    }

    static func close(_ fd: Int32) {
        // close(2) must not be retried on EINTR on Linux: the descriptor is already released.
        _ = Glibc.close(fd)
    }
}
