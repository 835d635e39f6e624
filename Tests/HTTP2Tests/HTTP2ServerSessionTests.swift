import CNGHTTP2
import Foundation
import HTTP2
import HTTPCore
import Synchronization
import Testing

/// Echoes the request back: its parts as headers, its body as the body; counts calls.
final class EchoHandler: HTTPHandler {
    let calls = Mutex(0)
    let requests = Mutex<[HTTPRequest]>([])

    func handle(_ request: HTTPRequest) -> HTTPResponse {
        calls.withLock { $0 += 1 }
        requests.withLock { $0.append(request) }
        var headers: HTTPHeaders = [
            "x-method": request.method, "x-path": request.path, "x-query": request.query ?? "-",
            "x-version": request.version.description, "x-host": request.headers["host"] ?? "-",
            "x-field-count": String(request.headers.count),
            // A connection-specific field a careless handler might set: must not reach the wire.
            "connection": "keep-alive",
        ]
        headers.add("content-type", "application/octet-stream")
        return HTTPResponse(status: request.method == "POST" ? 201 : 200, headers: headers, body: request.body)
    }

    var callCount: Int { calls.withLock { $0 } }

    /// Statuses the HTTP/2 layer answered itself, as reported to the handler for counting.
    let refused = Mutex<[Int]>([])
    func refusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        refused.withLock { $0.append(status) }
        return .plainText(status, message, headers: headers)
    }
    var refusedStatuses: [Int] { refused.withLock { $0 } }
}

/// A deterministic, non-repeating-looking body (written through a raw buffer: debug builds map slowly).
func bytes(_ n: Int, seed: UInt8 = 7) -> [UInt8] {
    [UInt8](unsafeUninitializedCapacity: n) { buf, count in
        for i in 0..<n { buf[i] = UInt8(truncatingIfNeeded: i &* 31 &+ Int(seed) &+ i >> 8) }
        count = n
    }
}

@Suite struct HTTP2ServerSessionTests {
    @Test(arguments: [false, true])
    func getAndPostBecomeRequests(byteByByte: Bool) throws {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler)
        let get = pipe.client.request("GET", "/v1/layers/3?window=60&x=a%20b", headers: [("x-test", "yes")])
        let body = Array(#"{"layer":"blocks.3.moe","tokens_per_expert":[1,2,3]}"#.utf8)
        let post = pipe.client.request(
            "POST", "/v1/decisions", headers: [("content-type", "application/json")], body: body)
        pipe.run(byteByByte: byteByByte)

        let g = try #require(pipe.client.responses[get])
        #expect(g.status == 200)
        #expect(g.header("x-method") == "GET")
        #expect(g.header("x-path") == "/v1/layers/3")
        #expect(g.header("x-query") == "window=60&x=a%20b")
        #expect(g.header("x-version") == "HTTP/2")
        #expect(g.header("x-host") == "test.local")
        #expect(g.header("content-length") == "0")
        #expect(g.header("connection") == nil)
        #expect(g.closeCode == NGHTTP2_NO_ERROR.rawValue)

        let p = try #require(pipe.client.responses[post])
        #expect(p.status == 201)
        #expect(p.body == body)
        #expect(p.header("content-length") == String(body.count))
        #expect(p.header("content-type") == "application/octet-stream")
        #expect(handler.callCount == 2)

        let requests = handler.requests.withLock { $0 }
        let getRequest = try #require(requests.first { $0.method == "GET" })
        #expect(getRequest.headers["x-test"] == "yes")
        #expect(getRequest.headers.contains { $0.name.hasPrefix(":") } == false)
        #expect(getRequest.queryParameter("x") == "a b")
        #expect(pipe.lastDisposition == .keepOpen)
        #expect(pipe.server.isIdle)
    }

    @Test func headAnswersWithLengthButNoBody() throws {
        let handler = ClosureHandler { _ in HTTPResponse(status: 200, body: bytes(1234)) }
        var pipe = H2Pipe(handler: handler)
        let id = pipe.client.request("HEAD", "/summary")
        pipe.run()
        let r = try #require(pipe.client.responses[id])
        #expect(r.status == 200)
        #expect(r.header("content-length") == "1234")
        #expect(r.body.isEmpty)
        #expect(r.closeCode == NGHTTP2_NO_ERROR.rawValue)
    }

    @Test func expectContinueGetsAnInterim100() throws {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler)
        let body = bytes(3000)
        let waiting = pipe.client.request("POST", "/x", headers: [("expect", "100-continue")], body: body)
        let plain = pipe.client.request("POST", "/y", body: body)
        pipe.run()
        let w = try #require(pipe.client.responses[waiting])
        #expect(w.informational == [100])
        #expect(w.status == 201)
        #expect(w.body == body)
        #expect(pipe.client.responses[plain]?.informational == [])
    }

    /// A header section the handler refuses whatever the body (no credentials): the refusal
    /// instead of the 100, and the handler never sees the request; the expectation's token is
    /// case-insensitive (RFC 9110 section 10.1.1).
    @Test func expectContinueGetsTheHandlersRefusalFirst() throws {
        final class Refusing: HTTPHandler {
            let handled = Mutex(0)
            func handle(_ request: HTTPRequest) -> HTTPResponse {
                handled.withLock { $0 += 1 }
                return HTTPResponse(status: 201, body: request.body)
            }
            func precheck(_ head: HTTPRequest) -> HTTPResponse? {
                head.headers["authorization"] == nil ? HTTPResponse(status: 401) : nil
            }
        }
        let handler = Refusing()
        var pipe = H2Pipe(handler: handler)
        let body = bytes(3000)
        let refused = pipe.client.request("POST", "/x", headers: [("expect", "100-Continue")], body: body)
        let allowed = pipe.client.request(
            "POST", "/x", headers: [("expect", "100-CONTINUE"), ("authorization", "t")], body: body)
        pipe.run()
        let r = try #require(pipe.client.responses[refused])
        #expect(r.status == 401)
        #expect(r.informational == [])
        let a = try #require(pipe.client.responses[allowed])
        #expect(a.informational == [100])
        #expect(a.status == 201)
        #expect(a.body == body)
        #expect(handler.handled.withLock { $0 } == 1)
    }

    /// A deferred answer: the other streams are answered meanwhile, the session asks to be woken
    /// every poll interval, and the answer goes out on its stream once another thread completes it.
    @Test func aDeferredAnswerIsSentOnceCompleted() throws {
        final class Deferring: HTTPHandler {
            let pending = Mutex<DeferredResponse?>(nil)
            func handle(_ request: HTTPRequest) -> HTTPResponse {
                guard request.path == "/later" else { return HTTPResponse(status: 200, body: Array("now".utf8)) }
                let d = DeferredResponse()
                pending.withLock { $0 = d }
                return .deferred(d)
            }
        }
        let handler = Deferring()
        var pipe = H2Pipe(handler: handler)
        let later = pipe.client.request("POST", "/later", body: bytes(100))
        let now = pipe.client.request("GET", "/now")
        pipe.run()
        #expect(pipe.client.responses[now]?.status == 200)
        #expect(pipe.client.responses[later] == nil)
        let deferred = try #require(handler.pending.withLock { $0 })
        #expect(pipe.server.deadline == pipe.now + DeferredResponse.pollNanoseconds)

        // Not complete yet: the poll sends nothing and asks again.
        pipe.now += DeferredResponse.pollNanoseconds
        var out: [UInt8] = []
        #expect(pipe.server.deadlineExpired(now: pipe.now, output: &out) == .keepOpen)
        #expect(out.isEmpty)
        #expect(pipe.server.deadline == pipe.now + DeferredResponse.pollNanoseconds)

        let worker = Thread { deferred.complete(HTTPResponse(status: 201, body: Array("planned".utf8))) }
        worker.start()
        while deferred.result == nil { usleep(1_000) }
        pipe.now += DeferredResponse.pollNanoseconds
        #expect(pipe.server.deadlineExpired(now: pipe.now, output: &out) == .keepOpen)
        pipe.client.input(out)
        pipe.run()
        let r = try #require(pipe.client.responses[later])
        #expect(r.status == 201)
        #expect(r.body == Array("planned".utf8))
        #expect(pipe.server.isIdle)
    }

    @Test func manyConcurrentStreamsAreAllAnswered() throws {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler)
        var ids: [Int32] = []
        for i in 0..<100 {
            ids.append(pipe.client.request("POST", "/v1/decisions?i=\(i)", body: bytes(100 + i, seed: UInt8(i))))
        }
        pipe.run()
        for (i, id) in ids.enumerated() {
            let r = try #require(pipe.client.responses[id])
            #expect(r.status == 201)
            #expect(r.header("x-query") == "i=\(i)")
            #expect(r.body == bytes(100 + i, seed: UInt8(i)))
        }
        #expect(handler.callCount == 100)
    }

    @Test func largeBodiesFlowBothWaysWithoutStalling() throws {
        // 3 MiB: larger than the 64 KiB default windows and than our 1 MiB stream window, so
        // the upload completes only if the server keeps sending WINDOW_UPDATE.
        let handler = EchoHandler()
        // The client keeps the 64 KiB default window, so the response also needs flow control.
        var pipe = H2Pipe(client: H2TestClient(windowBytes: nil), handler: handler)
        let body = bytes(3 << 20)
        let id = pipe.client.request("POST", "/v1/decisions", body: body)
        pipe.run()
        let r = try #require(pipe.client.responses[id])
        #expect(r.status == 201)
        #expect(r.body.count == body.count)
        let echoed = r.body == body  // compared outside #expect: a failure would print 3 MiB
        #expect(echoed)
        #expect(handler.requests.withLock { $0.first?.body.count } == body.count)
    }

    @Test func streamsBeyondTheAdvertisedLimitAreRefused() throws {
        var limits = HTTPLimits()
        limits.maxConcurrentStreams = 4
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        // Submitted before the client has seen our SETTINGS, so it sends all ten at once.
        let ids = (0..<10).map { _ in pipe.client.request("GET", "/x") }
        pipe.run()
        let answered = ids.filter { pipe.client.responses[$0]?.status == 200 }
        let refused = ids.filter { pipe.client.responses[$0]?.closeCode == NGHTTP2_REFUSED_STREAM.rawValue }
        #expect(answered.count == 4)
        #expect(refused.count == 6)
        #expect(handler.callCount == 4)
        // The connection survives: a retry after SETTINGS arrived is answered.
        let retry = pipe.client.request("GET", "/retry")
        pipe.run()
        #expect(pipe.client.responses[retry]?.status == 200)
        #expect(pipe.lastDisposition == .keepOpen)
    }

    @Test func aClientThatHonoursTheLimitGetsEveryAnswer() throws {
        var limits = HTTPLimits()
        limits.maxConcurrentStreams = 3
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        pipe.run()  // exchange SETTINGS first
        #expect(pipe.client.settingsReceived == 1)
        #expect(nghttp2_session_get_remote_settings(pipe.client.session, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) == 3)
        let ids = (0..<20).map { pipe.client.request("POST", "/x", body: bytes($0 + 1)) }
        pipe.run()
        #expect(ids.allSatisfy { pipe.client.responses[$0]?.status == 201 })
        #expect(handler.callCount == 20)
    }

    @Test func advertisesHeaderListSizeAndWindows() throws {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 4096
        var pipe = H2Pipe(handler: EchoHandler(), limits: limits)
        pipe.run()
        let s = pipe.client.session
        #expect(nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE) == 4096)
        #expect(
            nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE)
                == UInt32(HTTP2ServerSession.streamWindowBytes))
        #expect(nghttp2_session_get_remote_window_size(s) == HTTP2ServerSession.connectionWindowBytes)
        // Not announced: nghttp2 would then forget closed streams (see HTTP2HostileClientTests).
        #expect(nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES) == 0)
    }

    @Test func headerListOverTheLimitGets431() throws {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 1024
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        let big = pipe.client.request("GET", "/big", headers: [("x-big", String(repeating: "a", count: 2000))])
        // Just under the limit: 4 pseudo-headers plus one field, 32 bytes of overhead each.
        let fits = pipe.client.request("GET", "/fits", headers: [("x-ok", String(repeating: "b", count: 800))])
        pipe.run()
        #expect(pipe.client.responses[big]?.status == 431)
        #expect(pipe.client.responses[fits]?.status == 200)
        #expect(handler.callCount == 1)
        #expect(handler.refusedStatuses == [431])
        #expect(pipe.lastDisposition == .keepOpen)
    }

    /// A :path longer than the request-line limit gets the 414 an HTTP/1.1 request line would;
    /// the handler never sees it and the connection goes on.
    @Test func longPathGets414LikeHTTP1() throws {
        var limits = HTTPLimits()
        limits.maxRequestLineBytes = 100
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        let long = pipe.client.request("GET", "/" + String(repeating: "p", count: 100))
        let fits = pipe.client.request("GET", "/" + String(repeating: "p", count: 99))
        pipe.run()
        let refused = try #require(pipe.client.responses[long])
        #expect(refused.status == 414)
        #expect(String(decoding: refused.body, as: UTF8.self).contains("longer than 100 bytes"))
        #expect(pipe.client.responses[fits]?.status == 200)
        #expect(handler.callCount == 1)
        #expect(handler.refusedStatuses == [414])
        #expect(pipe.lastDisposition == .keepOpen)
    }

    /// Every answer carries `date` (RFC 9110 section 6.6.1), exactly once, as over HTTP/1.1;
    /// a handler's own `date` does not make a second one.
    @Test func everyResponseCarriesOneDate() throws {
        final class Dated: HTTPHandler {
            func handle(_ request: HTTPRequest) -> HTTPResponse {
                HTTPResponse(status: 200, headers: ["date": "Thu, 01 Jan 1970 00:00:00 GMT"], body: [])
            }
        }
        var pipe = H2Pipe(handler: Dated())
        let id = pipe.client.request("GET", "/x")
        let refused = pipe.client.request("GET", "/" + String(repeating: "p", count: 9000))
        pipe.run()
        for stream in [id, refused] {
            let r = try #require(pipe.client.responses[stream])
            let dates = r.headers.filter { $0.0 == "date" }.map(\.1)
            #expect(dates.count == 1, "\(r.headers)")
            let value = try #require(dates.first)
            #expect(
                value.hasSuffix(" GMT") && value.count == 29 && value != "Thu, 01 Jan 1970 00:00:00 GMT", "\(value)")
        }
    }

    @Test func tooManyHeaderFieldsGets431() throws {
        var limits = HTTPLimits()
        limits.maxHeaderCount = 5
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        let five = pipe.client.request("GET", "/five", headers: (0..<5).map { ("x-h\($0)", "v") })
        let six = pipe.client.request("GET", "/six", headers: (0..<6).map { ("x-h\($0)", "v") })
        pipe.run()
        #expect(pipe.client.responses[five]?.status == 200)
        #expect(pipe.client.responses[five]?.header("x-field-count") == "6")  // five plus host
        #expect(pipe.client.responses[six]?.status == 431)
        #expect(handler.callCount == 1)
    }

    @Test func bodyOverTheLimitGets413AndTheConnectionLives() throws {
        var limits = HTTPLimits()
        limits.maxBodyBytes = 1000
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        let exact = pipe.client.request("POST", "/exact", body: bytes(1000))
        let over = pipe.client.request("POST", "/over", body: bytes(200_000))
        let declared = pipe.client.request(
            "POST", "/declared", headers: [("content-length", "5000")], body: bytes(5000))
        pipe.run()
        #expect(pipe.client.responses[exact]?.status == 201)
        let o = try #require(pipe.client.responses[over])
        #expect(o.status == 413)
        #expect(String(decoding: o.body, as: UTF8.self).contains("1000"))
        // Answered before the upload ended, then told to stop without error (RFC 9113 8.1).
        #expect(o.closeCode == NGHTTP2_NO_ERROR.rawValue)
        #expect(pipe.client.responses[declared]?.status == 413)
        #expect(handler.callCount == 1)
        let after = pipe.client.request("GET", "/after")
        pipe.run()
        #expect(pipe.client.responses[after]?.status == 200)
        #expect(pipe.server.isIdle)
    }

    @Test func garbageAfterThePrefaceEndsTheConnectionWithProtocolError() throws {
        var pipe = H2Pipe(handler: EchoHandler())
        // The first frame must be SETTINGS (RFC 9113 section 3.4); a PING instead is a
        // connection error of type PROTOCOL_ERROR.
        let out = pipe.raw(
            clientPreface + RawFrame.header(length: 8, type: 0x6, flags: 0, streamID: 0)
                + [UInt8](repeating: 0, count: 8))
        let goaway = try #require(RawFrame.parse(out).compactMap(\.goaway).last)
        #expect(goaway.errorCode == NGHTTP2_PROTOCOL_ERROR.rawValue)
        #expect(pipe.lastDisposition == .closeAfterWrite)
    }

    @Test func oversizedFrameEndsTheConnectionWithFrameSizeError() throws {
        var pipe = H2Pipe(handler: EchoHandler())
        pipe.run()  // a proper preface and SETTINGS exchange first
        let before = pipe.serverBytes.count
        // A DATA frame longer than SETTINGS_MAX_FRAME_SIZE (16384 by default).
        _ = pipe.raw(RawFrame.header(length: 0x10000, type: 0x0, flags: 0, streamID: 1) + bytes(100))
        let frames = RawFrame.parse(Array(pipe.serverBytes[before...]))
        let goaway = try #require(frames.compactMap(\.goaway).last)
        #expect(goaway.errorCode == NGHTTP2_FRAME_SIZE_ERROR.rawValue)
        #expect(pipe.lastDisposition == .closeAfterWrite)
    }

    @Test func aWrongPrefaceClosesTheConnection() {
        var pipe = H2Pipe(handler: EchoHandler())
        _ = pipe.raw(Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
        #expect(pipe.lastDisposition == .closeAfterWrite)
    }

    @Test func gracefulShutdownFinishesStreamsInFlightThenCloses() throws {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler)
        let done = pipe.client.request("GET", "/done")
        pipe.run()
        #expect(pipe.client.responses[done]?.status == 200)

        // A POST whose body has not arrived yet: the client sends only HEADERS for now.
        let body = bytes(5000)
        let inFlight = pipe.client.request("POST", "/slow", body: body)
        pipe.client.held.insert(inFlight)
        pipe.run()
        #expect(pipe.server.isIdle == false)
        #expect(handler.callCount == 1)

        var out: [UInt8] = []
        #expect(pipe.server.beginShutdown(now: pipe.now, output: &out) == .keepOpen)
        let goaway = try #require(RawFrame.parse(out).compactMap(\.goaway).first)
        #expect(goaway.lastStreamID == UInt32(inFlight))
        #expect(goaway.errorCode == NGHTTP2_NO_ERROR.rawValue)

        // A request the client sent before it saw GOAWAY is beyond the last stream id: it is
        // not processed, and the client learns from GOAWAY that it may retry it elsewhere.
        let late = pipe.client.request("GET", "/late")
        let lateBytes = pipe.client.output()
        #expect(!lateBytes.isEmpty)
        _ = lateBytes.withUnsafeBytes { pipe.server.receive($0, now: pipe.now, output: &out) }
        pipe.client.input(out)
        #expect(pipe.client.goaways.count == 1)
        #expect(pipe.client.responses[late]?.status == nil)
        #expect(pipe.client.responses[late]?.closeCode == NGHTTP2_REFUSED_STREAM.rawValue)
        #expect(handler.callCount == 1)

        // The stream in flight is finished; then the session asks to close.
        pipe.client.release(inFlight)
        pipe.run()
        let r = try #require(pipe.client.responses[inFlight])
        #expect(r.status == 201)
        #expect(r.body == body)
        #expect(pipe.lastDisposition == .closeAfterWrite)
        #expect(pipe.server.isIdle)
        #expect(handler.callCount == 2)
    }

    @Test func idleConnectionsAreClosedWithGoaway() throws {
        var limits = HTTPLimits()
        limits.idleTimeoutSeconds = 5
        var pipe = H2Pipe(handler: EchoHandler(), limits: limits)
        let id = pipe.client.request("GET", "/")
        pipe.run()
        #expect(pipe.client.responses[id]?.status == 200)
        let deadline = try #require(pipe.server.deadline)
        #expect(deadline == pipe.now + 5_000_000_000)
        #expect(pipe.server.isIdle)
        var out: [UInt8] = []
        #expect(pipe.server.deadlineExpired(now: deadline - 1, output: &out) == .keepOpen)
        #expect(out.isEmpty)
        #expect(pipe.server.deadlineExpired(now: deadline, output: &out) == .closeAfterWrite)
        let goaway = try #require(RawFrame.parse(out).compactMap(\.goaway).first)
        #expect(goaway.errorCode == NGHTTP2_NO_ERROR.rawValue)
        #expect(goaway.lastStreamID == UInt32(id))
    }

    @Test func peerCloseEndsTheSession() {
        var pipe = H2Pipe(handler: EchoHandler())
        pipe.run()
        var out: [UInt8] = []
        #expect(pipe.server.peerClosed(now: pipe.now, output: &out) == .closeAfterWrite)
    }
}
