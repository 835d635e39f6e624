import HTTPCore

/// Content negotiation of answers (RFC 9110 section 12): gzip when `Accept-Encoding` allows it,
/// and `Vary` naming the request fields the answer depends on.
extension DaemonRouter {
    /// JSON bodies at least this long are gzipped when the client allows it: a large summary
    /// polled every few seconds by the dashboard shrinks tenfold, a small one is not worth it.
    static let gzipThreshold = 1024

    /// `response`, gzipped when it is a 200 of at least `threshold` bytes and `Accept-Encoding`
    /// allows gzip. `Vary` is set on every answer of the route, compressed or not, so that a
    /// cache never serves one coding for the other (RFC 9110 section 12.5.5).
    static func negotiateEncoding(
        _ response: HTTPResponse, _ request: HTTPRequest,
        vary: String = "Accept-Encoding", threshold: Int = gzipThreshold
    ) -> HTTPResponse {
        var r = response
        r.headers.add("vary", vary)
        guard r.status == 200, Gzip.accepted(by: request.headers["accept-encoding"]) else { return r }
        if let source = r.source {
            // A streamed body's size is unknown until it is written: such bodies are the large
            // ones, so they are compressed as they are written.
            if let gz = GzipSource(source) {
                r.source = gz
                r.headers.add("content-encoding", "gzip")
            }
        } else if r.body.count >= threshold, let gz = Gzip.compress(r.body) {
            r.body = gz
            r.headers.add("content-encoding", "gzip")
        }
        return r
    }
}
