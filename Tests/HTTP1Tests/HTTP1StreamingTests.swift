import HTTP1
import HTTPCore
import SessionCore
import TestTools
import Testing

/// Streams `total` bytes for every path but `/small`.
final class StreamingHandler: HTTPHandler, @unchecked Sendable {
    let total: Int
    var sources: [CountingSource] = []
    init(total: Int) { self.total = total }

    func handle(_ request: HTTPRequest) -> HTTPResponse {
        if request.path == "/small" { return HTTPResponse(status: 200, body: Array("small".utf8)) }
        let source = CountingSource(total: total)
        sources.append(source)
        return HTTPResponse(status: 200, headers: ["content-type": "application/octet-stream"], source: source)
    }
}

/// A streamed body over HTTP/1.1: chunked, written a piece at a time as the output drains.
@Suite struct HTTP1StreamingTests {
    static func limits(piece: Int = 4096) -> HTTPLimits {
        var limits = HTTPLimits()
        limits.responseChunkBytes = piece
        return limits
    }

    /// Splits one response off the front of `bytes`: its head and, if chunked, its decoded body;
    /// returns the rest.
    static func takeChunkedResponse(_ bytes: inout [UInt8]) throws -> (head: String, body: [UInt8]) {
        let end = try #require(bytes.firstRange(of: Array("\r\n\r\n".utf8)))
        let head = String(decoding: bytes[..<end.lowerBound], as: UTF8.self)
        var i = end.upperBound
        var body: [UInt8] = []
        while true {
            let lineEnd = try #require(bytes[i...].firstRange(of: [0x0D, 0x0A]))
            let size = try #require(Int(String(decoding: bytes[i..<lineEnd.lowerBound], as: UTF8.self), radix: 16))
            i = lineEnd.upperBound
            if size == 0 {
                #expect(Array(bytes[i..<(i + 2)]) == [0x0D, 0x0A])
                i += 2
                break
            }
            body += bytes[i..<(i + size)]
            i += size
            #expect(Array(bytes[i..<(i + 2)]) == [0x0D, 0x0A])
            i += 2
        }
        bytes.removeSubrange(..<i)
        return (head, body)
    }

    @Test func aStreamedBodyIsChunkedAndWrittenAsTheOutputDrains() throws {
        let handler = StreamingHandler(total: 3 << 20)
        let session = HTTP1ServerSession(handler: handler, limits: Self.limits(), now: 0)
        var output: [UInt8] = []
        let request = Array("GET /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        #expect(request.withUnsafeBytes { session.receive($0, now: 0, output: &output) } == .keepOpen)
        let source = try #require(handler.sources.first)
        var wire: [UInt8] = []
        var rounds = 0
        while true {
            // Never more than the high-water mark and one piece waits in the output.
            #expect(output.count <= HTTP1ServerSession.outputHighWaterBytes + 4096 + 512)
            #expect(source.produced.count <= wire.count + output.count)
            wire += output
            output = []
            guard session.hasBufferedInput else { break }
            rounds += 1
            _ = session.receive(UnsafeRawBufferPointer(start: nil, count: 0), now: 0, output: &output)
        }
        #expect(rounds >= 2)
        let big = try Self.takeChunkedResponse(&wire)
        #expect(big.head.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(big.head.contains("transfer-encoding: chunked"))
        #expect(!big.head.contains("content-length"))
        #expect(big.body.count == source.total)
        #expect(big.body == source.produced)
        // The pipelined request waited for the streamed body, then was answered.
        let small = String(decoding: wire, as: UTF8.self)
        #expect(small.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(small.hasSuffix("\r\n\r\nsmall"))
        #expect(session.isIdle)
    }

    @Test func anHTTP10ClientGetsTheBodyUntilTheConnectionCloses() throws {
        let handler = StreamingHandler(total: 10_000)
        let session = HTTP1ServerSession(handler: handler, limits: Self.limits(), now: 0)
        var output: [UInt8] = []
        let request = Array("GET /big HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".utf8)
        #expect(request.withUnsafeBytes { session.receive($0, now: 0, output: &output) } == .closeAfterWrite)
        let end = try #require(output.firstRange(of: Array("\r\n\r\n".utf8)))
        let head = String(decoding: output[..<end.lowerBound], as: UTF8.self)
        #expect(head.contains("connection: close"))
        #expect(!head.contains("transfer-encoding") && !head.contains("content-length"))
        #expect(Array(output[end.upperBound...]) == handler.sources.first?.produced)
    }

    @Test func headDoesNotGenerateTheBody() throws {
        let handler = StreamingHandler(total: 1 << 20)
        let session = HTTP1ServerSession(handler: handler, limits: Self.limits(), now: 0)
        var output: [UInt8] = []
        let request = Array("HEAD /big HTTP/1.1\r\nHost: x\r\n\r\nGET /small HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        #expect(request.withUnsafeBytes { session.receive($0, now: 0, output: &output) } == .keepOpen)
        #expect(handler.sources.first?.calls == 0)
        let text = String(decoding: output, as: UTF8.self)
        #expect(text.hasPrefix("HTTP/1.1 200 OK\r\n"))
        #expect(text.hasSuffix("\r\n\r\nsmall"))
        #expect(!session.hasBufferedInput)
    }

    /// A client that stops reading holds a streamed response no longer than the response
    /// timeout: then the connection is cut (no status can replace a body that has started).
    @Test func aStreamedResponseHasATotalDeadline() throws {
        var limits = Self.limits()
        limits.responseTimeoutSeconds = 20
        limits.idleTimeoutSeconds = 5
        let handler = StreamingHandler(total: 8 << 20)
        let session = HTTP1ServerSession(handler: handler, limits: limits, now: 100)
        var output: [UInt8] = []
        let request = Array("GET /big HTTP/1.1\r\nHost: x\r\n\r\n".utf8)
        _ = request.withUnsafeBytes { session.receive($0, now: 100, output: &output) }
        #expect(session.hasBufferedInput)
        // Unwrapped first: an optional integer compared inside `#expect` trips AddressSanitizer in
        // the testing library's value capture (a read past the 8-byte payload).
        let deadline = try #require(session.deadline)
        #expect(deadline == 100 + 20 * 1_000_000_000)
        #expect(!session.isIdle)
        #expect(session.deadlineExpired(now: 100 + 20 * 1_000_000_000, output: &output) == .closeAfterWrite)
    }
}
