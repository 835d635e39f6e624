import HTTP1
import HTTPCore
import Testing

/// The parser's shortcuts for the common request shapes (literal method and field-name Strings,
/// origin-form targets split on bytes, one plain Content-Length) give what the general paths give.
@Suite struct HTTP1FastPathTests {
    @Test(arguments: [
        "GET", "PUT", "POST", "HEAD", "DELETE", "get", "Get", "POS", "POSTS", "PATCH", "OPTIONS",
        "DELETe", "HEAD1", "GOT", "PUX", "X",
    ])
    func methodIsTheBytesSent(method: String) {
        let out = parseBothWays("\(method) /a HTTP/1.1\r\nHost: a\r\n\r\n")
        guard case .request(let m, _, _, _, _, _, _) = out.first else {
            Issue.record("no request: \(out)")
            return
        }
        #expect(m == method)
    }

    @Test(arguments: ["/", "/v1/decisions", "/a?b", "/a?", "/?x", "/a?b?c", "/a%3Fb?c=%20&d", "/a/b/?x=1&y=2"])
    func originFormSplitsLikeTheGeneralSplitter(target: String) {
        let out = parseBothWays("GET \(target) HTTP/1.1\r\nHost: a\r\n\r\n")
        let general = HTTPRequest(method: "GET", target: target)
        guard case .request(_, let path, let query, _, _, _, _) = out.first else {
            Issue.record("no request: \(out)")
            return
        }
        #expect(path == general.path, "\(target)")
        #expect(query == general.query, "\(target)")
    }

    @Test func recognisedFieldNamesAreLowerCaseWhateverTheirCase() {
        let text =
            "POST / HTTP/1.1\r\nHOST: a\r\nContent-TYPE: application/json\r\nCONTENT-length: 2\r\n"
            + "EXPECT: 100-continue\r\nConnection: Keep-Alive\r\ncontent-typo: x\r\nX-Host: y\r\nHosT2: z\r\n\r\nhi"
        let out = parseBothWays(text)
        guard case .request(_, _, _, _, let headers, let body, let keepAlive) = out.last else {
            Issue.record("no request: \(out)")
            return
        }
        #expect(
            headers == [
                "host: a", "content-type: application/json", "content-length: 2", "expect: 100-continue",
                "connection: Keep-Alive", "content-typo: x", "x-host: y", "host2: z",
            ])
        #expect(body == Array("hi".utf8))
        #expect(keepAlive)
    }

    @Test func transferEncodingNameIsLowerCase() {
        let out = parseBothWays("POST / HTTP/1.1\r\nHost: a\r\nTRANSFER-ENCODING: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
        guard case .request(_, _, _, _, let headers, let body, _) = out.last else {
            Issue.record("no request: \(out)")
            return
        }
        #expect(headers == ["host: a", "transfer-encoding: chunked"])
        #expect(body == Array("hi".utf8))
    }

    @Test(arguments: [
        ("3", 3), ("003", 3), ("0", 0), ("3, 3", 3), ("3,3", 3), ("  3  ", 3), ("3 ,3", 3),
    ])
    func contentLengthAccepted(value: String, length: Int) {
        let body = String(repeating: "x", count: length)
        let out = parseBothWays("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(value)\r\n\r\n\(body)")
        #expect(out.count == 1, "\(value): \(out)")
        #expect(out.first?.body == Array(body.utf8), "\(value)")
    }

    @Test(arguments: ["3a", "3, 4", "3,", ",3", "x", "1 2", "99999999999999999999"])
    func contentLengthRefused(value: String) {
        #expect(statusOf("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \(value)\r\n\r\nabc") == 400, "\(value)")
    }
}

/// Header lookups with names that need no folding take no `lowercased()`; the answer is the same.
@Suite struct HTTPHeadersLookupTests {
    @Test func lookupsInAnyCase() {
        let h = HTTPHeaders(lowercasedFields: [("content-type", "a"), ("x-ä", "b"), ("content-type", "c")])
        #expect(h["content-type"] == "a")
        #expect(h["Content-Type"] == "a")
        #expect(h["CONTENT-TYPE"] == "a")
        #expect(h.values("content-type") == ["a", "c"])
        #expect(h.values("Content-TYPE") == ["a", "c"])
        // Names fold in ASCII only (field names are ASCII tokens, RFC 9110 section 5.1).
        #expect(h["X-Ä"] == nil)
        #expect(h["x-ä"] == "b")
        #expect(h["content-typ"] == nil)
        #expect(h.value(lowercasedName: "content-type") == "a")
        #expect(h.value(lowercasedName: "x-ä") == "b")
        #expect(h.value(lowercasedName: "content-typ") == nil)
    }
}

/// Content-Type values and repeated Content-Length fields take the same path as any other value.
@Suite struct HTTP1FieldValueTests {
    @Test(arguments: [
        "application/json", "Application/JSON", "application/json; charset=utf-8", "application/jsonx",
        "application/jso", "text/plain",
    ])
    func contentTypeValueIsKeptAsSent(value: String) {
        let out = parseBothWays("POST / HTTP/1.1\r\nHost: a\r\nContent-Type: \(value)\r\nContent-Length: 2\r\n\r\nhi")
        guard case .request(_, _, _, _, let headers, _, _) = out.last else {
            Issue.record("no request: \(out)")
            return
        }
        #expect(headers == ["host: a", "content-type: \(value)", "content-length: 2"])
    }

    @Test(arguments: [
        (["2", "2"], 200), (["2", "2", "2"], 200), (["2", "2, 2"], 200), (["2", "3"], 400), (["2", "2", "3"], 400),
        (["2", "x"], 400), (["x", "2"], 400),
    ])
    func repeatedContentLength(values: [String], status: Int) {
        let head = values.map { "Content-Length: \($0)\r\n" }.joined()
        let out = parseBothWays("POST / HTTP/1.1\r\nHost: a\r\n\(head)\r\nhi")
        if status == 200 {
            #expect(out.count == 1 && out.first?.body == Array("hi".utf8), "\(values): \(out)")
        } else {
            #expect(out.last?.status == status, "\(values): \(out)")
        }
    }
}

/// Requests the HTTP/1.1 layer answers itself are reported to the handler, so they can be counted.
@Suite struct HTTP1RefusalReportTests {
    final class Recorder: HTTPHandler, @unchecked Sendable {
        // Confined to the one test thread that drives the session.
        var refused: [Int] = []
        var handled = 0
        func handle(_ request: HTTPRequest) -> HTTPResponse {
            handled += 1
            return HTTPResponse(status: 204)
        }
        func refusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
            refused.append(status)
            return .plainText(status, message, headers: headers)
        }
    }

    func run(_ text: String, limits: HTTPLimits = HTTPLimits()) -> Recorder {
        let recorder = Recorder()
        let session = HTTP1ServerSession(handler: recorder, limits: limits, now: 0, dateCache: fixedDates())
        var output: [UInt8] = []
        let bytes = Array(text.utf8)
        _ = bytes.withUnsafeBytes { session.receive($0, now: 1, output: &output) }
        return recorder
    }

    @Test func goodRequestReportsNothing() {
        let r = run("GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        #expect(r.handled == 1)
        #expect(r.refused.isEmpty)
    }

    @Test func headerSectionTooLargeIs431() {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 64
        let r = run(
            "GET / HTTP/1.1\r\nHost: a\r\nX-Long: \(String(repeating: "x", count: 100))\r\n\r\n", limits: limits)
        #expect(r.refused == [431])
        #expect(r.handled == 0)
    }

    @Test func bodyTooLargeIs413AndMalformedIs400() {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 10
        #expect(run("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n", limits: limits).refused == [413])
        #expect(run("GET / HTTP/1.1\r\nHost : a\r\n\r\n").refused == [400])
    }

    @Test func timeoutIs408() {
        let recorder = Recorder()
        let session = HTTP1ServerSession(handler: recorder, limits: HTTPLimits(), now: 0, dateCache: fixedDates())
        var output: [UInt8] = []
        let bytes = Array("GET / HTTP/1.1\r\nHo".utf8)
        _ = bytes.withUnsafeBytes { session.receive($0, now: 1, output: &output) }
        let deadline = session.deadline ?? 0
        _ = session.deadlineExpired(now: deadline, output: &output)
        #expect(recorder.refused == [408])
        #expect(String(decoding: output, as: UTF8.self).hasPrefix("HTTP/1.1 408 "))
    }
}

/// The parser reuses the field list and body storage of a request once it is released; a request
/// still held keeps its own fields and body, and a reused parser answers as a fresh one does.
@Suite struct HTTP1BufferReuseTests {
    static let first = "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-One: 1\r\n\r\nhello"
    static let second = "POST /b HTTP/1.1\r\nHost: b\r\nContent-Length: 3\r\n\r\nbye"
    static let third = "PUT /c HTTP/1.1\r\nHost: c\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"

    @Test func heldRequestIsUntouchedByTheNextOnes() {
        var parser = HTTP1Parser()
        parser.append(contentsOf: Array((Self.first + Self.second + Self.third).utf8))
        var held: [HTTPRequest] = []
        while let event = parser.next() {
            guard case .request(let request, _) = event else {
                Issue.record("unexpected \(event)")
                return
            }
            held.append(request)
        }
        #expect(held.map(\.path) == ["/a", "/b", "/c"])
        #expect(held.map { String(decoding: $0.body, as: UTF8.self) } == ["hello", "bye", "ok"])
        #expect(
            held.map { $0.headers.map { "\($0.name): \($0.value)" } } == [
                ["host: a", "content-length: 5", "x-one: 1"],
                ["host: b", "content-length: 3"],
                ["host: c", "transfer-encoding: chunked"],
            ])
    }

    @Test func releasedRequestsGiveWhatAFreshParserGives() {
        var reused = HTTP1Parser()
        for text in [Self.first, Self.second, Self.third, Self.first] {
            var fresh = HTTP1Parser()
            fresh.append(contentsOf: Array(text.utf8))
            reused.append(contentsOf: Array(text.utf8))
            // Each reused request is dropped before the next is parsed, so its storage is reused.
            guard case .request(let a, let keepA)? = fresh.next(), case .request(let b, let keepB)? = reused.next()
            else {
                Issue.record("no request for \(text)")
                return
            }
            #expect(a.method == b.method && a.path == b.path && a.query == b.query && keepA == keepB)
            #expect(a.body == b.body)
            #expect(a.headers.map { "\($0.name): \($0.value)" } == b.headers.map { "\($0.name): \($0.value)" })
        }
    }

    @Test func bodyLimitCountsOnlyTheCurrentRequest() {
        // A chunked body's limit is checked against the bytes gathered so far: the previous
        // request's body, whose storage is reused, must not count.
        var limits = HTTPLimits()
        limits.maxBodyBytes = 4
        var parser = HTTP1Parser(limits: limits)
        let text =
            "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nabcd"
            + "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwxyz\r\n0\r\n\r\n"
        parser.append(contentsOf: Array(text.utf8))
        var bodies: [String] = []
        while let event = parser.next() {
            guard case .request(let request, _) = event else {
                Issue.record("unexpected \(event)")
                return
            }
            bodies.append(String(decoding: request.body, as: UTF8.self))
        }
        #expect(bodies == ["abcd", "wxyz"])
    }
}

/// Path, Host and Content-Length Strings are reused when the bytes repeat from one request to the
/// next; any difference (same length or not, longer than what is kept) gives the new bytes.
@Suite struct HTTP1RecentStringTests {
    @Test func repeatedAndChangedValuesMatchAFreshParser() {
        let long = "/" + String(repeating: "p", count: 100)
        let longOther = "/" + String(repeating: "p", count: 99) + "q"
        let shapes: [(path: String, host: String, body: String)] = [
            ("/v1/decisions", "127.0.0.1:9477", "hello"), ("/v1/decisions", "127.0.0.1:9477", "hello"),
            ("/v1/decisionz", "127.0.0.1:9478", "world"), ("/v1/decisions", "127.0.0.1:9477", "hi"),
            (long, "a", "x"), (long, "a", "x"), (longOther, "b", "y"), ("/x", "", "0123456789"),
            ("/x", "", "0123456789"), ("/y", "host", ""),
        ]
        var reused = HTTP1Parser()
        for shape in shapes {
            let text =
                "POST \(shape.path) HTTP/1.1\r\nHost: \(shape.host)\r\nContent-Length: \(shape.body.utf8.count)\r\n\r\n\(shape.body)"
            reused.append(contentsOf: Array(text.utf8))
            guard case .request(let request, _)? = reused.next() else {
                Issue.record("no request for \(text)")
                return
            }
            #expect(request.path == shape.path)
            #expect(request.headers["host"] == shape.host)
            #expect(request.headers["content-length"] == String(shape.body.utf8.count))
            #expect(request.body == Array(shape.body.utf8))
        }
    }
}

/// Recognised field names are compared a word at a time with case folded by OR 0x20; a name one
/// token byte away from a recognised one (at any position, including bytes that OR 0x20 moves)
/// must not be taken for it, and any letter case must be.
@Suite struct HTTP1FieldNameWordCompareTests {
    /// Token bytes that are not letters or "-": "^" and "_" become "~" and DEL under OR 0x20.
    static let strangers: [UInt8] = Array("^_~`|!#0".utf8)

    static func variants(of name: String) -> (same: [String], other: [String]) {
        let bytes = Array(name.utf8)
        var same = [name.uppercased(), name]
        var other: [String] = []
        for i in bytes.indices {
            var upper = bytes
            upper[i] = UInt8(ascii: "A") &+ (bytes[i] &- UInt8(ascii: "a"))
            if bytes[i] != UInt8(ascii: "-") { same.append(String(decoding: upper, as: UTF8.self)) }
            for b in strangers {
                var changed = bytes
                changed[i] = b
                other.append(String(decoding: changed, as: UTF8.self))
            }
        }
        return (same, other)
    }

    @Test func hostInAnyCaseOnly() {
        let (same, other) = Self.variants(of: "host")
        for name in same { #expect(statusOf("GET / HTTP/1.1\r\n\(name): a\r\n\r\n") == nil, "\(name)") }
        for name in other { #expect(statusOf("GET / HTTP/1.1\r\n\(name): a\r\n\r\n") == 400, "\(name)") }
    }

    @Test(arguments: ["content-length", "transfer-encoding"])
    func framingFieldsInAnyCaseOnly(field: String) {
        let (same, other) = Self.variants(of: field)
        func body(_ name: String) -> [UInt8]? {
            let value = field == "content-length" ? "3\r\n\r\nabc" : "chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
            var parser = HTTP1Parser()
            parser.append(contentsOf: Array("POST / HTTP/1.1\r\nHost: a\r\n\(name): \(value)".utf8))
            guard case .request(let request, _)? = parser.next() else { return nil }
            return request.body
        }
        for name in same { #expect(body(name) == Array("abc".utf8), "\(name)") }
        for name in other { #expect(body(name) == [], "\(name)") }
    }

    @Test func expectInAnyCaseOnly() {
        let (same, other) = Self.variants(of: "expect")
        for name in same {
            #expect(
                statusOf("POST / HTTP/1.1\r\nHost: a\r\n\(name): nothing\r\nContent-Length: 0\r\n\r\n") == 417,
                "\(name)")
        }
        for name in other {
            #expect(
                statusOf("POST / HTTP/1.1\r\nHost: a\r\n\(name): nothing\r\nContent-Length: 0\r\n\r\n") == nil,
                "\(name)")
        }
    }
}

/// Field names and methods are tokens (RFC 9110 section 5.6.2): every byte value is tried against
/// the RFC's tchar list written out here (the parser's set is the one its field-name word
/// comparison relies on).
@Suite struct HTTP1TokenSetTests {
    static let tchar = Set(
        Array("!#$%&'*+-.^_`|~0123456789".utf8)
            + Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz".utf8))

    @Test func everyByteInAFieldName() {
        for b in UInt8.min...UInt8.max where b != UInt8(ascii: ":") {
            var text = Array("GET / HTTP/1.1\r\nHost: a\r\nx".utf8)
            text.append(b)
            text += Array("y: v\r\n\r\n".utf8)
            var parser = HTTP1Parser()
            parser.append(contentsOf: text)
            let accepted: Bool
            if case .request? = parser.next() { accepted = true } else { accepted = false }
            #expect(accepted == Self.tchar.contains(b), "byte \(b)")
        }
    }

    @Test func everyByteInAMethod() {
        for b in UInt8.min...UInt8.max where b != UInt8(ascii: " ") {
            var text = Array("G".utf8)
            text.append(b)
            text += Array("T / HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
            var parser = HTTP1Parser()
            parser.append(contentsOf: text)
            let accepted: Bool
            if case .request? = parser.next() { accepted = true } else { accepted = false }
            #expect(accepted == Self.tchar.contains(b), "byte \(b)")
        }
    }
}
