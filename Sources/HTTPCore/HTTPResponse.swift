/// A response from a handler: its body as bytes, or a source that writes it piece by piece.
///
/// Handlers set only semantic headers (`content-type`, `allow`, `retry-after`, ...). Framing
/// headers (`content-length`, `transfer-encoding`, `connection`) and `date` are the protocol
/// layer's job, since they differ between HTTP/1.1 and HTTP/2 (RFC 9113 section 8.2.2 forbids
/// connection-specific fields in HTTP/2).
///
/// Not `Sendable`: a response with a source is made and sent on its connection's thread.
public struct HTTPResponse {
    public var status: Int
    public var headers: HTTPHeaders
    /// The body, when it is not streamed.
    public var body: [UInt8]
    /// The body, streamed: when set, `body` is empty and the protocol layer asks the source for
    /// pieces as the client takes them (HTTP/1.1 chunked, HTTP/2 DATA under flow control), so the
    /// whole body never has to exist at once.
    public var source: (any HTTPBodySource)?
    /// Set when the answer comes later (see `DeferredResponse`); the other fields then mean nothing.
    public var deferred: DeferredResponse? = nil

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.body = body
    }

    public init(status: Int, headers: HTTPHeaders = HTTPHeaders(), source: any HTTPBodySource) {
        self.status = status
        self.headers = headers
        self.body = []
        self.source = source
    }

    /// Drains a streamed body into `body` (for tests and small tools; the protocol layers never
    /// do this, since it defeats the point of a source).
    public mutating func collectBody() {
        guard let source else { return }
        while source.next(into: &body, atMost: 1 << 20) {}
        self.source = nil
    }

    /// The message as `text/plain`, then a newline: the minimal error body, for handlers with no
    /// error format of their own (see `HTTPHandler.refusal`).
    public static func plainText(_ status: Int, _ message: String, headers extra: HTTPHeaders = HTTPHeaders())
        -> HTTPResponse
    {
        var response = HTTPResponse(status: status, headers: plainTextHeaders, body: Array((message + "\n").utf8))
        for f in extra { response.headers.add(f.name, f.value) }
        return response
    }

    static let plainTextHeaders = HTTPHeaders(lowercasedFields: [("content-type", "text/plain; charset=utf-8")])

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

/// What an application plugs into the server: a request in, a response out, and the body of
/// the answers the server gives without calling `handle`.
///
/// Synchronous on purpose: the protocol layers call it on the connection's event-loop thread,
/// so a handler must not block (ours take one short lock per layer). Work too long for the loop
/// runs elsewhere, and the handler returns `HTTPResponse.deferred` for it.
public protocol HTTPHandler: Sendable {
    func handle(_ request: HTTPRequest) -> HTTPResponse

    /// The answer to a request the protocol layer refuses itself, without calling `handle`
    /// (400 malformed, 408 too slow, 413, 414, 431, 501, 505): `status` with `message` and any
    /// `headers` the refusal needs. Once per refused request, so a handler that counts requests
    /// counts these here. Called on the connection's thread; must not block.
    func refusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse

    /// The answer written to a connection refused before any request is read (503 with
    /// `Retry-After` past the connection cap, RFC 9110 section 15.6.4). No request was refused,
    /// so there is nothing to count; the server asks once, when it is built.
    func connectionRefusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse

    /// The final answer to a request whose client waits for `100 Continue` before sending the
    /// body, when the head alone decides it (a missing token); nil to let the body come.
    /// Called on the connection's thread; must not block.
    func precheck(_ head: HTTPRequest) -> HTTPResponse?
}

extension HTTPHandler {
    /// Handlers with no error format of their own answer with the plain-text message.
    public func refusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        .plainText(status, message, headers: headers)
    }

    /// Handlers that decide only on whole requests let every body come.
    public func precheck(_ head: HTTPRequest) -> HTTPResponse? { nil }

    /// Handlers with no error format of their own answer with the plain-text message.
    public func connectionRefusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        .plainText(status, message, headers: headers)
    }
}

/// A handler made from a closure, for tests and small tools.
public struct ClosureHandler: HTTPHandler {
    let body: @Sendable (HTTPRequest) -> HTTPResponse
    public init(_ body: @escaping @Sendable (HTTPRequest) -> HTTPResponse) { self.body = body }
    public func handle(_ request: HTTPRequest) -> HTTPResponse { body(request) }
}
