#if canImport(Glibc)
import Glibc
#endif

struct SocketFailure: Error, CustomStringConvertible {
    let description: String
}

/// Drives an `H2TestClient` over a real TCP connection, so a live test controls every frame
/// (streams held open without END_STREAM, for instance), which curl and nghttp cannot.
final class H2SocketClient {
    let client: H2TestClient
    private let fd: Int32
    private(set) var peerClosed = false

    /// Connects to "127.0.0.1:PORT"; the nghttp2 client session writes the preface itself.
    init(address: String, client: H2TestClient = H2TestClient()) throws {
        self.client = client
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw SocketFailure(description: "bad address \(address)")
        }
        #if canImport(Glibc)
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw SocketFailure(description: "socket: errno \(errno)") }
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = port.bigEndian
        sin.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rv = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rv == 0 else {
            close(fd)
            throw SocketFailure(description: "connect: errno \(errno)")
        }
    }

    deinit { close(fd) }

    private func write(_ bytes: inout [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw SocketFailure(description: "send: errno \(errno)") }
            sent += n
        }
    }

    /// Sends what the client has queued, then feeds it what arrives, until `done` holds, the
    /// server closes, or `timeoutSeconds` pass (a bound for a broken server, not a wait).
    func exchange(timeoutSeconds: Double = 10, until done: () -> Bool) throws {
        var start = timespec()
        clock_gettime(CLOCK_MONOTONIC, &start)
        var buffer = [UInt8](repeating: 0, count: 65536)
        while !done() {
            var out = client.output()
            if !out.isEmpty { try write(&out) }
            var now = timespec()
            clock_gettime(CLOCK_MONOTONIC, &now)
            let elapsed = Double(now.tv_sec - start.tv_sec) + Double(now.tv_nsec - start.tv_nsec) / 1e9
            if elapsed > timeoutSeconds { throw SocketFailure(description: "no answer within \(timeoutSeconds) s") }
            var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&p, 1, 100)
            if ready <= 0 { continue }
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 {
                peerClosed = true
                return
            }
            guard n > 0 else { throw SocketFailure(description: "recv: errno \(errno)") }
            if client.input(Array(buffer[..<n])) < 0 { throw SocketFailure(description: "the server sent bad frames") }
        }
        var out = client.output()
        if !out.isEmpty { try write(&out) }
    }
}
