import CNGHTTP2
import HTTP2
import HTTPCore
import SessionCore
import Testing

/// Per-stream timeouts, in memory with an injected clock: the late stream alone gets its answer.
@Suite struct HTTP2StreamDeadlineTests {
    static let second: UInt64 = 1_000_000_000

    static func limits(header: Double = 2, body: Double = 5, idle: Double = 60) -> HTTPLimits {
        var limits = HTTPLimits()
        limits.headerTimeoutSeconds = header
        limits.bodyTimeoutSeconds = body
        limits.idleTimeoutSeconds = idle
        limits.maxHeaderBytes = 64 * 1024
        return limits
    }

    /// Hands the server's output to the client.
    static func expire(_ pipe: inout H2Pipe, at now: UInt64) -> SessionDisposition {
        pipe.now = now
        var out: [UInt8] = []
        let disposition = pipe.server.deadlineExpired(now: now, output: &out)
        pipe.serverBytes += out
        if !out.isEmpty { pipe.client.input(out) }
        return disposition
    }

    @Test func aStalledBodyGets408WhileAnotherStreamCompletes() throws {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: Self.limits())
        let t0 = pipe.now
        let slow = pipe.client.request("POST", "/slow", body: bytes(5000))
        pipe.client.held.insert(slow)
        let quick = pipe.client.request("GET", "/quick")
        pipe.run()
        #expect(pipe.client.responses[quick]?.status == 200)
        #expect(pipe.client.responses[slow]?.status == nil)
        #expect(pipe.server.isIdle == false)
        // The slow stream's body timer started when its header block ended.
        #expect(pipe.server.deadline == t0 + 5 * Self.second)

        #expect(Self.expire(&pipe, at: t0 + 5 * Self.second - 1) == .keepOpen)
        #expect(pipe.client.responses[slow]?.status == nil)

        #expect(Self.expire(&pipe, at: t0 + 5 * Self.second) == .keepOpen)
        let r = try #require(pipe.client.responses[slow])
        #expect(r.status == 408)
        // The handler's refusal (`EchoHandler` records it and answers with the plain-text default).
        #expect(r.header("content-type") == "text/plain; charset=utf-8")
        #expect(String(decoding: r.body, as: UTF8.self) == "request not completed in time\n")
        #expect(handler.refusedStatuses == [408])
        // Answered before the request ended, then told to stop sending without an error.
        #expect(r.closeCode == NGHTTP2_NO_ERROR.rawValue)
        #expect(pipe.client.goaways.isEmpty)
        #expect(handler.callCount == 1)
        #expect(pipe.server.isIdle)
        // With no stream left, the idle timer runs from the moment the last one closed.
        #expect(pipe.server.deadline == t0 + 65 * Self.second)

        // The connection carries on.
        let after = pipe.client.request("GET", "/after")
        pipe.run()
        #expect(pipe.client.responses[after]?.status == 200)
        #expect(pipe.lastDisposition == .keepOpen)
        #expect(handler.callCount == 2)
    }

    @Test func eachDataFrameRestartsTheBodyTimer() throws {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: Self.limits())
        let t0 = pipe.now
        let body = bytes(3000)
        let id = pipe.client.request("POST", "/trickle", body: body)
        pipe.client.held.insert(id)
        pipe.run()
        #expect(pipe.server.deadline == t0 + 5 * Self.second)

        pipe.now = t0 + 4 * Self.second
        pipe.client.release(id, upTo: 1000)
        pipe.run()
        #expect(pipe.server.deadline == t0 + 9 * Self.second)
        #expect(Self.expire(&pipe, at: t0 + 6 * Self.second) == .keepOpen)
        #expect(pipe.client.responses[id]?.status == nil)

        pipe.now = t0 + 8 * Self.second
        pipe.client.release(id)
        pipe.run()
        let r = try #require(pipe.client.responses[id])
        #expect(r.status == 201)
        #expect(r.body == body)
        #expect(handler.callCount == 1)
    }

    @Test func anUnfinishedHeaderBlockGets408WhileAnotherStreamWaits() throws {
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: Self.limits())
        let t0 = pipe.now
        let open = pipe.client.request("POST", "/open", body: bytes(100))
        pipe.client.held.insert(open)
        pipe.run()

        // A header block larger than one frame (16 KiB, after Huffman coding) leaves as HEADERS
        // plus CONTINUATION; the server
        // gets only the HEADERS frame, so the stream stays in its header section.
        pipe.now = t0 + 1 * Self.second
        let late = pipe.client.request("GET", "/late", headers: [("x-big", String(repeating: "h", count: 40_000))])
        let frames = RawFrame.parse(pipe.client.output())
        let headersFrame = try #require(frames.first { $0.type == 0x1 && $0.streamID == UInt32(late) })
        #expect(headersFrame.flags & 0x4 == 0)  // no END_HEADERS
        let continuations = frames.filter { $0.type == 0x9 }
        #expect(!continuations.isEmpty)
        func wire(_ f: RawFrame) -> [UInt8] {
            RawFrame.header(length: f.payload.count, type: f.type, flags: f.flags, streamID: f.streamID) + f.payload
        }
        let reply = pipe.raw(wire(headersFrame))
        if !reply.isEmpty { pipe.client.input(reply) }
        #expect(pipe.server.deadline == t0 + 3 * Self.second)  // header timer: 1 s + 2 s

        #expect(Self.expire(&pipe, at: t0 + 3 * Self.second) == .keepOpen)
        let r = try #require(pipe.client.responses[late])
        #expect(r.status == 408)
        #expect(String(decoding: r.body, as: UTF8.self).contains("not completed in time"))
        // The body stream opened earlier is untouched and keeps its own deadline.
        #expect(pipe.client.responses[open]?.status == nil)
        #expect(pipe.server.deadline == t0 + 5 * Self.second)

        // The rest of the late header block arrives after all: it is decoded and ignored.
        _ = pipe.raw(continuations.flatMap(wire))
        #expect(pipe.lastDisposition == .keepOpen)
        pipe.client.release(open)
        pipe.run()
        #expect(pipe.client.responses[open]?.status == 201)
        #expect(handler.callCount == 1)
        #expect(pipe.server.isIdle)
    }

    @Test func aResponseStalledByFlowControlIsReset() throws {
        let handler = ClosureHandler { _ in HTTPResponse(status: 200, body: bytes(1000)) }
        // A stream window of 0: the client never lets any DATA through.
        var pipe = H2Pipe(client: H2TestClient(windowBytes: 0), handler: handler, limits: Self.limits())
        let t0 = pipe.now
        let id = pipe.client.request("GET", "/stalled")
        pipe.run()
        #expect(pipe.client.responses[id]?.status == 200)  // HEADERS leave; DATA cannot
        #expect(pipe.client.responses[id]?.closeCode == nil)
        #expect(pipe.server.deadline == t0 + 5 * Self.second)

        #expect(Self.expire(&pipe, at: t0 + 5 * Self.second) == .keepOpen)
        let r = try #require(pipe.client.responses[id])
        #expect(r.closeCode == NGHTTP2_CANCEL.rawValue)
        #expect(r.body.isEmpty)
        #expect(pipe.server.isIdle)
        #expect(pipe.client.goaways.isEmpty)
        #expect(pipe.server.deadline == t0 + 65 * Self.second)
    }

    @Test func aStreamRefusedAtItsHeadersNeedsNoTimer() throws {
        // A 431 is answered at the header section; the client never finishes the body it started,
        // and the stream closes through RST_STREAM(NO_ERROR) without waiting for any timer.
        var limits = Self.limits()
        limits.maxHeaderCount = 1
        let handler = EchoHandler()
        var pipe = H2Pipe(handler: handler, limits: limits)
        let id = pipe.client.request("POST", "/x", headers: [("a", "1"), ("b", "2")], body: bytes(10))
        pipe.client.held.insert(id)
        pipe.run()
        #expect(pipe.client.responses[id]?.status == 431)
        #expect(pipe.client.responses[id]?.closeCode == NGHTTP2_NO_ERROR.rawValue)
        #expect(pipe.server.isIdle)
        #expect(handler.callCount == 0)
    }
}
