import CNGHTTP2
import Foundation
import HTTPCore
import HTTPServer
import Synchronization
import TestTools
import Testing

/// Counts requests and POST body bytes; answers 201 to POST, 200 otherwise.
final class CountingHandler: HTTPHandler {
    let state = Mutex((requests: 0, posts: 0, bodyBytes: 0, http2: 0))

    func handle(_ request: HTTPRequest) -> HTTPResponse {
        state.withLock {
            $0.requests += 1
            if request.method == "POST" { $0.posts += 1 }
            $0.bodyBytes += request.body.count
            if request.version == .http2 { $0.http2 += 1 }
        }
        if request.path == "/echo" {
            return HTTPResponse(status: 201, headers: ["content-type": "text/plain"], body: request.body)
        }
        return HTTPResponse(
            status: request.method == "POST" ? 201 : 200, headers: ["content-type": "application/json"],
            body: Array(#"{"ok":true}"#.utf8))
    }

    var counts: (requests: Int, posts: Int, bodyBytes: Int, http2: Int) { state.withLock { $0 } }
}

/// A real server on 127.0.0.1 with an OS-chosen port; each test stops it with `defer`.
final class LiveServer {
    let server: HTTPServer
    let address: String

    init(handler: any HTTPHandler, limits: HTTPLimits = HTTPLimits()) throws {
        var configuration = HTTPServerConfiguration()
        configuration.limits = limits
        configuration.listen = ["127.0.0.1:0"]
        configuration.eventLoops = 2
        configuration.shutdownDeadlineSeconds = 2
        server = HTTPServer(configuration: configuration, handler: handler)
        address = try #require(try server.start().first)
    }

    func url(_ path: String) -> String { "http://\(address)\(path)" }

    func stop() { server.shutdown() }
}

/// Runs a command-line client; a missing tool fails the test (its `.needs` trait decides whether it runs).
func runTool(_ name: String, _ arguments: [String], timeoutSeconds: Double = 120) throws -> (
    status: Int32, output: String
) {
    let path = try #require(ExternalTool.path(name), "\(ExternalTool.missing(name))")
    let process = Process()
    process.executableURL = URL(fileURLWithPath: path)
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let watchdog = DispatchWorkItem { [process] in if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + timeoutSeconds, execute: watchdog)
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    watchdog.cancel()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// The first integer after `label` in `text` (h2load's "status codes: 100000 2xx" and friends).
func number(after label: String, in text: String) -> Int? {
    guard let range = text.range(of: label) else { return nil }
    return Int(text[range.upperBound...].drop { $0 == " " }.prefix { $0.isNumber })
}

@Suite(.serialized) struct HTTP2LiveTests {
    @Test(.needs("curl")) func curlGetAndPostWithPriorKnowledge() throws {
        let handler = CountingHandler()
        let live = try LiveServer(handler: handler)
        defer { live.stop() }
        let get = try runTool(
            "curl", ["-sS", "--http2-prior-knowledge", "-w", "\n%{http_version} %{http_code}", live.url("/v1/summary")])
        #expect(get.status == 0)
        #expect(get.output.hasSuffix("\n2 200"), "\(get.output)")
        #expect(get.output.hasPrefix(#"{"ok":true}"#))

        let body = String(repeating: "0123456789abcdef", count: 8192)  // 128 KiB: flow control
        let bodyFile = FileManager.default.temporaryDirectory.appendingPathComponent("h2-curl-\(getpid()).txt")
        try Data(body.utf8).write(to: bodyFile)
        defer { try? FileManager.default.removeItem(at: bodyFile) }
        let post = try runTool(
            "curl",
            [
                "-sS", "--http2-prior-knowledge", "-H", "content-type: text/plain", "--data-binary",
                "@" + bodyFile.path,
                "-w", "\n%{http_version} %{http_code}", live.url("/echo"),
            ])
        #expect(post.status == 0)
        #expect(post.output.hasSuffix("\n2 201"))
        #expect(post.output.hasPrefix(body))
        let counts = handler.counts
        #expect(counts.requests == 2)
        #expect(counts.http2 == 2)
        #expect(counts.bodyBytes == body.utf8.count)
    }

    @Test(.needs("nghttp")) func nghttpManyConcurrentStreams() throws {
        let handler = CountingHandler()
        let live = try LiveServer(handler: handler)
        defer { live.stop() }
        let run = try runTool("nghttp", ["-n", "-s", "-m", "50", "-t", "30", live.url("/v1/summary")])
        #expect(run.status == 0, "\(run.output)")
        let counts = handler.counts
        #expect(counts.requests == 50)
        #expect(counts.http2 == 50)
        // -s prints one line per stream with its status: all fifty answered 200.
        #expect(run.output.components(separatedBy: " 200 ").count - 1 == 50, "\(run.output)")
    }

    @Test func aStalledStreamGets408WhileAnotherCompletesOnTheSameConnection() throws {
        var limits = HTTPLimits()
        limits.bodyTimeoutSeconds = 2
        let handler = CountingHandler()
        let live = try LiveServer(handler: handler, limits: limits)
        defer { live.stop() }
        let connection = try H2SocketClient(address: live.address)
        let client = connection.client
        // HEADERS without END_STREAM, and a body that never comes.
        let stalled = client.request(
            "POST", "/v1/decisions", headers: [("content-type", "application/json")],
            body: Array("{}".utf8))
        client.held.insert(stalled)
        let quick = client.request(
            "POST", "/v1/decisions", headers: [("content-type", "application/json")],
            body: Array(#"{"layer":"l0"}"#.utf8))
        try connection.exchange { client.responses[quick]?.closeCode != nil }
        #expect(client.responses[quick]?.status == 201)
        #expect(client.responses[stalled]?.status == nil)

        try connection.exchange { client.responses[stalled]?.closeCode != nil }
        let r = try #require(client.responses[stalled])
        #expect(r.status == 408)
        #expect(String(decoding: r.body, as: UTF8.self) == "request not completed in time\n")
        #expect(r.closeCode == NGHTTP2_NO_ERROR.rawValue)
        #expect(client.goaways.isEmpty)
        #expect(connection.peerClosed == false)

        // Same connection, next request.
        let after = client.request("GET", "/v1/summary")
        try connection.exchange { client.responses[after]?.closeCode != nil }
        #expect(client.responses[after]?.status == 200)
        #expect(handler.counts.requests == 2)
    }

    @Test(.needs("h2load")) func h2loadHundredThousandPostsAllCounted() throws {
        let handler = CountingHandler()
        let live = try LiveServer(handler: handler)
        defer { live.stop() }
        let bodyFile = FileManager.default.temporaryDirectory.appendingPathComponent("h2-post-\(getpid()).json")
        let body = Array(#"{"layer":"blocks.0.moe","step":1,"tokens_per_expert":[3,1,4,1,5,9,2,6]}"#.utf8)
        try Data(body).write(to: bodyFile)
        defer { try? FileManager.default.removeItem(at: bodyFile) }

        let run = try runTool(
            "h2load",
            [
                "-n", "100000", "-c", "4", "-m", "10", "-d", bodyFile.path,
                "-H", "content-type: application/json", live.url("/v1/decisions"),
            ],
            timeoutSeconds: 300)
        #expect(run.status == 0, "\(run.output)")
        #expect(number(after: "requests: ", in: run.output) == 100000, "\(run.output)")
        #expect(run.output.contains("100000 succeeded, 0 failed, 0 errored"), "\(run.output)")
        #expect(number(after: "status codes: ", in: run.output) == 100000, "\(run.output)")  // the 2xx count
        let counts = handler.counts
        #expect(counts.posts == 100000)
        #expect(counts.requests == 100000)
        #expect(counts.bodyBytes == 100000 * body.count)
    }
}
