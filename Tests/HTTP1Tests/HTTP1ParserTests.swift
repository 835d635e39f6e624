import HTTP1
import HTTPCore
import Testing

@Suite struct HTTP1ParserValidTests {
    @Test func simpleGet() {
        let out = parseBothWays("GET /layers/3?window=60&x=%20 HTTP/1.1\r\nHost: a\r\nUser-Agent:  curl/8 \r\n\r\n")
        #expect(
            out == [
                .request(
                    method: "GET", path: "/layers/3", query: "window=60&x=%20", version: .http1_1,
                    headers: ["host: a", "user-agent: curl/8"], body: [], keepAlive: true)
            ])
    }

    @Test func headerNamesAreLowerCasedAndValuesKeepInnerSpaces() {
        let out = parseBothWays("GET / HTTP/1.1\r\nHOST: a\r\nX-Thing:\tone  two\t\r\n\r\n")
        #expect(
            out == [
                .request(
                    method: "GET", path: "/", query: nil, version: .http1_1,
                    headers: ["host: a", "x-thing: one  two"], body: [], keepAlive: true)
            ])
    }

    @Test func contentLengthBody() {
        let out = parseBothWays("POST /v1/decisions HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\nhello world")
        #expect(out.count == 1)
        #expect(out.first?.body == Array("hello world".utf8))
    }

    @Test func identicalDuplicateContentLengthIsAccepted() {
        let out = parseBothWays("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3, 3\r\n\r\nabc")
        #expect(out.first?.body == Array("abc".utf8))
    }

    @Test func chunkedBodyWithExtensionsAndTrailers() {
        let text =
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "5;name=value\r\nhello\r\n6 ; x\r\n world\r\nA\r\n0123456789\r\n0\r\nX-Checksum: 1\r\n\r\n"
        let out = parseBothWays(text)
        #expect(out.count == 1)
        #expect(out.first?.body == Array("hello world0123456789".utf8))
    }

    @Test func chunkedCodingNameIsCaseInsensitive() {
        let out = parseBothWays("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n")
        #expect(out.first?.body == [])
    }

    /// Tokens fold case in ASCII only: the Kelvin sign (U+212A) lower-cases to "k" in Unicode,
    /// which would turn `chun\u{212A}ed` into `chunked` and `\u{212A}eep-alive` into `keep-alive`.
    @Test func kelvinSignIsNotFoldedIntoATransferCoding() {
        let out = parseBothWays(
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chun\u{212A}ed\r\n\r\n0\r\n\r\n")
        #expect(out == [.failure(501)])
    }

    @Test func kelvinSignIsNotKeepAlive() {
        let out = parseBothWays("GET / HTTP/1.0\r\nConnection: \u{212A}eep-alive\r\n\r\n")
        #expect(out.count == 1)
        if case .request(_, _, _, _, _, _, let keepAlive) = out.first { #expect(!keepAlive) }
    }

    @Test func asciiLowercasingLeavesOtherCharactersAlone() {
        #expect("Chun\u{212A}ED".asciiLowercased() == "chun\u{212A}ed")
        #expect("\u{212A}".asciiLowercased() != "k")
        #expect("KEEP-Alive".asciiLowercased() == "keep-alive")
        #expect(HTTPHeaders([("X-\u{212A}", "v")])["x-k"] == nil)
    }

    @Test func pipelineOfThreeShapes() {
        let text =
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\n"
            + "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nxyz"
            + "POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
            + "GET /d HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        let out = parseBothWays(text)
        #expect(out.count == 4)
        let paths = out.compactMap { o -> String? in if case .request(_, let p, _, _, _, _, _) = o { p } else { nil } }
        #expect(paths == ["/a", "/b", "/c", "/d"])
        #expect(out[1].body == Array("xyz".utf8))
        #expect(out[2].body == Array("ok".utf8))
        if case .request(_, _, _, _, _, _, let keepAlive) = out[3] {
            #expect(!keepAlive)
        } else {
            Issue.record("not a request")
        }
    }

    @Test(arguments: [
        ("HTTP/1.1", "", true),
        ("HTTP/1.1", "Connection: close\r\n", false),
        ("HTTP/1.1", "Connection: keep-alive, Close\r\n", false),
        ("HTTP/1.0", "", false),
        ("HTTP/1.0", "Connection: keep-alive\r\n", true),
        ("HTTP/1.0", "Connection: Keep-Alive\r\nConnection: close\r\n", false),
    ])
    func persistence(version: String, header: String, keepAlive: Bool) {
        let out = parseBothWays("GET / \(version)\r\nHost: a\r\n\(header)\r\n")
        guard case .request(_, _, _, _, _, _, let k)? = out.first else {
            Issue.record("no request: \(out)")
            return
        }
        #expect(k == keepAlive)
    }

    @Test func http10WithoutHostIsAccepted() {
        let out = parseBothWays("GET / HTTP/1.0\r\n\r\n")
        #expect(out.count == 1 && out.first?.status == nil)
    }

    @Test func leadingEmptyLinesAreIgnored() {
        let out = parseBothWays("\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(out.count == 1 && out.first?.status == nil)
    }

    @Test func absoluteFormTargetYieldsPathAndQuery() {
        let out = parseBothWays("GET http://example.com:8080/metrics?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
        #expect(
            out == [
                .request(
                    method: "GET", path: "/metrics", query: "x=1", version: .http1_1,
                    headers: ["host: example.com"], body: [], keepAlive: true)
            ])
    }

    @Test func higherMinorVersionIsAnsweredAsHTTP11() {
        let out = parseBothWays("GET / HTTP/1.7\r\nHost: a\r\n\r\n")
        guard case .request(_, _, _, let v, _, _, _)? = out.first else { Issue.record("no request"); return }
        #expect(v == .http1_1)
    }

    @Test func expectContinueIsReportedBeforeTheBody() {
        var parser = HTTP1Parser()
        let head = Array("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n".utf8)
        head.withUnsafeBytes { parser.append($0) }
        var events: [Outcome] = []
        while let e = parser.next() { events.append(outcome(e)) }
        #expect(events == [.continueExpected])
        #expect(parser.phase == .body)
        parser.append(contentsOf: Array("data".utf8))
        while let e = parser.next() { events.append(outcome(e)) }
        #expect(events.count == 2)
        #expect(events.last?.body == Array("data".utf8))
    }

    @Test func expectContinueWithoutBodyNeedsNoInterimResponse() {
        #expect(parseBothWays("GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n").count == 1)
    }

    @Test func phaseFollowsTheRequest() {
        var parser = HTTP1Parser()
        #expect(parser.phase == .idle)
        parser.append(contentsOf: Array("POST / HTTP/1.1\r\nHo".utf8))
        #expect(parser.next().map(outcome) == nil)
        #expect(parser.phase == .head)
        parser.append(contentsOf: Array("st: a\r\nContent-Length: 2\r\n\r\nx".utf8))
        #expect(parser.next().map(outcome) == nil)
        #expect(parser.phase == .body)
        parser.append(contentsOf: Array("y".utf8))
        #expect(parser.next().map(outcome)?.body == Array("xy".utf8))
        #expect(parser.phase == .idle)
    }
}

@Suite struct HTTP1ParserRefusalTests {
    @Test(arguments: [
        // Framing and smuggling (RFC 9112 sections 6.1, 6.3, 11.2).
        (
            "both CL and TE", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400
        ),
        ("TE then CL", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400),
        ("differing CL headers", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400),
        ("differing CL list", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\n", 400),
        ("negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
        ("signed CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", 400),
        ("hex CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x10\r\n\r\n", 400),
        ("empty CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", 400),
        ("overflowing CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400),
        ("chunked twice", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", 400),
        ("TE in HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        ("unknown coding", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
        (
            "unknown coding before chunked", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501
        ),
        ("bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
        ("empty chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", 400),
        ("negative chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n", 400),
        ("chunk size junk", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n", 400),
        (
            "chunk without CRLF", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokXX0\r\n\r\n",
            400
        ),
        ("bare LF after chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\r\n", 400),
        // Syntax (RFC 9112 sections 2.2, 3, 5).
        ("obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: one\r\n two\r\n\r\n", 400),
        ("whitespace before first field", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400),
        ("space before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
        ("no colon", "GET / HTTP/1.1\r\nHost a\r\n\r\n", 400),
        ("empty name", "GET / HTTP/1.1\r\n: a\r\nHost: a\r\n\r\n", 400),
        ("NUL in value", "GET / HTTP/1.1\r\nHost: a\u{0}b\r\n\r\n", 400),
        ("bare CR in value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400),
        ("bare LF line end", "GET / HTTP/1.1\nHost: a\n\n", 400),
        ("bare LF in headers", "GET / HTTP/1.1\r\nHost: a\n\r\n", 400),
        ("missing Host", "GET / HTTP/1.1\r\n\r\n", 400),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
        ("bad method char", "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("double space", "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("relative target", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400),
        ("no version", "GET /\r\nHost: a\r\n\r\n", 400),
        ("lower-case version", "GET / http/1.1\r\nHost: a\r\n\r\n", 400),
        ("junk version", "GET / HTTP/1.1x\r\nHost: a\r\n\r\n", 400),
        ("HTTP/2.0 request line", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
        ("HTTP/0.9", "GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505),
        ("other expectation", "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 200-ok\r\nContent-Length: 1\r\n\r\nx", 417),
    ])
    func refused(name: String, text: String, status: Int) {
        let out = parseBothWays(text)
        #expect(out.last?.status == status, "\(name): \(out)")
        // Nothing is delivered after a refusal: the connection is closed.
        #expect(out.filter { $0.status != nil }.count == 1, "\(name): \(out)")
    }

    @Test func uriTooLongAtOneByteOverTheLimit() {
        var limits = HTTPLimits()
        let line = "GET /\(String(repeating: "a", count: 50)) HTTP/1.1"
        limits.maxRequestLineBytes = line.utf8.count - 1
        #expect(statusOf("\(line)\r\nHost: a\r\n\r\n", limits: limits) == 414)
        limits.maxRequestLineBytes = line.utf8.count
        #expect(statusOf("\(line)\r\nHost: a\r\n\r\n", limits: limits) == nil)
    }

    @Test func uriTooLongWithoutEverSeeingTheLineEnd() {
        var limits = HTTPLimits()
        limits.maxRequestLineBytes = 100
        #expect(statusOf("GET /" + String(repeating: "a", count: 200), limits: limits) == 414)
    }

    @Test func overlongLineEndingInBareLFIsTooLongHoweverItIsSplit() {
        // Found by the fuzz target: the verdict must not depend on where reads split the bytes.
        var limits = HTTPLimits()
        limits.maxRequestLineBytes = 18
        #expect(statusOf("PUContent-Length: 40/ \n\r T\rHTTP/1.1\r\nHost: a\r\n\r\n", limits: limits) == 414)
        #expect(statusOf("GET /short\nHost: a\r\n\r\n", limits: limits) == 400)
    }

    @Test func headerSectionOneByteOverTheLimit() {
        var limits = HTTPLimits()
        let fields = "Host: a\r\nX: \(String(repeating: "b", count: 100))\r\n"
        limits.maxHeaderBytes = fields.utf8.count - 1
        #expect(statusOf("GET / HTTP/1.1\r\n\(fields)\r\n", limits: limits) == 431)
        limits.maxHeaderBytes = fields.utf8.count
        #expect(statusOf("GET / HTTP/1.1\r\n\(fields)\r\n", limits: limits) == nil)
    }

    @Test func endlessHeaderLineIsCutAtTheLimit() {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 64
        #expect(statusOf("GET / HTTP/1.1\r\nX: " + String(repeating: "b", count: 500), limits: limits) == 431)
    }

    @Test func headerCountOneOverTheLimit() {
        var limits = HTTPLimits()
        limits.maxHeaderCount = 3
        #expect(statusOf("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", limits: limits) == nil)
        #expect(statusOf("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n", limits: limits) == 431)
    }

    @Test func trailersCountAgainstTheHeaderLimits() {
        var limits = HTTPLimits()
        limits.maxHeaderCount = 3
        let head = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"
        #expect(statusOf(head + "T1: x\r\n\r\n", limits: limits) == nil)
        #expect(statusOf(head + "T1: x\r\nT2: y\r\n\r\n", limits: limits) == 431)
        #expect(statusOf(head + "T1 x\r\n\r\n") == 400)
    }

    @Test func bodyOverTheLimit() {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 10
        #expect(statusOf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\n0123456789", limits: limits) == nil)
        #expect(statusOf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", limits: limits) == 413)
        let chunked = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        #expect(statusOf(chunked + "6\r\n012345\r\n4\r\n6789\r\n0\r\n\r\n", limits: limits) == nil)
        #expect(statusOf(chunked + "6\r\n012345\r\n5\r\n", limits: limits) == 413)
        #expect(statusOf(chunked + "FFFFFFFFFFFFFFFFFFFFFFFF\r\n", limits: limits) == 413)
    }

    @Test func bodyOverTheLimitIsRefusedBeforeContinue() {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 1000
        let out = parseBothWays(
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n", limits: limits)
        #expect(out == [.failure(413)])
    }

    @Test func refusalInsidePipelineStopsAfterTheGoodRequests() {
        let out = parseBothWays(
            "GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n"
        )
        #expect(out.count == 2)
        #expect(out.last == .failure(400))
    }
}
