import CNGHTTP2
import HTTP2
import HTTPCore
import SessionCore
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Clients that try to make the server hold memory or spend time it should not, each at small
/// settings; every test here fails against a session without the bound it checks.
@Suite struct HTTP2HostileClientTests {
    static let second: UInt64 = 1_000_000_000

    /// Frames the server wrote since `offset`.
    static func frames(_ pipe: H2Pipe, since offset: Int) -> [RawFrame] {
        RawFrame.parse(Array(pipe.serverBytes[offset...]))
    }

    /// HEADERS for `GET /` on `stream`, from the static table only (RFC 7541 appendix A).
    static func getHeaders(stream: UInt32, flags: UInt8 = 0x5, priority: [UInt8] = []) -> [UInt8] {
        // :method GET, :scheme http, :path /, :authority "x" (literal, not indexed).
        let block: [UInt8] = priority + [0x82, 0x86, 0x84, 0x01, 0x01, UInt8(ascii: "x")]
        return RawFrame.header(length: block.count, type: 0x1, flags: flags, streamID: stream) + block
    }

    /// A connection whose stream 1 is closed: answered (END_STREAM both ways) or reset by the
    /// client before its request ended.
    static func pipeWithClosedStream(byReset: Bool) throws -> H2Pipe {
        var pipe = H2Pipe(handler: EchoHandler())
        if byReset {
            pipe.run()
            _ = pipe.raw(getHeaders(stream: 1, flags: 0x4))
            _ = pipe.raw(RawFrame.header(length: 4, type: 0x3, flags: 0, streamID: 1) + [0, 0, 0, 0x8])
        } else {
            let id = pipe.client.request("GET", "/first")
            pipe.run()
            #expect(id == 1)
            #expect(pipe.client.responses[id]?.closeCode == NGHTTP2_NO_ERROR.rawValue)
        }
        #expect(pipe.lastDisposition == .keepOpen)
        #expect(pipe.server.isIdle)
        return pipe
    }

    /// DATA or HEADERS on a closed stream is a STREAM_CLOSED error (RFC 9113 section 5.1,
    /// "closed"): h2spec's http2/5.1 cases 8, 9, 11 and 12.
    @Test(arguments: [false, true], [false, true])
    func framesOnAClosedStreamAreStreamClosedErrors(byReset: Bool, headers: Bool) throws {
        var pipe = try Self.pipeWithClosedStream(byReset: byReset)
        let before = pipe.serverBytes.count
        if headers {
            _ = pipe.raw(Self.getHeaders(stream: 1))
        } else {
            _ = pipe.raw(RawFrame.header(length: 4, type: 0x0, flags: 0x1, streamID: 1) + [1, 2, 3, 4])
        }
        let frames = Self.frames(pipe, since: before)
        let code = frames.compactMap(\.goaway).first?.errorCode ?? frames.first { $0.type == 0x3 }?.errorCode
        #expect(code == NGHTTP2_STREAM_CLOSED.rawValue, "\(frames.map(\.type))")
    }

    /// PRIORITY on stream 0 is a connection error of type PROTOCOL_ERROR (section 6.3): h2spec's
    /// http2/6.3 case 1.
    @Test func priorityOnStreamZeroIsAConnectionError() throws {
        var pipe = H2Pipe(handler: EchoHandler())
        pipe.run()
        let before = pipe.serverBytes.count
        _ = pipe.raw(RawFrame.header(length: 5, type: 0x2, flags: 0, streamID: 0) + [0, 0, 0, 1, 16])
        let goaway = try #require(Self.frames(pipe, since: before).compactMap(\.goaway).first)
        #expect(goaway.errorCode == NGHTTP2_PROTOCOL_ERROR.rawValue)
    }

    /// PRIORITY must be 5 octets long; any other length is a FRAME_SIZE_ERROR (section 6.3):
    /// h2spec's http2/6.3 case 2.
    @Test func priorityOfTheWrongLengthIsAFrameSizeError() throws {
        var pipe = H2Pipe(handler: EchoHandler())
        pipe.run()
        let before = pipe.serverBytes.count
        _ = pipe.raw(RawFrame.header(length: 4, type: 0x2, flags: 0, streamID: 3) + [0, 0, 0, 1])
        let frames = Self.frames(pipe, since: before)
        let code =
            frames.first { $0.type == 0x3 && $0.streamID == 3 }?.errorCode
            ?? frames.compactMap(\.goaway).first?.errorCode
        #expect(code == NGHTTP2_FRAME_SIZE_ERROR.rawValue, "\(frames.map(\.type))")
    }

    /// A stream cannot depend on itself: a stream error of type PROTOCOL_ERROR (section 5.3.1),
    /// whether the dependency comes in PRIORITY or in HEADERS: h2spec's http2/5.3.1 cases 1 and 2.
    @Test(arguments: [false, true])
    func aStreamThatDependsOnItselfIsReset(inHeaders: Bool) throws {
        var pipe = H2Pipe(handler: EchoHandler())
        pipe.run()
        let before = pipe.serverBytes.count
        let selfDependency: [UInt8] = [0, 0, 0, 3, 16]
        if inHeaders {
            _ = pipe.raw(Self.getHeaders(stream: 3, flags: 0x25, priority: selfDependency))
        } else {
            _ = pipe.raw(RawFrame.header(length: 5, type: 0x2, flags: 0, streamID: 3) + selfDependency)
        }
        let frames = Self.frames(pipe, since: before)
        let code =
            frames.first { $0.type == 0x3 && $0.streamID == 3 }?.errorCode
            ?? frames.compactMap(\.goaway).first?.errorCode
        #expect(code == NGHTTP2_PROTOCOL_ERROR.rawValue, "\(frames.map(\.type))")
    }

    // MARK: HPACK amplification

    /// One 4000-byte field stored in the dynamic table, then named again thousands of times by a
    /// one-byte index (RFC 7541 section 6.1): 16 KB on the wire, 50 MB decoded. The stream is
    /// reset once its list passes twice the limit; the connection, whose HPACK state was kept,
    /// carries on (a later block that names the same entry once is answered).
    @Test func aHeaderBlockThatExpandsPastTheLimitIsCutShort() throws {
        var limits = HTTPLimits()
        limits.maxHeaderBytes = 16 * 1024
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        pipe.run()
        let value = [UInt8](repeating: UInt8(ascii: "v"), count: 4000)
        // Literal with incremental indexing, new name "x-a", value length 4000 (7-bit prefix).
        var block: [UInt8] = [0x82, 0x86, 0x84, 0x01, 0x01, UInt8(ascii: "x"), 0x40, 0x03]
        block += Array("x-a".utf8)
        block += [0x7f, UInt8((4000 - 127) & 0x7f) | 0x80, UInt8((4000 - 127) >> 7)]
        block += value
        block += [UInt8](repeating: 0xbe, count: 12_000)  // index 62: the entry just added
        let before = pipe.serverBytes.count
        _ = pipe.raw(RawFrame.header(length: block.count, type: 0x1, flags: 0x5, streamID: 1) + block)
        let frames = Self.frames(pipe, since: before)
        let reset = try #require(frames.first { $0.type == 0x3 && $0.streamID == 1 })
        #expect(reset.errorCode == NGHTTP2_INTERNAL_ERROR.rawValue)
        #expect(!frames.contains { $0.type == 0x1 && $0.streamID == 1 }, "no response after the reset")
        #expect(handler.callCount == 0)
        #expect(pipe.lastDisposition == .keepOpen)

        // The table still holds the entry: a block naming it once is a valid 4 KB request.
        let again: [UInt8] = [0x82, 0x86, 0x84, 0x01, 0x01, UInt8(ascii: "x"), 0xbe]
        let next = pipe.serverBytes.count
        _ = pipe.raw(RawFrame.header(length: again.count, type: 0x1, flags: 0x5, streamID: 3) + again)
        #expect(Self.frames(pipe, since: next).contains { $0.type == 0x1 && $0.streamID == 3 })
        let request = try #require(handler.requests.withLock { $0.last })
        #expect(request.headers["x-a"] == String(decoding: value, as: UTF8.self))
    }

    // MARK: Idle connections

    /// PING opens no stream: a client that pings more often than the idle timeout is still
    /// closed when it runs out (RFC 9113 section 6.7 makes PING a measurement, not activity).
    @Test func pingsDoNotKeepAnIdleConnectionOpen() throws {
        var limits = HTTPLimits()
        limits.idleTimeoutSeconds = 5
        var pipe = H2Pipe(handler: EchoHandler(), limits: limits)
        let t0 = pipe.now
        pipe.run()
        for step in 1...4 {
            pipe.now = t0 + UInt64(step) * Self.second
            pipe.client.ping()
            pipe.run()
            #expect(pipe.lastDisposition == .keepOpen)
            #expect(pipe.server.deadline == t0 + 5 * Self.second)
        }
        var out: [UInt8] = []
        #expect(pipe.server.deadlineExpired(now: t0 + 5 * Self.second, output: &out) == .closeAfterWrite)
        #expect(RawFrame.parse(out).compactMap(\.goaway).first?.errorCode == NGHTTP2_NO_ERROR.rawValue)
    }

    // MARK: Memory across streams

    /// A client that keeps its windows shut and opens many streams: each response waits in the
    /// server, so past the connection's bound the next streams get 503 instead.
    @Test func responsesHeldByShutWindowsAreBoundedPerConnection() throws {
        var limits = HTTPLimits()
        limits.maxConnectionBufferBytes = 10_000
        let handler = ClosureHandler { _ in HTTPResponse(status: 200, body: bytes(4000)) }
        var pipe = H2Pipe(client: H2TestClient(windowBytes: 0), handler: handler, limits: limits)
        pipe.run()
        let ids = (0..<4).map { _ in pipe.client.request("GET", "/metrics") }
        pipe.run()
        #expect(ids.map { pipe.client.responses[$0]?.status } == [200, 200, 503, 503])
        #expect(pipe.client.responses[ids[2]]?.header("retry-after") == "1")
        // Once the first two have left, the bound has room again.
        for id in ids.prefix(2) { pipe.client.grant(id, 4000) }
        pipe.run()
        #expect(pipe.client.responses[ids[0]]?.body == bytes(4000))
        let later = pipe.client.request("GET", "/metrics")
        pipe.client.grant(later, 4000)
        pipe.run()
        #expect(pipe.client.responses[later]?.status == 200)
    }

    /// Streams that upload without ending: together they may hold no more than the bound.
    @Test func bodiesInProgressAreBoundedPerConnection() throws {
        var limits = HTTPLimits()
        limits.maxConnectionBufferBytes = 12_000
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        pipe.run()
        let ids = (0..<4).map { _ in pipe.client.request("POST", "/v1/decisions", body: bytes(6000)) }
        for id in ids { pipe.client.uploadCaps[id] = 5000 }
        pipe.run()
        #expect(ids.map { pipe.client.responses[$0]?.status } == [nil, nil, 503, 503])
        #expect(handler.refusedStatuses == [503, 503])
        for id in ids.prefix(2) { pipe.client.release(id) }
        pipe.run()
        #expect(ids.prefix(2).map { pipe.client.responses[$0]?.status } == [201, 201])
        #expect(pipe.client.responses[ids[0]]?.body == bytes(6000))
    }

    /// Every connection of a server draws on one budget: what one holds, another cannot.
    @Test func connectionsShareOneBudget() throws {
        let budget = BufferBudget(limit: 8000)
        let handler = EchoHandler()
        var a = H2Pipe(handler: handler, budget: budget)
        var b = H2Pipe(handler: handler, budget: budget)
        let first = a.client.request("POST", "/x", body: bytes(6000))
        a.client.uploadCaps[first] = 5000
        a.run()
        #expect(budget.heldBytes == 5000)
        let second = b.client.request("POST", "/x", body: bytes(6000))
        b.run()
        #expect(b.client.responses[second]?.status == 503)
        #expect(budget.heldBytes == 5000)
        a.client.release(first)
        a.run()
        #expect(a.client.responses[first]?.status == 201)
        #expect(budget.heldBytes == 0)
        let retry = b.client.request("POST", "/x", body: bytes(6000))
        b.run()
        #expect(b.client.responses[retry]?.status == 201)
        #expect(budget.heldBytes == 0)
    }

    /// Address space the process has mapped, in bytes (Linux `/proc/self/statm`, first field).
    static func mappedBytes() -> Int {
        let fd = open("/proc/self/statm", O_RDONLY)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return 0 }
        let pages = Int(String(decoding: buffer[..<n].prefix { $0 != UInt8(ascii: " ") }, as: UTF8.self)) ?? 0
        return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// A `content-length` is a promise, not bytes: 64 streams announcing 16 MiB each and sending
    /// nothing must not make the server map 1 GiB.
    @Test func anAnnouncedLengthReservesNothing() throws {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler)
        pipe.run()
        let body = bytes(16 << 20)  // one array shared by every upload
        let before = Self.mappedBytes()
        let ids = (0..<64).map { _ in
            pipe.client.request("POST", "/x", headers: [("content-length", String(body.count))], body: body)
        }
        for id in ids { pipe.client.held.insert(id) }
        pipe.run()
        let grown = Self.mappedBytes() - before
        #expect(before > 0)
        #expect(grown < 256 << 20, "mapped \(grown >> 20) MiB more")
        #expect(pipe.server.isIdle == false)
    }

    /// A client that opens its window one byte at a time keeps the between-frames timer happy
    /// for ever; the response's total deadline still cuts it.
    @Test func aResponseTrickledOutIsCutAtItsTotalDeadline() throws {
        var limits = HTTPLimits()
        limits.bodyTimeoutSeconds = 5
        limits.responseTimeoutSeconds = 20
        let handler = ClosureHandler { _ in HTTPResponse(status: 200, body: bytes(4000)) }
        let client = H2TestClient(windowBytes: 0, autoWindowUpdate: false)
        var pipe = H2Pipe(client: client, handler: handler, limits: limits)
        let t0 = pipe.now
        let id = pipe.client.request("GET", "/metrics")
        pipe.run()
        #expect(pipe.client.responses[id]?.status == 200)
        for step in 1...10 {
            pipe.now = t0 + UInt64(step) * 3 * Self.second
            if let deadline = pipe.server.deadline, deadline <= pipe.now {
                var out: [UInt8] = []
                _ = pipe.server.deadlineExpired(now: pipe.now, output: &out)
                pipe.serverBytes += out
                pipe.client.input(out)
            }
            if pipe.client.responses[id]?.closeCode != nil { break }
            pipe.client.grant(id, 1)
            pipe.run()
        }
        let r = try #require(pipe.client.responses[id])
        #expect(r.closeCode == NGHTTP2_CANCEL.rawValue)
        #expect(r.body.count < 4000)
        #expect(r.body.count >= 5)
    }
}
