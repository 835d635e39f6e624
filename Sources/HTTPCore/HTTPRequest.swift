/// The protocol a request arrived over; routes behave identically for each.
public enum HTTPVersion: Sendable, Equatable, CustomStringConvertible {
    case http1_0, http1_1, http2
    public var description: String {
        switch self {
        case .http1_0: "HTTP/1.0"
        case .http1_1: "HTTP/1.1"
        case .http2: "HTTP/2"
        }
    }
}

/// One complete request, as both the HTTP/1.1 parser and the HTTP/2 bridge produce it.
///
/// The body is fully received before the handler runs: our handlers are short, CPU-bound and
/// never block, so streaming bodies to them would add complexity without saving anything.
public struct HTTPRequest: Sendable {
    /// The method token exactly as sent (methods are case-sensitive, RFC 9110 section 9.1).
    public var method: String
    /// The path component of the request target, still percent-encoded.
    public var path: String
    /// The query component without the `?`, or nil when the target had none.
    public var query: String?
    public var version: HTTPVersion
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(
        method: String, path: String, query: String? = nil, version: HTTPVersion = .http1_1,
        headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.version = version
        self.headers = headers
        self.body = body
    }

    /// Splits a request target (`/a/b?x=1`) into path and query.
    public init(
        method: String, target: String, version: HTTPVersion = .http1_1,
        headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []
    ) {
        if let q = target.firstIndex(of: "?") {
            self.init(
                method: method, path: String(target[..<q]), query: String(target[target.index(after: q)...]),
                version: version, headers: headers, body: body)
        } else {
            self.init(method: method, path: target, query: nil, version: version, headers: headers, body: body)
        }
    }

    /// The value of one query parameter (`a=1&b=2`), percent-decoded, or nil.
    public func queryParameter(_ name: String) -> String? {
        guard let query else { return nil }
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            if PercentDecoding.decode(Substring(parts[0])) == name {
                return parts.count > 1 ? PercentDecoding.decode(parts[1]) : ""
            }
        }
        return nil
    }
}

/// Percent-decoding of URI components (RFC 3986 section 2.1), with `+` as a space in queries.
public enum PercentDecoding {
    /// Decodes `%XX` escapes; returns nil if an escape is malformed or the result is not UTF-8.
    public static func decode(_ s: Substring, plusAsSpace: Bool = true) -> String? {
        var out: [UInt8] = []
        out.reserveCapacity(s.utf8.count)
        var it = s.utf8.makeIterator()
        while let b = it.next() {
            if b == UInt8(ascii: "%") {
                guard let h = it.next(), let l = it.next(), let hv = hexValue(h), let lv = hexValue(l) else {
                    return nil
                }
                out.append(hv << 4 | lv)
            } else if b == UInt8(ascii: "+") && plusAsSpace {
                out.append(UInt8(ascii: " "))
            } else {
                out.append(b)
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    private static func hexValue(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): b - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
