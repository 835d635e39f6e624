import HTTP2
import HTTPCore
import Testing

/// The request value built from a stream's fields: ASCII targets are split on their bytes (the
/// fast path), others through `HTTPRequest(target:)` (the slow path); both must give the value
/// `HTTPRequest(target:)` gives, which is what the HTTP/1.1 path produces too.
@Suite struct HTTP2RequestValueTests {
    static func received(_ target: String, headers: [(String, String)] = [], body: [UInt8]? = nil) throws -> HTTPRequest
    {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler)
        let id = pipe.client.request(body == nil ? "GET" : "POST", target, headers: headers, body: body)
        pipe.run()
        #expect(pipe.client.responses[id]?.status != nil)
        return try #require(handler.requests.withLock { $0.first })
    }

    @Test(arguments: [
        "/", "/v1/layers", "/v1/layers/l0?window=5", "/?", "/a??b", "/a?b?c", "/x?a=1&b=%20+2",
        // Not ASCII: the slow path, including a combining mark right after "?", which joins it
        // into one Character, so a character-wise split does not see a "?" there.
        "/caf\u{E9}?q=\u{E9}", "/a?\u{301}b", "/\u{1F600}",
    ])
    func targetSplitsAsHTTPRequestDoes(target: String) throws {
        let request = try Self.received(target)
        let expected = HTTPRequest(method: "GET", target: target)
        #expect(request.path == expected.path)
        #expect(request.query == expected.query)
    }

    @Test func methodsAndHostAreKept() throws {
        let get = try Self.received("/x")
        #expect(get.method == "GET")
        #expect(get.headers["host"] == "test.local")  // from :authority
        #expect(get.headers.values("host").count == 1)
        let withHost = try Self.received("/x", headers: [("host", "other.example")])
        #expect(withHost.headers.values("host") == ["other.example"])  // not doubled by :authority

        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler)
        for method in ["PATCH", "OPTIONS", "DELETE", "HEAD", "PUT"] { pipe.client.request(method, "/m") }
        pipe.run()
        #expect(handler.requests.withLock { $0.map(\.method) } == ["PATCH", "OPTIONS", "DELETE", "HEAD", "PUT"])
    }

    @Test func contentLengthWithLeadingZerosIsAccepted() throws {
        let body = bytes(5)
        let request = try Self.received("/p", headers: [("content-length", "0005")], body: body)
        #expect(request.body == body)
        #expect(request.headers["content-length"] == "0005")
        // Every field in order, names lower-case, no pseudo-header.
        #expect(request.headers.map(\.name) == ["content-length", "host"])
    }

    @Test func fieldsKeepTheirOrderAndValues() throws {
        let request = try Self.received(
            "/f",
            headers: [
                ("x-a", "1"), ("content-type", "application/json"),
                ("x-long", String(repeating: "v", count: 300)), ("x-a", "2"),
            ])
        #expect(request.headers.values("x-a") == ["1", "2"])
        #expect(request.headers["content-type"] == "application/json")
        #expect(request.headers["x-long"]?.count == 300)
        #expect(request.headers.map(\.name) == ["x-a", "content-type", "x-long", "x-a", "host"])
    }

    /// Common content types come back as literals (fast path), others are decoded (slow path):
    /// the values must be the same either way.
    @Test(arguments: [
        "application/json", "application/x-ndjson", "application/json; charset=utf-8",
        "application/jsonx", "application/jso", "text/plain", "application/ndjson",
    ])
    func contentTypeValuesArePreserved(value: String) throws {
        let request = try Self.received("/c", headers: [("content-type", value)], body: bytes(3))
        #expect(request.headers["content-type"] == value)
    }
}
