import HTTP1
import HTTPCore
import Logging
import Testing

@testable import HTTPServer
@testable import MoEDaemon

/// JSON responses share one header list; changing one response's headers leaves the others alone.
@Suite struct SharedJSONHeadersTests {
    @Test func addingToOneResponseDoesNotChangeTheNext() {
        var first = HTTPResponse.json(200, Array("{}".utf8))
        first.headers.add("vary", "Accept-Encoding")
        first.headers.set("content-type", "text/plain")
        let second = HTTPResponse.json(201, [])
        #expect(second.headers.map { "\($0.name): \($0.value)" } == ["content-type: application/json"])
        #expect(first.headers["content-type"] == "text/plain")
        #expect(first.headers["vary"] == "Accept-Encoding")
        let error = HTTPResponse.error(400, "bad", headers: ["allow": "GET"])
        #expect(error.headers.map { "\($0.name): \($0.value)" } == ["content-type: application/json", "allow: GET"])
        #expect(HTTPResponse.json(200, []).headers.count == 1)
    }
}

/// The protocol layers take the body of the errors they answer themselves from the router: the
/// daemon's JSON error, with a refused request counted and a refused connection not.
@Suite struct DaemonRefusalTests {
    let router = DaemonRouter(
        configuration: DaemonConfiguration(), version: "test", logger: Logger(label: "test"),
        clock: { 1000 })

    var other: [String] {
        router.counters.snapshot().requests.filter { $0.0.route == "other" }.map { "\($0.0.code) \($0.1)" }
    }

    @Test func aRefusedRequestIsTheJSONErrorAndCounted() {
        let r = router.refusal(status: 413, message: "too large", headers: HTTPHeaders())
        #expect(r.status == 413)
        #expect(r.headers.map { "\($0.name): \($0.value)" } == ["content-type: application/json"])
        #expect(r.body == Array(#"{"error":"too large"}"#.utf8) + [0x0A])
        #expect(other == ["413 1"])
    }

    @Test func aRefusedConnectionIsTheJSONErrorAndNotCounted() {
        let r = router.connectionRefusal(status: 503, message: "too many connections", headers: ["retry-after": "1"])
        #expect(r.status == 503)
        #expect(r.headers.map { "\($0.name): \($0.value)" } == ["content-type: application/json", "retry-after: 1"])
        #expect(r.body == Array(#"{"error":"too many connections"}"#.utf8) + [0x0A])
        #expect(other.isEmpty)
    }
}

/// The daemon's answers to what the protocol layers refuse, byte for byte.
@Suite struct DaemonRefusalWireTests {
    let router = DaemonRouter(
        configuration: DaemonConfiguration(), version: "test", logger: Logger(label: "test"),
        clock: { 1000 })

    var other: [String] {
        router.counters.snapshot().requests.filter { $0.0.route == "other" }.map { "\($0.0.code) \($0.1)" }
    }

    @Test func theConnectionCapAnswer() {
        let bytes = HTTPServer.rejection(router)
        #expect(
            String(decoding: bytes, as: UTF8.self)
                == "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                + "retry-after: 1\r\ncontent-length: 33\r\nconnection: close\r\n\r\n{\"error\":\"too many connections\"}\n"
        )
        #expect(other.isEmpty)
    }

    @Test func anHTTP1Refusal() {
        let session = HTTP1ServerSession(
            handler: router, limits: HTTPLimits(), now: 0,
            dateCache: HTTPDateCache(wallClock: { 784_111_777 }))
        var output: [UInt8] = []
        let request = Array("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".utf8)
        #expect(request.withUnsafeBytes { session.receive($0, now: 1, output: &output) } == .closeAfterWrite)
        #expect(
            String(decoding: output, as: UTF8.self)
                == "HTTP/1.1 400 Bad Request\r\ndate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"
                + "content-type: application/json\r\ncontent-length: 44\r\nconnection: close\r\n\r\n"
                + "{\"error\":\"differing Content-Length values\"}\n")
        #expect(other == ["400 1"])
    }
}
