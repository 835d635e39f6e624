import CNGHTTP2
import HTTP2
import HTTPCore
import SessionCore
import TestTools
import Testing

/// A streamed body over HTTP/2: DATA as the client's window allows, generated a piece at a time.
@Suite struct HTTP2StreamingTests {
    final class Handler: HTTPHandler, @unchecked Sendable {
        let total: Int
        var sources: [CountingSource] = []
        init(total: Int) { self.total = total }
        func handle(_ request: HTTPRequest) -> HTTPResponse {
            let source = CountingSource(total: total)
            sources.append(source)
            return HTTPResponse(status: 200, headers: ["content-type": "text/plain"], source: source)
        }
    }

    static func limits(piece: Int = 4096) -> HTTPLimits {
        var limits = HTTPLimits()
        limits.responseChunkBytes = piece
        return limits
    }

    @Test func aStreamedBodyArrivesWholeWithoutALength() throws {
        let handler = Handler(total: 3 << 20)
        var pipe = H2Pipe(handler: handler, limits: Self.limits())
        let id = pipe.client.request("GET", "/metrics")
        pipe.run()
        let r = try #require(pipe.client.responses[id])
        #expect(r.status == 200)
        #expect(r.header("content-length") == nil)
        let source = try #require(handler.sources.first)
        #expect(r.body.count == source.total)
        let same = r.body == source.produced
        #expect(same)
        #expect(r.closeCode == NGHTTP2_NO_ERROR.rawValue)
        // One drain never copies more than the high-water mark and a frame.
        #expect(pipe.largestServerWrite <= HTTP2ServerSession.outputHighWaterBytes + 16_384 + 64)
        #expect(pipe.server.isIdle)
    }

    /// While the client's window is shut nothing is generated; each opening makes at most one
    /// piece, so a response held by flow control holds one piece, whatever its full size.
    @Test func piecesAreGeneratedOnlyAsTheWindowOpens() throws {
        let handler = Handler(total: 1 << 20)
        let client = H2TestClient(windowBytes: 0, autoWindowUpdate: false)
        var pipe = H2Pipe(client: client, handler: handler, limits: Self.limits())
        let id = pipe.client.request("GET", "/metrics")
        pipe.run()
        #expect(pipe.client.responses[id]?.status == 200)
        let source = try #require(handler.sources.first)
        #expect(source.produced.count <= 4096)
        for _ in 0..<3 {
            pipe.client.grant(id, 1000)
            pipe.run()
        }
        #expect(pipe.client.responses[id]?.body.count == 3000)
        #expect(source.produced.count <= 4096)
        pipe.client.grant(id, 5000)
        pipe.run()
        #expect(pipe.client.responses[id]?.body.count == 8000)
        #expect(source.produced.count <= 8192 + 4096)
    }

    @Test func headDoesNotGenerateTheBody() throws {
        let handler = Handler(total: 1 << 20)
        var pipe = H2Pipe(handler: handler, limits: Self.limits())
        let id = pipe.client.request("HEAD", "/metrics")
        pipe.run()
        #expect(pipe.client.responses[id]?.status == 200)
        #expect(pipe.client.responses[id]?.body.isEmpty == true)
        #expect(handler.sources.first?.calls == 0)
    }
}
