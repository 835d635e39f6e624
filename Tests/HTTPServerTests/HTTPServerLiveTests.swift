import Dispatch
import Foundation
import HTTPCore
import HTTPServer
import TestTools
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Answers "METHOD PATH BODYLENGTH"; "/slow" first signals `started`, then waits for `release`.
final class Gate: Sendable {
    let started = DispatchSemaphore(value: 0)
    let release = DispatchSemaphore(value: 0)
}

func echoHandler(_ gate: Gate = Gate()) -> ClosureHandler {
    ClosureHandler { request in
        if request.path == "/slow" {
            gate.started.signal()
            gate.release.wait()
        }
        return HTTPResponse(
            status: 200, headers: ["content-type": "text/plain"],
            body: Array("\(request.method) \(request.path) \(request.body.count)".utf8))
    }
}

/// Starts a server on an OS-chosen loopback port; the caller shuts it down.
func startServer(
    limits: HTTPLimits = HTTPLimits(), listen: [String] = ["127.0.0.1:0"], loops: Int = 2,
    deadline: Double = 5, handler: (any HTTPHandler)? = nil
) throws -> (HTTPServer, [String]) {
    var configuration = HTTPServerConfiguration()
    configuration.listen = listen
    configuration.limits = limits
    configuration.eventLoops = loops
    configuration.shutdownDeadlineSeconds = deadline
    let server = HTTPServer(configuration: configuration, handler: handler ?? echoHandler())
    let addresses = try server.start()
    return (server, addresses)
}

func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

@Suite(.serialized) struct HTTPServerLiveTests {
    @Test func portZeroReportsTheBoundPort() throws {
        let (server, addresses) = try startServer()
        defer { server.shutdown() }
        #expect(addresses.count == 1)
        let address = try #require(addresses.first)
        #expect(address.hasPrefix("127.0.0.1:"))
        #expect(!address.hasSuffix(":0"))
        let client = try RawClient(address)
        try client.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        let response = try client.readResponse()
        #expect(response.status == 200)
        #expect(text(response.body) == "GET /hello 0")
        #expect(response.headers["date"]?.hasSuffix(" GMT") == true)
    }

    @Test func keepAliveAndPipeliningOverOneSocket() throws {
        let (server, addresses) = try startServer()
        defer { server.shutdown() }
        let client = try RawClient(addresses[0])
        try client.send(
            "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        #expect(text(try client.readResponse().body) == "GET /1 0")
        #expect(text(try client.readResponse().body) == "POST /2 5")
        try client.send("POST /3 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
        #expect(text(try client.readResponse().body) == "POST /3 3")
        try client.send("GET /4 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        let last = try client.readResponse()
        #expect(text(last.body) == "GET /4 0")
        #expect(last.headers["connection"] == "close")
        #expect(try client.readsEOF())
    }

    @Test func malformedRequestGets400AndClose() throws {
        let (server, addresses) = try startServer()
        defer { server.shutdown() }
        let client = try RawClient(addresses[0])
        try client.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
        let response = try client.readResponse()
        #expect(response.status == 400)
        #expect(response.headers["connection"] == "close")
        #expect(response.headers["content-type"] == "text/plain; charset=utf-8")  // the handler's default refusal
        #expect(!response.body.isEmpty)
        #expect(try client.readsEOF())
    }

    @Test(.needs("curl")) func curlPostsTwoMegabytesThroughExpectContinue() throws {
        let (server, addresses) = try startServer()
        defer { server.shutdown() }
        let curl = try #require(ExternalTool.path("curl"), "\(ExternalTool.missing("curl"))")
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("http1-body-\(getpid()).bin")
        try Data(repeating: 0x61, count: 2 * 1024 * 1024).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: curl)
        process.arguments = [
            "-sS", "-v", "--max-time", "20", "--data-binary", "@\(file.path)", "http://\(addresses[0])/upload",
        ]
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let stdout = out.fileHandleForReading.readDataToEndOfFile()
        let stderr = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let log = String(decoding: stderr, as: UTF8.self)
        #expect(process.terminationStatus == 0, "\(log)")
        #expect(String(decoding: stdout, as: UTF8.self) == "POST /upload 2097152")
        #expect(log.contains("Expect: 100-continue"))
        #expect(log.contains("HTTP/1.1 100 Continue"))
    }

    @Test func slowHeaderClientIsCutOffAtTheHeaderTimeout() throws {
        var limits = HTTPLimits()
        limits.headerTimeoutSeconds = 1
        let (server, addresses) = try startServer(limits: limits)
        defer { server.shutdown() }
        let client = try RawClient(addresses[0])
        let request = Array("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: abcdefghijklmnopqrstuvwxyz\r\n\r\n".utf8)
        var sent = 0
        var answered = false
        for byte in request {
            guard (try? client.send([byte])) != nil else { break }
            sent += 1
            // One byte per second, unless the server speaks first.
            var p = pollfd(fd: client.fd, events: Int16(POLLIN), revents: 0)
            if poll(&p, 1, 1000) > 0 {
                answered = true
                break
            }
        }
        #expect(answered)
        #expect(sent < request.count)
        let response = try client.readResponse()
        #expect(response.status == 408)
        #expect(response.headers["connection"] == "close")
        #expect(try client.readsEOF())
    }

    @Test func connectionCapAnswers503WithRetryAfter() throws {
        var limits = HTTPLimits()
        limits.maxConnections = 2
        let (server, addresses) = try startServer(limits: limits)
        defer { server.shutdown() }
        var clients: [RawClient] = []
        for i in 0..<2 {
            let c = try RawClient(addresses[0])
            try c.send("GET /\(i) HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try c.readResponse().status == 200)
            clients.append(c)
        }
        #expect(server.openConnections == 2)
        do {
            let over = try RawClient(addresses[0])
            let response = try over.readResponse()
            #expect(response.status == 503)
            #expect(response.headers["retry-after"] == "1")
            #expect(response.headers["connection"] == "close")
            #expect(text(response.body).contains("too many connections"))
            #expect(try over.readsEOF())
        }
        // Once a slot frees, connections are served again.
        clients.removeFirst()
        var waited = 0
        while server.openConnections >= 2 && waited < 500 {
            usleep(10_000)
            waited += 1
        }
        let again = try RawClient(addresses[0])
        try again.send("GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try again.readResponse().status == 200)
    }

    @Test func gracefulShutdownFinishesTheRequestInFlight() throws {
        let gate = Gate()
        let (server, addresses) = try startServer(deadline: 10, handler: echoHandler(gate))
        let idle = try RawClient(addresses[0])
        try idle.send("GET /idle HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try idle.readResponse().status == 200)
        let busy = try RawClient(addresses[0])
        try busy.send("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nok")
        #expect(gate.started.wait(timeout: .now() + 10) == .success)

        let finished = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            server.shutdown()
            finished.signal()
        }
        // New connections are refused once shutdown has begun.
        var refused = false
        for _ in 0..<500 {
            if (try? RawClient(addresses[0])) == nil {
                refused = true
                break
            }
            usleep(10_000)
        }
        #expect(refused)
        // shutdown() waits for the request in flight.
        #expect(finished.wait(timeout: .now() + 0.2) == .timedOut)
        gate.release.signal()
        let response = try busy.readResponse()
        #expect(response.status == 200)
        #expect(text(response.body) == "POST /slow 2")
        // The response may have been encoded before the loop saw the shutdown (the handler held
        // it), so it need not say close; the connection is closed right after it either way.
        #expect(try busy.readsEOF())
        #expect(try idle.readsEOF())
        #expect(finished.wait(timeout: .now() + 10) == .success)
        #expect(server.openConnections == 0)
    }

    @Test func shutdownDeadlineClosesAStalledRequest() throws {
        let (server, addresses) = try startServer(deadline: 0.5)
        let stalled = try RawClient(addresses[0])
        try stalled.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part")
        // Make sure the server has the connection before shutting down.
        var waited = 0
        while server.openConnections == 0 && waited < 500 {
            usleep(10_000)
            waited += 1
        }
        let finished = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            server.shutdown()
            finished.signal()
        }
        #expect(finished.wait(timeout: .now() + 10) == .success)
        #expect(try stalled.readsEOF())
    }

    @Test func shutdownReturnsEvenWhenAHandlerBlocksPastTheDeadline() throws {
        let gate = Gate()
        let (server, addresses) = try startServer(deadline: 0.3, handler: echoHandler(gate))
        let busy = try RawClient(addresses[0])
        try busy.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(gate.started.wait(timeout: .now() + 10) == .success)
        let finished = DispatchSemaphore(value: 0)
        DispatchQueue.global().async {
            server.shutdown()
            finished.signal()
        }
        // The handler is still blocked, yet shutdown() gives up on its loop and returns.
        #expect(finished.wait(timeout: .now() + 10) == .success)
        gate.release.signal()
    }

    @Test func listensOnIPv4AndIPv6Loopback() throws {
        let (server, addresses) = try startServer(listen: ["127.0.0.1:0", "[::1]:0"])
        defer { server.shutdown() }
        #expect(addresses.count == 2)
        #expect(addresses[1].hasPrefix("[::1]:"))
        for address in addresses {
            let client = try RawClient(address)
            try client.send("GET /v HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(text(try client.readResponse().body) == "GET /v 0")
        }
    }

    @Test func bindErrorsAreClear() throws {
        let (server, addresses) = try startServer()
        defer { server.shutdown() }
        var configuration = HTTPServerConfiguration()
        configuration.listen = [addresses[0]]
        let second = HTTPServer(configuration: configuration, handler: echoHandler())
        #expect {
            _ = try second.start()
        } throws: { error in
            "\(error)".contains("bind \(addresses[0])") && "\(error)".contains("Address already in use")
        }
        for bad in ["nonsense", "127.0.0.1", "::1:80", "127.0.0.1:99999", "256.1.1.1:80"] {
            configuration.listen = [bad]
            let server = HTTPServer(configuration: configuration, handler: echoHandler())
            #expect(throws: (any Error).self, "\(bad)") { _ = try server.start() }
        }
    }

    @Test func http2PrefaceSelectsHTTP2() throws {
        let (server, addresses) = try startServer()
        defer { server.shutdown() }
        let client = try RawClient(addresses[0])
        // The preface in two pieces, then an empty SETTINGS frame.
        try client.send("PRI * HTTP/2.0\r\n\r")
        try client.send(Array("\nSM\r\n\r\n".utf8) + [0, 0, 0, 4, 0, 0, 0, 0, 0])
        var header = [UInt8]()
        var chunk = [UInt8](repeating: 0, count: 9)
        while header.count < 9 {
            let n = chunk.withUnsafeMutableBytes { recv(client.fd, $0.baseAddress, 9 - header.count, 0) }
            guard n > 0 else { break }
            header += chunk[0..<n]
        }
        // The server's first frame is SETTINGS (type 4) on stream 0 (RFC 9113 section 3.4).
        #expect(header.count == 9)
        #expect(header.count == 9 && header[3] == 4)
    }

    @Test(.needs("nghttp")) func nghttpClientIsServedOverH2CPriorKnowledge() throws {
        let (server, addresses) = try startServer()
        defer { server.shutdown() }
        let nghttp = try #require(ExternalTool.path("nghttp"), "\(ExternalTool.missing("nghttp"))")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: nghttp)
        // Without --upgrade, nghttp speaks HTTP/2 with prior knowledge: the preface comes first.
        process.arguments = ["-v", "-t", "10", "-d", "-", "http://\(addresses[0])/over-h2"]
        let input = Pipe()
        let out = Pipe()
        process.standardInput = input
        process.standardOutput = out
        process.standardError = out
        try process.run()
        input.fileHandleForWriting.write(Data("abc".utf8))
        try input.fileHandleForWriting.close()
        let log = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        #expect(process.terminationStatus == 0, "\(log)")
        #expect(log.contains(":status: 200"), "\(log)")
        #expect(log.contains("POST /over-h2 3"), "\(log)")
    }

    @Test func largePipelinedAnswersReachAReaderThatWaitsInOrder() throws {
        let big = [UInt8](repeating: UInt8(ascii: "z"), count: 256 * 1024)
        let handler = ClosureHandler { request in
            HTTPResponse(status: 200, headers: ["x-path": request.path], body: big)
        }
        let (server, addresses) = try startServer(handler: handler)
        defer { server.shutdown() }
        let client = try RawClient(addresses[0])
        // 5 MB of answers to requests sent before reading any: the server must stop reading
        // while the socket is full, and resume when the client drains it.
        var requests = ""
        for i in 0..<20 { requests += "GET /\(i) HTTP/1.1\r\nHost: x\r\n\r\n" }
        try client.send(requests)
        for i in 0..<20 {
            let response = try client.readResponse()
            #expect(response.status == 200)
            #expect(response.headers["x-path"] == "/\(i)")
            #expect(response.body == big)
        }
    }

    @Test func idleKeepAliveConnectionIsClosedSilently() throws {
        var limits = HTTPLimits()
        limits.idleTimeoutSeconds = 0.5
        let (server, addresses) = try startServer(limits: limits)
        defer { server.shutdown() }
        let client = try RawClient(addresses[0])
        try client.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try client.readResponse().status == 200)
        #expect(try client.readsEOF())
    }

    @Test func updatedLimitsApplyToNewConnections() throws {
        let (server, addresses) = try startServer()
        defer { server.shutdown() }
        var limits = HTTPLimits()
        limits.maxBodyBytes = 4
        server.update(limits: limits)
        let client = try RawClient(addresses[0])
        try client.send("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        #expect(try client.readResponse().status == 413)
    }
}

/// Marks its refusals, so a test can see that the server asks the handler for them.
struct MarkingRefusals: HTTPHandler {
    func handle(_ request: HTTPRequest) -> HTTPResponse { HTTPResponse(status: 204) }
    func refusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        var extra = headers
        extra.add("x-refusal", "request")
        return .plainText(status, "refused: " + message, headers: extra)
    }
    func connectionRefusal(status: Int, message: String, headers: HTTPHeaders) -> HTTPResponse {
        var extra = headers
        extra.add("x-refusal", "connection")
        return .plainText(status, "refused: " + message, headers: extra)
    }
}

/// What the server answers without calling `handle` comes from the handler: a refused request
/// from `refusal`, a connection past the cap from `connectionRefusal`.
@Suite(.serialized) struct HandlerRefusalLiveTests {
    @Test func refusalsAreTheHandlers() throws {
        var limits = HTTPLimits()
        limits.maxConnections = 1
        let (server, addresses) = try startServer(limits: limits, handler: MarkingRefusals())
        defer { server.shutdown() }
        let first = try RawClient(addresses[0])
        try first.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try first.readResponse().status == 204)

        let over = try RawClient(addresses[0])
        let rejected = try over.readResponse()
        #expect(rejected.status == 503)
        #expect(rejected.headers["x-refusal"] == "connection")
        #expect(rejected.headers["retry-after"] == "1")
        #expect(text(rejected.body) == "refused: too many connections\n")

        try first.send("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
        let refused = try first.readResponse()
        #expect(refused.status == 400)
        #expect(refused.headers["x-refusal"] == "request")
        #expect(refused.headers["connection"] == "close")
        #expect(text(refused.body) == "refused: differing Content-Length values\n")
    }
}
