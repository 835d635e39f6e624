import JSONOutput

/// A complete response from a handler.
///
/// Handlers set only semantic headers (`content-type`, `allow`, `retry-after`, ...). Framing
/// headers (`content-length`, `transfer-encoding`, `connection`) and `date` are the protocol
/// layer's job, since they differ between HTTP/1.1 and HTTP/2 (RFC 9113 section 8.2.2 forbids
/// connection-specific fields in HTTP/2).
public struct HTTPResponse: Sendable {
    public var status: Int
    public var headers: HTTPHeaders
    public var body: [UInt8]

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    /// A JSON response with `content-type: application/json`.
    public static func json(_ status: Int = 200, _ body: [UInt8]) -> HTTPResponse {
        HTTPResponse(status: status, headers: jsonHeaders, body: body)
    }

    /// Shared by every JSON response (copy-on-write: a handler that adds a field gets its own
    /// copy), so a JSON answer allocates no header list.
    static let jsonHeaders = HTTPHeaders(lowercasedFields: [("content-type", "application/json")])

    /// The JSON error body every layer uses: `{"error": message, "field": ..., "index": ...}`,
    /// with `field` and `index` present only when known.
    public static func error(_ status: Int, _ message: String, field: String? = nil, index: Int? = nil,
                             headers extra: HTTPHeaders = HTTPHeaders()) -> HTTPResponse {
        var w = JSONWriter(capacity: 64 + message.utf8.count)
        w.beginObject()
        w.field("error", message)
        if let field { w.field("field", field) }
        if let index { w.field("index", index) }
        w.endObject()
        var body = w.bytes
        body.append(UInt8(ascii: "\n"))
        var response = HTTPResponse.json(status, body)
        for f in extra { response.headers.add(f.name, f.value) }
        return response
    }

    /// The standard reason phrase for a status code (RFC 9110 section 15), "" when unknown.
    public static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 100: "Continue"
        case 101: "Switching Protocols"
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 206: "Partial Content"
        case 301: "Moved Permanently"
        case 302: "Found"
        case 304: "Not Modified"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 406: "Not Acceptable"
        case 408: "Request Timeout"
        case 409: "Conflict"
        case 411: "Length Required"
        case 413: "Content Too Large"
        case 414: "URI Too Long"
        case 415: "Unsupported Media Type"
        case 417: "Expectation Failed"
        case 422: "Unprocessable Content"
        case 429: "Too Many Requests"
        case 431: "Request Header Fields Too Large"
        case 500: "Internal Server Error"
        case 501: "Not Implemented"
        case 503: "Service Unavailable"
        case 505: "HTTP Version Not Supported"
        case 507: "Insufficient Storage"
        default: ""
        }
    }
}

/// What the daemon plugs into the server: a request in, a response out.
///
/// Synchronous on purpose: the protocol layers call it on the connection's event-loop thread,
/// so a handler must not block (ours take one short lock per layer). A handler that could block
/// would have to be run elsewhere; none of ours needs to.
public protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest) -> HTTPResponse

    /// The protocol layer answered a request itself with the error `status` (malformed, too
    /// large, too slow, ...) without calling `handle`, so a handler that counts requests can
    /// count these too. Called on the connection's thread; must not block.
    func protocolRefused(status: Int)
}

extension HTTPHandler {
    /// Handlers that count nothing need not implement it.
    public func protocolRefused(status: Int) {}
}

/// A handler made from a closure, for tests and small tools.
public struct ClosureHandler: HTTPHandler {
    let body: @Sendable (HTTPRequest) -> HTTPResponse
    public init(_ body: @escaping @Sendable (HTTPRequest) -> HTTPResponse) { self.body = body }
    public func handle(_ request: HTTPRequest) -> HTTPResponse { body(request) }
}
