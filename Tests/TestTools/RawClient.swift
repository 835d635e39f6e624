import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A blocking TCP client for live tests, with a receive timeout so a test can never hang.
public final class RawClient {
    public let fd: Int32
    private var buffered: [UInt8] = []

    public struct Failure: Error, CustomStringConvertible { public let description: String }

    /// Connects to "127.0.0.1:PORT" or "[::1]:PORT".
    public init(_ address: String, timeoutSeconds: Int = 10) throws {
        let v6 = address.hasPrefix("[")
        guard let colon = address.lastIndex(of: ":"), let port = UInt16(address[address.index(after: colon)...]) else {
            throw Failure(description: "bad address \(address)")
        }
        let host =
            v6
            ? String(address[address.index(after: address.startIndex)..<address.index(before: colon)])
            : String(address[..<colon])
        fd = socket(v6 ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: errno \(errno)") }
        var tv = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var rc: Int32
        if v6 {
            var sa = sockaddr_in6()
            sa.sin6_family = sa_family_t(AF_INET6)
            sa.sin6_port = port.bigEndian
            inet_pton(AF_INET6, host, &sa.sin6_addr)
            rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size))
                }
            }
        } else {
            var sa = sockaddr_in()
            sa.sin_family = sa_family_t(AF_INET)
            sa.sin_port = port.bigEndian
            inet_pton(AF_INET, host, &sa.sin_addr)
            rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw Failure(description: "connect \(address): errno \(e)")
        }
    }

    deinit { close(fd) }

    public func send(_ text: String) throws { try send(Array(text.utf8)) }

    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes {
                Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL))
            }
            guard n > 0 else { throw Failure(description: "send: errno \(errno)") }
            offset += n
        }
    }

    /// Reads more bytes; returns false on EOF. Throws on timeout or error.
    @discardableResult
    public func fill() throws -> Bool {
        var chunk = [UInt8](repeating: 0, count: 65536)
        let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if n > 0 {
            buffered.append(contentsOf: chunk[0..<n])
            return true
        }
        if n == 0 { return false }
        throw Failure(description: "recv: errno \(errno)")
    }

    /// One response: status, lower-cased headers, body (by Content-Length; none for 1xx/204).
    public func readResponse() throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        while true {
            if let end = headEnd() {
                let head = String(decoding: buffered[0..<end], as: UTF8.self)
                let lines = head.split(separator: "\r\n", omittingEmptySubsequences: false)
                let statusParts = lines[0].split(separator: " ")
                guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
                    throw Failure(description: "bad status line \(lines[0])")
                }
                var headers: [String: String] = [:]
                for line in lines.dropFirst() where !line.isEmpty {
                    guard let c = line.firstIndex(of: ":") else { continue }
                    headers[line[..<c].lowercased()] = String(line[line.index(after: c)...].drop { $0 == " " })
                }
                if headers["transfer-encoding"]?.lowercased() == "chunked" {
                    buffered.removeFirst(end + 4)
                    return (status, headers, try readChunkedBody())
                }
                let length = Int(headers["content-length"] ?? "0") ?? 0
                while buffered.count < end + 4 + length {
                    guard try fill() else { throw Failure(description: "EOF inside body") }
                }
                let body = Array(buffered[(end + 4)..<(end + 4 + length)])
                buffered.removeFirst(end + 4 + length)
                return (status, headers, body)
            }
            guard try fill() else { throw Failure(description: "EOF before a response") }
        }
    }

    /// A chunked body (RFC 9112 section 7.1): size lines, data, the last chunk, no trailers.
    private func readChunkedBody() throws -> [UInt8] {
        var body: [UInt8] = []
        while true {
            let line = try readLine()
            let size = String((line.split(separator: ";").first ?? "").filter { $0 != " " && $0 != "\t" })
            guard let n = Int(size, radix: 16) else { throw Failure(description: "bad chunk size \(line)") }
            while buffered.count < n + 2 {
                guard try fill() else { throw Failure(description: "EOF inside a chunk") }
            }
            body += buffered[0..<n]
            guard buffered[n] == 13, buffered[n + 1] == 10 else { throw Failure(description: "chunk without CRLF") }
            buffered.removeFirst(n + 2)
            if n == 0 { return body }
        }
    }

    private func readLine() throws -> String {
        while true {
            if let i = buffered.indices.dropLast().first(where: { buffered[$0] == 13 && buffered[$0 + 1] == 10 }) {
                let line = String(decoding: buffered[0..<i], as: UTF8.self)
                buffered.removeFirst(i + 2)
                return line
            }
            guard try fill() else { throw Failure(description: "EOF inside a chunk size line") }
        }
    }

    /// True when the server closed the connection (EOF) with nothing more sent.
    public func readsEOF() throws -> Bool {
        if !buffered.isEmpty { return false }
        return try !fill()
    }

    private func headEnd() -> Int? {
        guard buffered.count >= 4 else { return nil }
        for i in 0...(buffered.count - 4)
        where buffered[i] == 13 && buffered[i + 1] == 10 && buffered[i + 2] == 13 && buffered[i + 3] == 10 {
            return i
        }
        return nil
    }
}
