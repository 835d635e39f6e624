import CTransport

#if canImport(Glibc)
import Glibc
#endif

/// A listening TCP socket bound to one `HOST:PORT` address.
///
/// Non-blocking and close-on-exec from creation (`SOCK_NONBLOCK | SOCK_CLOEXEC`, so no window in
/// which a forked child inherits it). IPv6 listeners are IPv6-only, so `[::]:P` and `0.0.0.0:P`
/// can both be given without clashing.
struct Listener {
    let fd: Int32
    /// The address actually bound, port included when port 0 was asked for.
    let boundAddress: String

    static let backlog: Int32 = 1024

    /// Parses "HOST:PORT" or "[V6]:PORT", binds and listens.
    static func open(_ address: String) throws(SocketError) -> Listener {
        let (host, port) = try split(address)
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV
        var result: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, port, &hints, &result)
        guard rc == 0, let info = result else {
            let why = rc == 0 ? "no address" : String(cString: gai_strerror(rc))
            throw SocketError(call: "resolve", errno: 0, detail: "\(address): \(why)")
        }
        defer { freeaddrinfo(result) }
        let family = info.pointee.ai_family
        let fd = try Syscall.check("socket", detail: address) {
            socket(
                family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        do {
            var one: Int32 = 1
            let size = socklen_t(MemoryLayout<Int32>.size)
            _ = try Syscall.check("setsockopt(SO_REUSEADDR)", detail: address) {
                setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, size)
            }
            if family == AF_INET6 {
                _ = try Syscall.check("setsockopt(IPV6_V6ONLY)", detail: address) {
                    setsockopt(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, &one, size)
                }
            }
            _ = try Syscall.check("bind", detail: address) {
                bind(fd, info.pointee.ai_addr, info.pointee.ai_addrlen)
            }
            _ = try Syscall.check("listen", detail: address) { listen(fd, backlog) }
            let bound = try localAddress(fd)
            return Listener(fd: fd, boundAddress: bound)
        } catch {
            Syscall.close(fd)
            throw error
        }
    }

    /// Splits "HOST:PORT" / "[V6]:PORT" into host and port strings.
    static func split(_ address: String) throws(SocketError) -> (String, String) {
        let bad = SocketError(
            call: "parse address", errno: 0,
            detail: "\"\(address)\": expected HOST:PORT or [IPV6]:PORT")
        var host: Substring
        var port: Substring
        if address.hasPrefix("[") {
            guard let close = address.firstIndex(of: "]") else { throw bad }
            host = address[address.index(after: address.startIndex)..<close]
            let rest = address[address.index(after: close)...]
            guard rest.hasPrefix(":") else { throw bad }
            port = rest.dropFirst()
        } else {
            guard let colon = address.lastIndex(of: ":") else { throw bad }
            host = address[..<colon]
            port = address[address.index(after: colon)...]
            if host.contains(":") { throw bad }  // an IPv6 literal must be bracketed
        }
        guard !host.isEmpty, !port.isEmpty, port.allSatisfy({ $0.isASCII && $0.isNumber }),
            let p = Int(port), p <= 65535
        else { throw bad }
        return (String(host), String(p))
    }

    /// "127.0.0.1:41234" or "[::1]:41235" for a bound or connected socket.
    static func localAddress(_ fd: Int32) throws(SocketError) -> String {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = try withUnsafeMutablePointer(to: &storage) { (p) throws(SocketError) -> Int32 in
            try p.withMemoryRebound(to: sockaddr.self, capacity: 1) { (sa) throws(SocketError) -> Int32 in
                try Syscall.check("getsockname") { getsockname(fd, sa, &length) }
            }
        }
        return format(&storage)
    }

    private static func cString(_ chars: [CChar]) -> String {
        String(decoding: chars.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    static func format(_ storage: inout sockaddr_storage) -> String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        switch Int32(storage.ss_family) {
        case AF_INET:
            return withUnsafePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { sin in
                    var a = sin.pointee.sin_addr
                    inet_ntop(AF_INET, &a, &text, socklen_t(text.count))
                    return "\(cString(text)):\(UInt16(bigEndian: sin.pointee.sin_port))"
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) { p in
                p.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { sin6 in
                    var a = sin6.pointee.sin6_addr
                    inet_ntop(AF_INET6, &a, &text, socklen_t(text.count))
                    return "[\(cString(text))]:\(UInt16(bigEndian: sin6.pointee.sin6_port))"
                }
            }
        default:
            return "unknown"
        }
    }
}
