import Foundation
import Synchronization
import TestTools
import Testing

/// What a hostile or careless client can try against the built daemon, over real sockets: case
/// folding tricks, cross-origin browser writes, credentials sent twice or checked too late,
/// latencies that overflow, unusable token files, crashed saves, huge and concurrent batches.
@Suite struct HostileClientTests {
    /// Tells a writer thread to stop.
    final class StopFlag: Sendable {
        private let flag = Atomic<Bool>(false)
        var isSet: Bool { flag.load(ordering: .relaxed) }
        func set() { flag.store(true, ordering: .relaxed) }
    }

    static func decision(_ layer: String, latencyMs: Double? = nil) -> String {
        let latency = latencyMs.map { ",\"latency_ms\":\($0)" } ?? ""
        return #"{"layer":""# + layer + #"","expert_capacities":[1,1],"total_tokens":2,"tokens_dropped":0"#
            + latency + "}"
    }

    /// One request on a fresh keep-alive connection; the body's length is sent as Content-Length.
    static func request(
        _ client: RawClient, _ method: String, _ path: String, headers: [String] = [], body: String = ""
    ) throws -> (status: Int, headers: [String: String], body: [UInt8]) {
        var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for h in headers { head += h + "\r\n" }
        if !body.isEmpty || method == "POST" { head += "Content-Length: \(body.utf8.count)\r\n" }
        try client.send(head + "\r\n" + body)
        return try client.readResponse()
    }

    static func layerTotals(_ daemon: RunningDaemon) throws -> [String: Int] {
        let list = try curl("\(daemon.base)/v1/layers").json["layers"] as? [[String: Any]] ?? []
        var totals: [String: Int] = [:]
        for l in list {
            if let name = l["layer"] as? String { totals[name] = l["total_routings"] as? Int ?? -1 }
        }
        return totals
    }

    // MARK: ASCII-only case folding

    /// `chun\u{212A}ed` (Kelvin sign) lower-cases to `chunked` in Unicode but is no transfer
    /// coding in ASCII: 501, and the request hidden in the body never runs.
    @Test(.needs("curl")) func kelvinSignIsNotChunked() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        #expect(
            try curl(
                "\(daemon.base)/v1/decisions",
                ["-H", "Content-Type: application/json", "--data-binary", Self.decision("l0")]
            ).status == 200)
        let client = try RawClient("127.0.0.1:\(daemon.port)")
        let smuggled = "DELETE /v1/layers HTTP/1.1\r\nHost: x\r\n\r\n"
        try client.send(
            "POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + "Transfer-Encoding: chun\u{212A}ed\r\n\r\n0\r\n\r\n" + smuggled)
        let r = try client.readResponse()
        #expect(r.status == 501)
        #expect(try client.readsEOF())
        #expect(try Self.layerTotals(daemon)["l0"] == 1)
    }

    /// `Connection: \u{212A}eep-alive` is not `keep-alive`: an HTTP/1.0 connection closes.
    @Test func kelvinSignIsNotKeepAlive() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let client = try RawClient("127.0.0.1:\(daemon.port)")
        try client.send("GET /healthz HTTP/1.0\r\nConnection: \u{212A}eep-alive\r\n\r\n")
        #expect(try client.readResponse().status == 200)
        #expect(try client.readsEOF())
        let plain = try RawClient("127.0.0.1:\(daemon.port)")
        try plain.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        #expect(try plain.readResponse().status == 200)
        try plain.send("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        #expect(try plain.readResponse().status == 200)
    }

    // MARK: Cross-origin browser writes

    @Test(.needs("curl")) func crossOriginBrowserWritesAreRefused() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let url = "\(daemon.base)/v1/decisions"
        let host = "127.0.0.1:\(daemon.port)"
        func post(_ layer: String, _ headers: [String]) throws -> Int {
            var args = ["-H", "Content-Type: application/json", "--data-binary", Self.decision(layer)]
            for h in headers { args += ["-H", h] }
            return try curl(url, args).status
        }
        // Refused: another site, a sibling site, an opaque origin, an Origin naming another host.
        #expect(try post("a", ["Sec-Fetch-Site: cross-site"]) == 403)
        #expect(try post("b", ["Sec-Fetch-Site: same-site"]) == 403)
        #expect(try post("c", ["Origin: null"]) == 403)
        #expect(try post("d", ["Origin: http://evil.example"]) == 403)
        #expect(try post("e", ["Origin: http://127.0.0.1:1"]) == 403)
        let reset = try curl("\(daemon.base)/v1/layers", ["-X", "DELETE", "-H", "Sec-Fetch-Site: cross-site"])
        #expect(reset.status == 403)
        #expect(reset.json["error"] != nil)
        // Accepted: the dashboard (same origin), a typed address (none), scripts (no such headers).
        #expect(try post("f", ["Sec-Fetch-Site: same-origin", "Origin: http://evil.example"]) == 200)
        #expect(try post("g", ["Sec-Fetch-Site: none"]) == 200)
        #expect(try post("h", ["Origin: http://\(host)"]) == 200)
        #expect(try post("i", []) == 200)
        // Reads are never refused for their origin.
        #expect(try curl("\(daemon.base)/v1/layers", ["-H", "Sec-Fetch-Site: cross-site"]).status == 200)
        #expect(try Self.layerTotals(daemon).keys.sorted() == ["f", "g", "h", "i"])
        let metrics = try curl("\(daemon.base)/metrics").body
        #expect(metrics.contains(#"moe_metricsd_rejected_decisions_total{reason="cross_origin"} 5"#))
    }

    // MARK: Credentials

    static func withToken(_ body: (RunningDaemon) throws -> Void) throws {
        var environment = ProcessInfo.processInfo.environment
        environment["MOE_METRICSD_AUTH_TOKEN"] = "s3cret"
        let daemon = try RunningDaemon([], environment: environment)
        defer { daemon.stop() }
        try body(daemon)
    }

    @Test func twoAuthorizationHeadersAreRefused() throws {
        try Self.withToken { daemon in
            let client = try RawClient("127.0.0.1:\(daemon.port)")
            let r = try Self.request(
                client, "POST", "/v1/decisions",
                headers: [
                    "Authorization: Bearer s3cret", "Authorization: Bearer other", "Content-Type: application/json",
                ],
                body: Self.decision("l0"))
            #expect(r.status == 400)
            #expect(String(decoding: r.body, as: UTF8.self).contains("Authorization"))
            let ok = try RawClient("127.0.0.1:\(daemon.port)")
            let good = try Self.request(
                ok, "POST", "/v1/decisions", headers: ["Authorization: Bearer s3cret"], body: Self.decision("l0"))
            #expect(good.status == 200)
        }
    }

    /// A client waiting for `100 Continue` with a wrong token gets the 401 instead, before it
    /// sends the body; with the right token it gets the 100, then the answer.
    @Test func expectContinueIsRefusedBeforeTheBodyWithoutTheToken() throws {
        try Self.withToken { daemon in
            let body = Self.decision("l0")
            let head =
                "POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + "Content-Length: \(body.utf8.count)\r\nExpect: 100-continue\r\n"
            let wrong = try RawClient("127.0.0.1:\(daemon.port)")
            try wrong.send(head + "Authorization: Bearer nope\r\n\r\n")
            let refused = try wrong.readResponse()
            #expect(refused.status == 401)
            #expect(refused.headers["www-authenticate"] != nil)
            #expect(try wrong.readsEOF())

            let right = try RawClient("127.0.0.1:\(daemon.port)")
            try right.send(head + "Authorization: Bearer s3cret\r\n\r\n")
            #expect(try right.readResponse().status == 100)
            try right.send(body)
            #expect(try right.readResponse().status == 200)
        }
    }

    @Test func tokenFileWithALineBreakOrANulStopsTheStart() throws {
        let dir = try temporaryDirectory("token")
        defer { try? FileManager.default.removeItem(at: dir) }
        for (name, content) in [("two-lines", "abc\ndef\n"), ("nul", "abc\u{0}def\n")] {
            let file = dir.appendingPathComponent(name).path
            try Data(content.utf8).write(to: URL(fileURLWithPath: file))
            let r = try run(try daemonBinary(), ["--listen", "127.0.0.1:0", "--auth-token-file", file], timeout: 30)
            #expect(r.status == 2, "\(name): \(r.stderr)")
            #expect(r.stderr.contains(file), "\(name): \(r.stderr)")
            #expect(r.stderr.contains(name == "nul" ? "NUL" : "line break"), "\(name): \(r.stderr)")
        }
        // The usual file, one line and its newline, is fine.
        let good = dir.appendingPathComponent("good").path
        try Data("abc\n".utf8).write(to: URL(fileURLWithPath: good))
        let r = try run(try daemonBinary(), ["--check-config", "--auth-token-file", good], timeout: 30)
        #expect(r.status == 0, "\(r.stderr)")
    }

    // MARK: Latency overflow

    @Test(.needs("curl")) func overflowingLatenciesStayOutOfTheSums() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let body = [Self.decision("l0", latencyMs: 1.7e308), Self.decision("l0", latencyMs: 1.7e308)].joined(
            separator: "\n")
        let posted = try curl(
            "\(daemon.base)/v1/decisions", ["-H", "Content-Type: application/x-ndjson", "--data-binary", body + "\n"])
        #expect(posted.status == 200, "\(posted.body)")
        let metrics = try curl("\(daemon.base)/metrics").body
        let sums = metrics.split(separator: "\n").filter { $0.hasPrefix("moe_routing_latency_seconds_sum") }
        #expect(sums.count == 1)
        #expect(sums.allSatisfy { !$0.contains("Inf") && !$0.contains("NaN") }, "\(sums)")
        let summary = try curl("\(daemon.base)/v1/layers/l0").json
        let throughput = summary["throughput"] as? [String: Any] ?? [:]
        let perSecond = (throughput["routings_per_second"] as? NSNumber)?.doubleValue
        #expect(perSecond.map { $0 > 0 } == true, "routings_per_second is \(String(describing: perSecond))")
        #expect((summary["latency"] as? [String: Any])?["count"] as? Int == 1)
    }

    // MARK: Leftovers of a killed save

    @Test(.needs("curl")) func leftoverTemporaryStateFilesAreRemovedAtStart() throws {
        let dir = try temporaryDirectory("leftover")
        defer { try? FileManager.default.removeItem(at: dir) }
        let state = dir.appendingPathComponent("state.bin").path
        // A process that has exited: its pid names a save that can no longer finish.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        let leftover = "\(state).tmp-\(gone.processIdentifier)"
        try Data(repeating: 7, count: 4096).write(to: URL(fileURLWithPath: leftover))
        // Another file of the directory, and a temporary of a live process (ours), stay.
        let unrelated = dir.appendingPathComponent("notes.tmp-1").path
        try Data("x".utf8).write(to: URL(fileURLWithPath: unrelated))
        let live = "\(state).tmp-\(getpid())"
        try Data("y".utf8).write(to: URL(fileURLWithPath: live))
        let daemon = try RunningDaemon(["--state-file", state])
        defer { daemon.stop() }
        #expect(!FileManager.default.fileExists(atPath: leftover))
        #expect(FileManager.default.fileExists(atPath: unrelated))
        #expect(FileManager.default.fileExists(atPath: live))
        #expect(daemon.child.log.contains(leftover))
    }

    // MARK: Memory held by bodies

    /// HTTP/1.1 bodies in progress share `http.max_buffered_bytes` with HTTP/2's: a connection
    /// whose body would pass it gets a 503 with Retry-After and a JSON error, the body already
    /// held completes, and its bytes are given back for the next client.
    @Test(.needs("curl")) func http1BodiesShareTheServersBudget() throws {
        let daemon = try RunningDaemon(["--http-max-buffered-bytes", "1000000"])
        defer { daemon.stop() }
        let decision = Self.decision("budget")
        let length = 900_000
        let body = decision + String(repeating: " ", count: length - decision.utf8.count)
        let head =
            "POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + "Content-Length: \(length)\r\n\r\n"
        let a = try RawClient("127.0.0.1:\(daemon.port)")
        try a.send(head + body.prefix(800_000))
        // Wait until the daemon holds A's bytes (its gauge of bytes held against the budget).
        var held = 0
        for _ in 0..<500 where held < 800_000 {
            let text = try curl("\(daemon.base)/metrics").body
            held =
                text.split(separator: "\n").first { $0.hasPrefix("moe_metricsd_buffered_bytes ") }
                .flatMap { $0.split(separator: " ").last }.flatMap { Int($0) } ?? 0
            if held < 800_000 { usleep(10_000) }
        }
        #expect(held == 800_000)
        let b = try RawClient("127.0.0.1:\(daemon.port)")
        try b.send(head + body.prefix(300_000))
        let refused = try b.readResponse()
        #expect(refused.status == 503)
        #expect(refused.headers["retry-after"] == "1")
        let error = try JSONSerialization.jsonObject(with: Data(refused.body)) as? [String: Any]
        #expect((error?["error"] as? String)?.contains("1000000 bytes") == true)
        #expect(try b.readsEOF())
        try a.send(String(body.dropFirst(800_000)))
        let accepted = try a.readResponse()
        #expect(accepted.status == 200, "\(String(decoding: accepted.body, as: UTF8.self))")
        // A's body was given back: a whole one fits again.
        let c = try RawClient("127.0.0.1:\(daemon.port)")
        try c.send(head + body)
        #expect(try c.readResponse().status == 200)
        #expect(try Self.layerTotals(daemon)["budget"] == 2)
    }

    // MARK: Large and concurrent batches

    /// One batch naming 16,000 layers: applied with a loop of locks, not 16,000 nested closures.
    @Test(.needs("curl")) func aBatchOfSixteenThousandLayers() throws {
        let layers = 16_000
        let daemon = try RunningDaemon(["--stats-max-layers", "20000", "--decoder-max-decisions", "20000"])
        defer { daemon.stop() }
        let dir = try temporaryDirectory("wide")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("batch.ndjson")
        let body = (0..<layers).map { Self.decision("w\($0)") }.joined(separator: "\n") + "\n"
        try Data(body.utf8).write(to: file)
        for round in 1...2 {
            // The first round creates the layers (general path), the second finds them all.
            let r = try curl(
                "\(daemon.base)/v1/decisions",
                ["-H", "Content-Type: application/x-ndjson", "--data-binary", "@\(file.path)"])
            #expect(r.status == 200, "round \(round): \(r.body)")
            #expect(r.json["accepted"] as? Int == layers)
        }
        let totals = try Self.layerTotals(daemon)
        #expect(totals.count == layers)
        #expect(Set(totals.values) == [2])
    }

    /// Posts batches of one decision for each of `layers` layers on one keep-alive connection
    /// until `stop` is set; returns how many were accepted.
    static func postBatches(port: Int, layers: Int, stop: StopFlag, limit: Int = .max) throws -> Int {
        let client = try RawClient("127.0.0.1:\(port)")
        let body = (0..<layers).map { decision("m\($0)") }.joined(separator: "\n") + "\n"
        var posted = 0
        while !stop.isSet && posted < limit {
            let r = try request(
                client, "POST", "/v1/decisions", headers: ["Content-Type: application/x-ndjson"], body: body)
            guard r.status == 200 else { throw HarnessError("batch refused: \(r.status)") }
            posted += 1
        }
        return posted
    }

    /// Readers of `/v1/layers`, `/v1/summary` (run-wide and over a window of steps) and `/metrics`
    /// during ingest never see the layers of one batch at different counts.
    @Test func concurrentReadersSeeBatchesWholeOrNotAtAll() throws {
        let layers = 200
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let stop = StopFlag()
        let port = daemon.port
        let writerResult = Mutex<Result<Int, any Error>?>(nil)
        let writer = Thread {
            let r = Result { try Self.postBatches(port: port, layers: layers, stop: stop) }
            writerResult.withLock { $0 = r }
        }
        writer.start()
        defer {
            stop.set()
            while writerResult.withLock({ $0 == nil }) { usleep(10_000) }
        }
        let reader = try RawClient("127.0.0.1:\(port)")
        var torn = 0
        var reads = 0
        var distinct = Set<Int>()
        var readPaths = Set<String>()
        let deadline = Date().addingTimeInterval(4)
        while Date() < deadline {
            for path in ["/v1/layers", "/v1/summary", "/v1/summary?steps=512", "/metrics"] {
                let r = try Self.request(reader, "GET", path)
                #expect(r.status == 200)
                let counts: [Int]
                if path == "/metrics" {
                    counts = String(decoding: r.body, as: UTF8.self).split(separator: "\n")
                        .filter { $0.hasPrefix("moe_routing_decisions_total{") }
                        .compactMap { $0.split(separator: " ").last.flatMap { Int($0) } }
                } else {
                    let json = try JSONSerialization.jsonObject(with: Data(r.body)) as? [String: Any] ?? [:]
                    counts = (json["layers"] as? [[String: Any]] ?? []).compactMap { $0["total_routings"] as? Int }
                }
                guard !counts.isEmpty else { continue }
                reads += 1
                readPaths.insert(path)
                if Set(counts).count > 1 { torn += 1 }
                distinct.insert(counts[0])
                #expect(counts.count == layers, "\(path): \(counts.count) layers")
            }
        }
        stop.set()
        while writerResult.withLock({ $0 == nil }) { usleep(10_000) }
        let posted = try #require(try writerResult.withLock { $0 }?.get())
        #expect(torn == 0, "\(torn) of \(reads) reads showed one batch's layers at different counts")
        #expect(readPaths.count == 4, "only \(readPaths.sorted()) gave counts")
        // The readers really ran during ingest: they saw the counts move.
        #expect(distinct.count >= 3, "readers saw only \(distinct.sorted()) over \(posted) batches")
    }

    /// `kill -9` during ingest, with a save every second: the restored layers have equal totals.
    @Test(.needs("curl")) func killedDuringIngestRestoresWholeBatches() throws {
        let layers = 200
        let dir = try temporaryDirectory("kill9")
        defer { try? FileManager.default.removeItem(at: dir) }
        let state = dir.appendingPathComponent("state.bin").path
        for attempt in 1...3 {
            let daemon = try RunningDaemon(["--state-file", state, "--snapshot-interval", "1"])
            let stop = StopFlag()
            let port = daemon.port
            let done = DispatchSemaphore(value: 0)
            let writer = Thread {
                _ = try? Self.postBatches(port: port, layers: layers, stop: stop)
                done.signal()
            }
            writer.start()
            // Long enough for several saves during ingest; killed at a moment of its own.
            usleep(UInt32(1_500_000 + attempt * 370_000))
            daemon.child.signal(SIGKILL)
            _ = daemon.child.waitForExit(timeout: 10)
            stop.set()
            done.wait()
            daemon.stop()
            let restored = try RunningDaemon(["--state-file", state])
            defer { restored.stop() }
            let totals = try Self.layerTotals(restored)
            #expect(totals.isEmpty || totals.count == layers, "attempt \(attempt): \(totals.count) layers")
            #expect(Set(totals.values).count <= 1, "attempt \(attempt): totals \(Set(totals.values).sorted())")
        }
    }
}

/// Limits a client can run into on purpose: descriptors, trickled bodies, a loop kept busy.
@Suite struct HostileConnectionTests {
    /// Under an open-file limit of 100 (soft and hard), the default cap of 1024 connections
    /// cannot be kept: the daemon says so and serves fewer, and answers 503 past them rather than
    /// letting accept(2) fail with EMFILE. A soft limit below the hard one is raised first.
    @Test(.needs("prlimit")) func theConnectionCapFitsTheOpenFileLimit() throws {
        let prlimit = try tool("prlimit")
        let daemon = try RunningDaemon(
            ["--http-event-loops", "2"], launcher: [prlimit, "--nofile=100:100"])
        defer { daemon.stop() }
        let warning = daemon.child.waitForLine(timeout: 5) { $0.contains("does not fit") ? $0 : nil }
        #expect(warning?.contains("open-file limit of 100") == true, "\(daemon.child.log)")
        // 100 - (3 + 2 loops x (2 + 1 listener) + 64) = 27 connections.
        let cap = 27
        #expect(warning?.contains("at most \(cap) connections") == true, "\(warning ?? "")")
        var open: [RawClient] = []
        for i in 0..<cap {
            let c = try RawClient("127.0.0.1:\(daemon.port)")
            try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            #expect(try c.readResponse().status == 200, "connection \(i)")
            open.append(c)
        }
        for _ in 0..<5 {
            let extra = try RawClient("127.0.0.1:\(daemon.port)")
            let r = try extra.readResponse()
            #expect(r.status == 503)
            #expect(r.headers["retry-after"] != nil)
        }
        // A connection closed makes room for a new one.
        open.removeLast()
        var served = false
        for _ in 0..<50 where !served {
            usleep(50_000)
            let c = try RawClient("127.0.0.1:\(daemon.port)")
            try c.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            served = (try? c.readResponse().status) == 200
        }
        #expect(served)

        let raised = try RunningDaemon(["--http-event-loops", "2"], launcher: [prlimit, "--nofile=100:200"])
        defer { raised.stop() }
        let second = raised.child.waitForLine(timeout: 5) { $0.contains("does not fit") ? $0 : nil }
        #expect(second?.contains("open-file limit of 200") == true, "\(raised.child.log)")
    }

    /// A body trickled one byte per second, within the body timeout each time, still ends with a
    /// 408 at the body deadline.
    @Test func aTrickledBodyGets408AtTheBodyDeadline() throws {
        let daemon = try RunningDaemon(["--http-body-timeout-seconds", "2", "--http-body-deadline-seconds", "3"])
        defer { daemon.stop() }
        let client = try RawClient("127.0.0.1:\(daemon.port)", timeoutSeconds: 1)
        try client.send(
            "POST /v1/decisions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n")
        let start = Date()
        var status: Int?
        while status == nil && Date().timeIntervalSince(start) < 15 {
            try? client.send("[")
            // The receive timeout of 1 s paces the trickle.
            if let r = try? client.readResponse() { status = r.status }
        }
        #expect(status == 408)
        let elapsed = Date().timeIntervalSince(start)
        #expect(elapsed < 8, "408 after \(elapsed) s")
    }

    /// One client per event loop pipelining `HEAD /v1/summary` as fast as the daemon answers:
    /// `/healthz` on new connections still answers within 50 ms at the 99th percentile. The
    /// bound is one of fairness under attack, not of speed: every connection of a loop gets its
    /// turn, and every loop accepts.
    @Test func healthzAnswersQuicklyWhileClientsPipelineOnEveryLoop() throws {
        let loops = 2
        let daemon = try RunningDaemon(["--http-event-loops", "\(loops)"])
        defer { daemon.stop() }
        let port = daemon.port
        // A small state: each request is cheap, so that what the probes measure is how long
        // they wait behind the pipelined requests (the cost of one request is another matter).
        let seed = try RawClient("127.0.0.1:\(port)")
        let counts = "[" + (0..<16).map { String($0 % 7) }.joined(separator: ",") + "]"
        let total = (0..<16).reduce(0) { $0 + $1 % 7 }
        let body = (0..<2).map {
            #"{"layer":"h\#($0)","expert_capacities":\#(counts),"total_tokens":\#(total),"tokens_dropped":0,"latency_ms":1}"#
        }.joined(separator: "\n")
        let posted = try HostileClientTests.request(
            seed, "POST", "/v1/decisions", headers: ["Content-Type: application/x-ndjson"], body: body + "\n")
        #expect(posted.status == 200)

        let stop = HostileClientTests.StopFlag()
        let finished = DispatchGroup()
        let burst = Array(String(repeating: "HEAD /v1/summary HTTP/1.1\r\nHost: x\r\n\r\n", count: 400).utf8)
        var hostiles: [RawClient] = []
        for _ in 0..<loops {
            let c = try RawClient("127.0.0.1:\(port)")
            hostiles.append(c)
            nonisolated(unsafe) let client = c
            // Writes bursts while the reader below drains the answers.
            DispatchQueue.global().async(group: finished) {
                while !stop.isSet { if (try? client.send(burst)) == nil { break } }
            }
            DispatchQueue.global().async(group: finished) {
                while !stop.isSet { if (try? client.fill()) != true { break } }
            }
        }
        defer {
            stop.set()
            for c in hostiles { shutdown(c.fd, Int32(SHUT_RDWR)) }
            finished.wait()
        }
        usleep(300_000)
        // Up to three rounds of 300 probes, so that a burst of other work on a shared CI machine
        // does not decide the test; without turns the probes wait seconds in every round.
        var rounds: [String] = []
        var met = false
        for _ in 0..<3 where !met {
            var latencies: [Double] = []
            for _ in 0..<300 {
                let start = DispatchTime.now().uptimeNanoseconds
                let probe = try RawClient("127.0.0.1:\(port)", timeoutSeconds: 5)
                try probe.send("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                let r = try probe.readResponse()
                latencies.append(Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
                #expect(r.status == 200)
                usleep(5_000)
            }
            latencies.sort()
            let p99 = latencies[Int(0.99 * Double(latencies.count - 1))]
            let p50 = latencies[latencies.count / 2]
            rounds.append("p50 \(Int(p50 * 1000)) ms, p99 \(Int(p99 * 1000)) ms")
            met = p99 < 0.050
        }
        #expect(met, "/healthz p99 over 50 ms in every round: \(rounds)")
    }
}
