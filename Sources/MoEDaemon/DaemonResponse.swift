import HTTPCore
import JSONOutput

/// The daemon's JSON responses and its error body, which the HTTP layers do not know: they ask
/// the router (`refusal`, `connectionRefusal`) for the body of the errors they answer themselves.
extension HTTPResponse {
    /// The media type of every JSON answer (RFC 8259 section 11).
    static let jsonMediaType = "application/json"

    /// A JSON response with `content-type: application/json`.
    static func json(_ status: Int = 200, _ body: [UInt8]) -> HTTPResponse {
        HTTPResponse(status: status, headers: jsonHeaders, body: body)
    }

    /// Shared by every JSON response (copy-on-write: a handler that adds a field gets its own
    /// copy), so a JSON answer allocates no header list.
    static let jsonHeaders = HTTPHeaders(lowercasedFields: [("content-type", jsonMediaType)])

    /// The JSON error body of every daemon error: `{"error": message, "field": ..., "index": ...}`,
    /// with `field` and `index` present only when known, then a newline.
    static func error(
        _ status: Int, _ message: String, field: String? = nil, index: Int? = nil,
        headers extra: HTTPHeaders = HTTPHeaders()
    ) -> HTTPResponse {
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
}
