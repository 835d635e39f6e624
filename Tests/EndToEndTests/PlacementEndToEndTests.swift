import Foundation
import TestTools
import Testing

/// Expert placement over real sockets: decisions posted with curl, a placement set, the rank
/// figures checked against a computation from the raw decisions (contiguous and replicated), the
/// load matrix exported and read back as SGLang reads it, a plan made and applied, and every
/// refusal answered with its status while nothing changes.
@Suite struct PlacementEndToEndTests {
    /// Two layers of 8 experts, three decisions each, with counts chosen so that ranks differ.
    static let counts: [String: [[Int]]] = [
        "layer.0": [[9, 1, 0, 2, 3, 3, 1, 5], [7, 0, 1, 2, 2, 4, 0, 8], [8, 2, 0, 1, 3, 2, 1, 7]],
        "layer.1": [[1, 1, 1, 1, 2, 2, 12, 4], [0, 2, 1, 1, 3, 1, 10, 6], [2, 1, 0, 2, 2, 2, 11, 4]],
    ]
    static let layers = ["layer.0", "layer.1"]

    /// Tokens per expert over the whole run, from the raw decisions.
    static func tokens(_ layer: String) -> [Double] {
        var out = [Double](repeating: 0, count: 8)
        for d in counts[layer] ?? [] { for (e, c) in d.enumerated() { out[e] += Double(c) } }
        return out
    }

    /// Rank loads of a placement computed here, independently of the daemon: slot p on rank
    /// p / (slots / ranks), each replica carrying its expert's tokens over its replica count.
    static func rankLoads(_ tokens: [Double], map: [Int], ranks: Int) -> [Double] {
        var replicas = [Double](repeating: 0, count: tokens.count)
        for e in map { replicas[e] += 1 }
        var out = [Double](repeating: 0, count: ranks)
        for (p, e) in map.enumerated() { out[p / (map.count / ranks)] += tokens[e] / replicas[e] }
        return out
    }

    func post(_ daemon: RunningDaemon) throws {
        for layer in Self.layers {
            let body = (Self.counts[layer] ?? []).map { c in
                #"{"layer":"\#(layer)","expert_capacities":\#(c),"total_tokens":\#(c.reduce(0, +))}"#
            }.joined(separator: "\n")
            let r = try curl(
                "\(daemon.base)/v1/decisions", ["-H", "Content-Type: application/x-ndjson", "--data-binary", body])
            #expect(r.status == 200, "\(r.body)")
        }
    }

    func put(_ daemon: RunningDaemon, _ body: String) throws -> CurlResponse {
        try curl("\(daemon.base)/v1/placement", ["-X", "PUT", "--data-binary", body])
    }

    /// A JSON number as a Double, through its text: Foundation on Linux hands integral numbers
    /// back as NSNumbers whose bridging to Double is not reliable.
    func number(_ v: Any?) -> Double {
        guard let v, !(v is NSNull) else { return -1 }
        return Double(String(describing: v)) ?? -1
    }

    func numbers(_ v: Any?) -> [Double]? { (v as? [Any])?.map(number) }

    func expectFigures(_ placement: Any?, _ expected: [Double], nodes: Int, _ what: String) {
        guard let p = placement as? [String: Any], let loads = numbers(p["rank_loads"]) else {
            Issue.record("\(what): no placement figures in \(String(describing: placement))")
            return
        }
        #expect(loads.count == expected.count, "\(what): \(loads) against \(expected)")
        for (a, b) in zip(loads, expected) { #expect(abs(a - b) <= 1e-9, "\(what): \(loads) against \(expected)") }
        let peak = expected.max() ?? 0, mean = expected.reduce(0, +) / Double(expected.count)
        #expect(abs(number(p["balancedness"]) - mean / peak) <= 1e-9, "\(what) balancedness")
        #expect(abs(number(p["overload"]) - peak / mean) <= 1e-9, "\(what) overload")
        #expect(p["worst_rank"] as? Int == expected.firstIndex(of: peak), "\(what) worst_rank")
        let perNode = expected.count / nodes
        let nodeLoads = (0..<nodes).map { n in expected[(n * perNode)..<((n + 1) * perNode)].reduce(0, +) }
        #expect(numbers(p["node_loads"]) == nodeLoads, "\(what) node_loads")
    }

    @Test(.needs("curl")) func contiguousAndReplicatedRankFigures() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        try post(daemon)
        #expect(try curl("\(daemon.base)/v1/placement").status == 404)

        // Contiguous: 8 experts on 4 ranks in 2 nodes, two experts per rank.
        let set = try put(daemon, #"{"ranks":4,"nodes":2}"#)
        #expect(set.status == 200, "\(set.body)")
        for layer in Self.layers {
            let tokens = Self.tokens(layer)
            let expected = Self.rankLoads(tokens, map: Array(0..<8), ranks: 4)
            let summary = try curl("\(daemon.base)/v1/layers/\(layer)").json
            expectFigures(summary["placement"], expected, nodes: 2, "\(layer) contiguous")
        }
        let list = try curl("\(daemon.base)/v1/layers").json["layers"] as? [[String: Any]] ?? []
        #expect(list.count == 2)
        for row in list {
            let layer = row["layer"] as? String ?? ""
            let expected = Self.rankLoads(Self.tokens(layer), map: Array(0..<8), ranks: 4)
            let peak = expected.max() ?? 0
            #expect(row["worst_rank"] as? Int == expected.firstIndex(of: peak), "\(layer)")
            #expect(
                abs(number(row["rank_balancedness"]) - expected.reduce(0, +) / 4 / peak) <= 1e-9, "\(layer)")
        }

        // Replicated: 12 slots on 4 ranks; layer.1's hot expert 6 has three replicas.
        let standard = [0, 1, 2, 3, 4, 5, 6, 7, 0, 7, 0, 5]
        let hot = [6, 0, 1, 2, 6, 3, 4, 5, 6, 7, 0, 1]
        let replicated = try put(
            daemon, #"{"ranks":4,"nodes":2,"physical_to_logical":\#(standard),"layers":{"layer.1":\#(hot)}}"#)
        #expect(replicated.status == 200, "\(replicated.body)")
        expectFigures(
            try curl("\(daemon.base)/v1/layers/layer.0").json["placement"],
            Self.rankLoads(Self.tokens("layer.0"), map: standard, ranks: 4), nodes: 2, "layer.0 replicated")
        expectFigures(
            try curl("\(daemon.base)/v1/layers/layer.1").json["placement"],
            Self.rankLoads(Self.tokens("layer.1"), map: hot, ranks: 4), nodes: 2, "layer.1 replicated")
        // /metrics: one counter per rank and the rank gauges, the same numbers.
        let metrics = try curl("\(daemon.base)/metrics").body
        func sample(_ prefix: String) -> Double? {
            metrics.split(separator: "\n").first { $0.hasPrefix(prefix + " ") }.flatMap {
                Double($0.split(separator: " ")[1])
            }
        }
        let hotLoads = Self.rankLoads(Self.tokens("layer.1"), map: hot, ranks: 4)
        for (r, load) in hotLoads.enumerated() {
            let v = sample("moe_rank_tokens_total{layer=\"layer.1\",rank=\"\(r)\"}")
            #expect(v.map { abs($0 - load) <= 1e-9 } == true, "rank \(r): \(String(describing: v)) against \(load)")
        }
        let hotPeak = hotLoads.max() ?? 0, hotMean = hotLoads.reduce(0, +) / 4
        #expect(
            sample("moe_rank_balancedness_ratio{layer=\"layer.1\"}").map { abs($0 - hotMean / hotPeak) <= 1e-9 } == true
        )
        #expect(
            sample("moe_rank_overload_ratio{layer=\"layer.1\"}").map { abs($0 - hotPeak / hotMean) <= 1e-9 } == true)
        #expect(sample("moe_rank_worst{layer=\"layer.1\"}") == Double(hotLoads.firstIndex(of: hotPeak) ?? -1))
        let got = try curl("\(daemon.base)/v1/placement").json
        #expect(got["physical_to_logical"] as? [Int] == standard)
        #expect((got["layers"] as? [String: [Int]])?["layer.1"] == hot)

        // Every refusal: its status, a message naming the rule, and the placement unchanged.
        let before = try curl("\(daemon.base)/v1/placement").body
        let refusals: [(String, Int, String)] = [
            (#"{"ranks":3}"#, 422, "layer layer.0: the layer has 8 experts, not a multiple of ranks (3)"),
            (#"{"ranks":4,"nodes":3}"#, 422, "ranks (4) must be a multiple of nodes (3)"),
            (#"{"ranks":4,"physical_to_logical":[0,1,2,3,4,5,6,6]}"#, 422, "expert 7 has no slot"),
            (#"{"ranks":4,"physical_to_logical":[0,1,2,3,4,5,6,9]}"#, 422, "out of range"),
            (#"{"ranks":4,"physical_to_logical":[0,1,2,3,4,5,6]}"#, 422, "not a multiple of ranks"),
            (#"{"ranks":4,"layers":{"layer.1":[0,1,2,3]}}"#, 422, "layer layer.1: expert 4 has no slot"),
            (#"{"ranks":4,"colour":1}"#, 422, "unknown field colour"),
            (#"{"nodes":1}"#, 422, "ranks is required"),
            (#"{"ranks":4,"ranks":2}"#, 400, "malformed JSON"),
            ("[1]", 400, "the body must be a JSON object"),
        ]
        for (body, status, message) in refusals {
            let r = try put(daemon, body)
            #expect(r.status == status, "\(body): \(r.body)")
            #expect((r.json["error"] as? String ?? "").contains(message), "\(body): \(r.body)")
        }
        #expect(try curl("\(daemon.base)/v1/placement").body == before)

        let cleared = try curl("\(daemon.base)/v1/placement", ["-X", "DELETE"])
        #expect(cleared.status == 200)
        #expect(try curl("\(daemon.base)/v1/placement").status == 404)
        #expect(try curl("\(daemon.base)/v1/layers/layer.0").json["placement"] == nil)
        #expect(!(try curl("\(daemon.base)/metrics").body.contains("moe_rank_")))
    }

    /// The rank figures of `layer` in `GET /v1/layers/{layer}` and its row of `GET /v1/layers`,
    /// against those computed from the raw decisions for `map` on 4 ranks in 2 nodes.
    func expectServed(_ daemon: RunningDaemon, _ layer: String, map: [Int], _ what: String) throws {
        let expected = Self.rankLoads(Self.tokens(layer), map: map, ranks: 4)
        expectFigures(try curl("\(daemon.base)/v1/layers/\(layer)").json["placement"], expected, nodes: 2, what)
        let rows = try curl("\(daemon.base)/v1/layers").json["layers"] as? [[String: Any]] ?? []
        let row = rows.first { $0["layer"] as? String == layer } ?? [:]
        let peak = expected.max() ?? 0
        #expect(row["worst_rank"] as? Int == expected.firstIndex(of: peak), "\(what): \(row)")
        #expect(abs(number(row["rank_balancedness"]) - expected.reduce(0, +) / 4 / peak) <= 1e-9, "\(what): \(row)")
    }

    @Test(.needs("curl")) func thePlacementSurvivesARestartAndWinsOverTheFile() throws {
        let dir = try temporaryDirectory("placement-state")
        defer { try? FileManager.default.removeItem(at: dir) }
        let state = dir.appendingPathComponent("state.bin").path
        let file = dir.appendingPathComponent("placement.json")
        try Data(#"{"ranks":4,"nodes":2}"#.utf8).write(to: file)
        let standard = [0, 1, 2, 3, 4, 5, 6, 7, 0, 7, 0, 5]
        let hot = [6, 0, 1, 2, 6, 3, 4, 5, 6, 7, 0, 1]

        let first = try RunningDaemon(["--state-file", state])
        defer { first.stop() }
        try post(first)
        let body = #"{"ranks":4,"nodes":2,"physical_to_logical":\#(standard),"layers":{"layer.1":\#(hot)}}"#
        #expect(try put(first, body).status == 200)
        let before = try curl("\(first.base)/v1/placement").body
        first.child.signal(SIGTERM)
        #expect(first.child.waitForExit(timeout: 20) == 0, "\(first.child.log)")

        // Restarted on the same state file, with a placement file too: the saved placement wins.
        let second = try RunningDaemon(["--state-file", state, "--placement-file", file.path])
        defer { second.stop() }
        #expect(
            second.child.waitForLine(timeout: 5) { $0.contains("restored 2 layers and the placement") ? true : nil }
                == true, "\(second.child.log)")
        #expect(try curl("\(second.base)/v1/placement").body == before)
        try expectServed(second, "layer.0", map: standard, "layer.0 after the restart")
        try expectServed(second, "layer.1", map: hot, "layer.1 after the restart")

        // Cleared, the state file holds none: the next start serves the file's placement.
        #expect(try curl("\(second.base)/v1/placement", ["-X", "DELETE"]).status == 200)
        second.child.signal(SIGTERM)
        #expect(second.child.waitForExit(timeout: 20) == 0, "\(second.child.log)")
        let third = try RunningDaemon(["--state-file", state, "--placement-file", file.path])
        defer { third.stop() }
        let served = try curl("\(third.base)/v1/placement").json
        #expect(served["ranks"] as? Int == 4 && served["nodes"] as? Int == 2, "\(served)")
        #expect(served["physical_to_logical"] is NSNull)
        for layer in Self.layers { try expectServed(third, layer, map: Array(0..<8), "\(layer) from the file") }

        // Without the file, the cleared placement stays cleared.
        third.child.signal(SIGTERM)
        #expect(third.child.waitForExit(timeout: 20) == 0, "\(third.child.log)")
        let fourth = try RunningDaemon(["--state-file", state])
        defer { fourth.stop() }
        #expect(try curl("\(fourth.base)/v1/placement").status == 404)
        #expect(try curl("\(fourth.base)/v1/layers/layer.0").json["total_tokens"] as? Int == 72)
    }

    @Test(.needs("curl")) func aPlacementFileIsServedFromStartOrStopsIt() throws {
        let dir = try temporaryDirectory("placement-file")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("placement.json")
        try Data(#"{"ranks":4,"nodes":2,"physical_to_logical":[0,1,2,3,4,5,6,7,0,7,0,5]}"#.utf8).write(to: file)
        let daemon = try RunningDaemon(["--placement-file", file.path])
        defer { daemon.stop() }
        let served = try curl("\(daemon.base)/v1/placement").json
        #expect(served["physical_to_logical"] as? [Int] == [0, 1, 2, 3, 4, 5, 6, 7, 0, 7, 0, 5], "\(served)")
        try post(daemon)
        try expectServed(daemon, "layer.1", map: [0, 1, 2, 3, 4, 5, 6, 7, 0, 7, 0, 5], "layer.1 from the file")

        // An invalid file stops the start with status 2 and a message naming the inconsistency.
        let binary = try daemonBinary()
        let state = dir.appendingPathComponent("state.bin").path
        let saver = try RunningDaemon(["--state-file", state])
        defer { saver.stop() }
        try post(saver)
        saver.child.signal(SIGTERM)
        #expect(saver.child.waitForExit(timeout: 20) == 0, "\(saver.child.log)")
        let cases: [(String?, [String], String)] = [
            (#"{"ranks":4,"nodes":3}"#, [], "ranks (4) must be a multiple of nodes (3)"),
            (
                #"{"ranks":4,"physical_to_logical":[0,1,2,3,4,5,6,6]}"#, ["--state-file", state],
                "layer layer.0: expert 7 has no slot"
            ),
            (
                #"{"ranks":3}"#, ["--state-file", state],
                "layer layer.0: the layer has 8 experts, not a multiple of ranks (3)"
            ),
            (#"{"ranks":4"#, [], "malformed JSON"),
            (nil, [], "cannot be read"),
        ]
        for (content, extra, message) in cases {
            let path = dir.appendingPathComponent("bad.json")
            try? FileManager.default.removeItem(at: path)
            if let content { try Data(content.utf8).write(to: path) }
            let r = try run(binary, ["--listen", "127.0.0.1:0", "--placement-file", path.path] + extra, timeout: 30)
            #expect(r.status == 2, "\(content ?? "no file"): \(r.stderr)")
            #expect(r.stderr.contains("placement.file \(path.path)"), "\(r.stderr)")
            #expect(r.stderr.contains(message), "\(content ?? "no file"): \(r.stderr)")
            #expect(!r.stderr.contains("listening on"), "\(r.stderr)")
            // --check-config checks what the file alone can tell (not yet the layers).
            guard extra.isEmpty else { continue }
            let check = try run(binary, ["--check-config", "--placement-file", path.path], timeout: 30)
            #expect(check.status == 2, "\(content ?? "no file"): \(check.stdout)")
            #expect(check.stderr.contains(message), "\(content ?? "no file"): \(check.stderr)")
        }
        let good = try run(binary, ["--check-config", "--placement-file", file.path], timeout: 30)
        #expect(good.status == 0 && good.stdout.contains("placement.file = \(file.path)"), "\(good.stderr)")
    }

    /// Tokens per expert of the decisions at `indices` of `layer` (each decision is one step).
    static func tokens(_ layer: String, steps indices: [Int]) -> [Double] {
        var out = [Double](repeating: 0, count: 8)
        for i in indices { for (e, c) in (counts[layer] ?? [])[i].enumerated() { out[e] += Double(c) } }
        return out
    }

    /// Each decision is its own step (10, 11, 12), from two workers that both send every step.
    func postSteps(_ daemon: RunningDaemon) throws {
        for layer in Self.layers {
            var lines: [String] = []
            for (i, c) in (Self.counts[layer] ?? []).enumerated() {
                let half = c.map { $0 / 2 }, rest = zip(c, c.map { $0 / 2 }).map { $0 - $1 }
                for (worker, part) in [("w0", half), ("w1", rest)] {
                    lines.append(
                        #"{"layer":"\#(layer)","step":\#(10 + i),"worker":"\#(worker)","expert_capacities":\#(part),"total_tokens":\#(part.reduce(0, +))}"#
                    )
                }
            }
            let r = try curl(
                "\(daemon.base)/v1/decisions",
                ["-H", "Content-Type: application/x-ndjson", "--data-binary", lines.joined(separator: "\n")])
            #expect(r.status == 200, "\(r.body)")
        }
    }

    @Test(.needs("curl")) func stepsWindowsAndTheSummaryCarryTheFigures() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        try postSteps(daemon)
        let hot = [6, 0, 1, 2, 6, 3, 4, 5, 6, 7, 0, 1]
        let placements: [(String, [String: [Int]])] = [
            (#"{"ranks":4,"nodes":2}"#, ["layer.0": Array(0..<8), "layer.1": Array(0..<8)]),
            (#"{"ranks":4,"nodes":2,"layers":{"layer.1":\#(hot)}}"#, ["layer.0": Array(0..<8), "layer.1": hot]),
        ]
        for (body, maps) in placements {
            #expect(try put(daemon, body).status == 200)
            for layer in Self.layers {
                let map = maps[layer] ?? []
                func expected(_ indices: [Int]) -> [Double] {
                    Self.rankLoads(Self.tokens(layer, steps: indices), map: map, ranks: 4)
                }
                let history = try curl("\(daemon.base)/v1/layers/\(layer)/history?last=3").json
                let steps = history["steps"] as? [[String: Any]] ?? []
                #expect(steps.map { $0["step"] as? Int } == [10, 11, 12], "\(history)")
                for (i, step) in steps.enumerated() {
                    expectFigures(step["placement"], expected([i]), nodes: 2, "\(layer) step \(10 + i) of \(body)")
                }
                let window = try curl("\(daemon.base)/v1/layers/\(layer)?steps=2").json
                expectFigures(window["placement"], expected([1, 2]), nodes: 2, "\(layer) ?steps=2 of \(body)")
            }
            let run = try curl("\(daemon.base)/v1/summary").json["layers"] as? [[String: Any]] ?? []
            let windowed = try curl("\(daemon.base)/v1/summary?steps=1").json["layers"] as? [[String: Any]] ?? []
            #expect(run.count == 2 && windowed.count == 2)
            for (i, layer) in Self.layers.enumerated() where i < run.count && i < windowed.count {
                let map = maps[layer] ?? []
                expectFigures(
                    run[i]["placement"], Self.rankLoads(Self.tokens(layer), map: map, ranks: 4), nodes: 2,
                    "\(layer) in /v1/summary of \(body)")
                expectFigures(
                    windowed[i]["placement"], Self.rankLoads(Self.tokens(layer, steps: [2]), map: map, ranks: 4),
                    nodes: 2, "\(layer) in /v1/summary?steps=1 of \(body)")
            }
        }
        // Without a placement, none of them has the field.
        #expect(try curl("\(daemon.base)/v1/placement", ["-X", "DELETE"]).status == 200)
        let steps = try curl("\(daemon.base)/v1/layers/layer.0/history").json["steps"] as? [[String: Any]] ?? []
        #expect(!steps.isEmpty && steps.allSatisfy { $0["placement"] == nil })
        #expect(try curl("\(daemon.base)/v1/layers/layer.0?steps=2").json["placement"] == nil)
        let summary = try curl("\(daemon.base)/v1/summary").json["layers"] as? [[String: Any]] ?? []
        #expect(!summary.isEmpty && summary.allSatisfy { $0["placement"] == nil })
    }

    @Test(.needs("curl")) func exportAndPlanOverAWindowOfSteps() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        try postSteps(daemon)
        let json = try curl("\(daemon.base)/v1/export/load?steps=2").json
        #expect((json["window"] as? [String: Any])?["steps"] as? Int == 2)
        #expect((json["load"] as? [Any])?.map(numbers) == Self.layers.map { Self.tokens($0, steps: [1, 2]) })
        let csv = try curl("\(daemon.base)/v1/export/load?format=csv&steps=1&layers=layer.1").body
        let expected = Self.tokens("layer.1", steps: [2]).enumerated().map { "layer.1,0,\($0),\(Int($1))" }
        #expect(csv.split(separator: "\n").dropFirst().map(String.init) == expected)
        let sglang = try curl("\(daemon.base)/v1/export/load?format=sglang&steps=3").json
        #expect((sglang["logical_count"] as? [Any])?.map(numbers) == Self.layers.map(Self.tokens))
        for bad in ["steps=0", "steps=513", "steps=x"] {
            let r = try curl("\(daemon.base)/v1/export/load?\(bad)")
            #expect(r.status == 400 && r.json["field"] as? String == "steps", "\(bad): \(r.body)")
        }

        #expect(try put(daemon, #"{"ranks":4,"nodes":2}"#).status == 200)
        let plan = try curl(
            "\(daemon.base)/v1/plan", ["--data-binary", #"{"num_replicas":12,"num_gpus":4,"num_nodes":2,"steps":1}"#])
        #expect(plan.status == 200, "\(plan.body)")
        let maps = plan.json["physical_to_logical"] as? [[Int]] ?? []
        let predicted = plan.json["predicted"] as? [[String: Any]] ?? []
        #expect(maps.count == 2 && predicted.count == 2)
        for (i, layer) in Self.layers.enumerated() where i < maps.count && i < predicted.count {
            let window = Self.tokens(layer, steps: [2])
            expectFigures(
                predicted[i]["plan"], Self.rankLoads(window, map: maps[i], ranks: 4), nodes: 2, "\(layer) plan")
            expectFigures(
                predicted[i]["current"], Self.rankLoads(window, map: Array(0..<8), ranks: 4), nodes: 2,
                "\(layer) current")
        }
    }

    /// Posts 58 layers of 256 experts with skewed loads: the benchmark's large plan shape.
    func postLarge(_ daemon: RunningDaemon) throws {
        var rng = SplitMix64(seed: 14)
        let lines = (0..<58).map { l -> String in
            let counts = (0..<256).map { e in Int(rng.below(100)) + (e % 37 == l % 37 ? 5000 : 0) }
            return #"{"layer":"big.\#(l)","expert_capacities":\#(counts),"total_tokens":\#(counts.reduce(0, +))}"#
        }
        let r = try curl(
            "\(daemon.base)/v1/decisions",
            ["-H", "Content-Type: application/x-ndjson", "--data-binary", lines.joined(separator: "\n")])
        #expect(r.status == 200, "\(r.body)")
    }

    static let largePlan = #"{"num_replicas":288,"num_gpus":32,"num_nodes":4,"num_groups":8}"#

    static func planRequest(_ body: String) -> String {
        "POST /v1/plan HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    /// Whether the server has sent anything on `client`'s connection yet, without waiting.
    static func hasAnswer(_ client: RawClient) -> Bool {
        var byte: UInt8 = 0
        return recv(client.fd, &byte, 1, Int32(MSG_PEEK | MSG_DONTWAIT)) > 0
    }

    @Test(.needs("curl")) func aPlanDoesNotStallTheOtherConnectionsOfItsLoop() throws {
        // One event loop: the plan's connection and the probes' share it.
        let daemon = try RunningDaemon(["--http-event-loops", "1"])
        defer { daemon.stop() }
        try postLarge(daemon)
        let address = "127.0.0.1:\(daemon.port)"
        var overlapped = false
        var plans = 0
        for _ in 0..<3 where !overlapped {
            plans += 1
            let planner = try RawClient(address, timeoutSeconds: 60)
            try planner.send(Self.planRequest(Self.largePlan))
            // Probes on another connection, one after the other: with the plan on the loop, the
            // first probe read after the plan request would wait for the whole plan.
            let probe = try RawClient(address)
            var answered = 0
            while answered < 20 && !Self.hasAnswer(planner) {
                try probe.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                let r = try probe.readResponse()
                #expect(r.status == 200)
                answered += 1
            }
            // The probes finished while the plan was still being computed.
            overlapped = answered == 20 && !Self.hasAnswer(planner)
            let plan = try planner.readResponse()
            #expect(plan.status == 200, "\(String(decoding: plan.body, as: UTF8.self))")
            let json = (try? JSONSerialization.jsonObject(with: Data(plan.body))) as? [String: Any] ?? [:]
            #expect((json["physical_to_logical"] as? [[Int]])?.count == 58)
        }
        #expect(overlapped, "the plan was answered before 20 /healthz probes on another connection")
        let counted = try curl("\(daemon.base)/metrics").body.split(separator: "\n").first {
            $0.hasPrefix("moe_metricsd_http_requests_total{") && $0.contains("route=\"/v1/plan\"")
                && $0.contains("code=\"200\"")
        }
        #expect(counted?.hasSuffix(" \(plans)") == true, "\(String(describing: counted))")
    }

    @Test(.needs("curl")) func plansPastTheLimitGet503AndH2AnswersDeferredPlans() throws {
        let daemon = try RunningDaemon(["--placement-max-concurrent-plans", "1"])
        defer { daemon.stop() }
        try postLarge(daemon)
        let address = "127.0.0.1:\(daemon.port)"
        var refused = false
        for _ in 0..<3 where !refused {
            let first = try RawClient(address, timeoutSeconds: 60)
            try first.send(Self.planRequest(Self.largePlan))
            let second = try RawClient(address)
            try second.send(Self.planRequest(Self.largePlan))
            // Either may reach the daemon first; the other is refused if it comes while that one runs.
            let answers = [try first.readResponse(), try second.readResponse()]
            #expect(answers.contains { $0.status == 200 }, "\(answers.map(\.status))")
            for r in answers where r.status != 200 {
                #expect(r.status == 503)
                #expect(r.headers["retry-after"] == "1")
                let json = (try? JSONSerialization.jsonObject(with: Data(r.body))) as? [String: Any] ?? [:]
                #expect((json["error"] as? String ?? "").contains("placement.max_concurrent_plans"), "\(json)")
                refused = true
            }
        }
        #expect(refused, "a second plan was never refused while the first ran")
        // Over h2c the deferred answer arrives on its stream too.
        let h2 = try curl("\(daemon.base)/v1/plan", ["--http2-prior-knowledge", "--data-binary", Self.largePlan])
        #expect(h2.status == 200, "\(h2.body)")
        #expect((h2.json["physical_to_logical"] as? [[Int]])?.count == 58)
    }

    @Test(.needs("curl", "python3")) func exportInEveryFormat() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        try post(daemon)
        let json = try curl("\(daemon.base)/v1/export/load").json
        #expect(json["layers"] as? [String] == Self.layers)
        #expect(json["experts"] as? Int == 8)
        #expect((json["load"] as? [Any])?.map(numbers) == Self.layers.map(Self.tokens))
        #expect((json["window"] as? [String: Any])?.keys.contains("steps") == true)

        let csv = try curl("\(daemon.base)/v1/export/load?format=csv")
        #expect(csv.headers["content-type"]?.hasPrefix("text/csv") == true)
        var lines = csv.body.split(separator: "\n").map(String.init)
        #expect(lines.removeFirst() == "layer,layer_id,expert_id,tokens")
        var expectedLines: [String] = []
        for (id, layer) in Self.layers.enumerated() {
            for (e, t) in Self.tokens(layer).enumerated() { expectedLines.append("\(layer),\(id),\(e),\(Int(t))") }
        }
        #expect(lines == expectedLines)

        // SGLang's file, read back as SGLang reads it; the totals come out of the raw decisions.
        let sglang = try curl("\(daemon.base)/v1/export/load?format=sglang")
        let dir = try temporaryDirectory("sglang")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("expert_load.json")
        try Data(sglang.body.utf8).write(to: file)
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("Fixtures/placement/read_sglang_load.py").path
        let read = try run(try tool("python3"), [script, file.path])
        #expect(read.status == 0, "\(read.stderr)")
        let totals = numbers(try? JSONSerialization.jsonObject(with: Data(read.stdout.utf8)))
        #expect(totals == Self.layers.map { Self.tokens($0).reduce(0, +) })

        // A layer of another expert count: one matrix cannot hold it, unless layers are chosen.
        let other = try curl(
            "\(daemon.base)/v1/decisions",
            [
                "-H", "Content-Type: application/json", "--data-binary",
                #"{"layer":"small","expert_capacities":[1,2,3,4],"total_tokens":10}"#,
            ])
        #expect(other.status == 200)
        let conflict = try curl("\(daemon.base)/v1/export/load")
        #expect(conflict.status == 409)
        let message = conflict.json["error"] as? String ?? ""
        #expect(message.contains("4 experts: small") && message.contains("8 experts: layer.0, layer.1"), "\(message)")
        let chosen = try curl("\(daemon.base)/v1/export/load?layers=layer.1,layer.0").json
        #expect(chosen["layers"] as? [String] == Self.layers)
        #expect(try curl("\(daemon.base)/v1/export/load?layers=nope").status == 404)
        #expect(try curl("\(daemon.base)/v1/export/load?format=xml").status == 400)
    }

    @Test(.needs("curl")) func planPredictAndApply() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        try post(daemon)
        #expect(try put(daemon, #"{"ranks":4,"nodes":2}"#).status == 200)
        let request = #"{"num_replicas":12,"num_gpus":4,"num_nodes":2,"num_groups":4}"#
        let answer = try curl("\(daemon.base)/v1/plan", ["--data-binary", request])
        #expect(answer.status == 200, "\(answer.body)")
        let plan = answer.json
        #expect(plan["layers"] as? [String] == Self.layers)
        let maps = plan["physical_to_logical"] as? [[Int]] ?? []
        let counts = plan["logical_count"] as? [[Int]] ?? []
        let inverse = plan["logical_to_physical"] as? [[[Int]]] ?? []
        let predicted = plan["predicted"] as? [[String: Any]] ?? []
        #expect(maps.count == 2 && counts.count == 2 && inverse.count == 2 && predicted.count == 2)
        for (i, layer) in Self.layers.enumerated() where i < maps.count && i < predicted.count {
            let map = maps[i]
            #expect(map.count == 12)
            #expect(Set(map) == Set(0..<8), "every expert has a slot")
            // Hierarchical rules: 4 groups of 2 experts, 2 groups per node, each group on one node.
            for g in 0..<4 {
                let nodes = Set(map.indices.filter { map[$0] / 2 == g }.map { $0 / 6 })
                #expect(nodes.count == 1, "\(layer): group \(g) on nodes \(nodes)")
            }
            for e in 0..<8 {
                #expect(counts[i][e] == map.filter { $0 == e }.count)
                #expect(inverse[i][e].filter { $0 >= 0 }.allSatisfy { map[$0] == e })
            }
            let tokens = Self.tokens(layer)
            let planned = Self.rankLoads(tokens, map: map, ranks: 4)
            expectFigures(predicted[i]["plan"], planned, nodes: 2, "\(layer) predicted plan")
            expectFigures(
                predicted[i]["current"], Self.rankLoads(tokens, map: Array(0..<8), ranks: 4), nodes: 2,
                "\(layer) predicted current")
            #expect((planned.max() ?? 0) <= (Self.rankLoads(tokens, map: Array(0..<8), ranks: 4).max() ?? 0))
        }

        // Apply: the answer's `placement` is the body of PUT /v1/placement.
        let placement = try #require(plan["placement"])
        let body = String(decoding: try JSONSerialization.data(withJSONObject: placement), as: UTF8.self)
        let applied = try put(daemon, body)
        #expect(applied.status == 200, "\(body): \(applied.body)")
        for (i, layer) in Self.layers.enumerated() where i < maps.count {
            expectFigures(
                try curl("\(daemon.base)/v1/layers/\(layer)").json["placement"],
                Self.rankLoads(Self.tokens(layer), map: maps[i], ranks: 4), nodes: 2, "\(layer) applied")
        }

        let refusals: [(String, Int, String)] = [
            (#"{"num_replicas":10,"num_gpus":4}"#, 422, "num_replicas (10) must be a multiple of num_gpus (4)"),
            (#"{"num_replicas":4,"num_gpus":4}"#, 422, "must be at least the number of experts (8)"),
            (#"{"num_replicas":12,"num_gpus":6,"num_nodes":4}"#, 422, "must be a multiple of num_nodes"),
            (#"{"num_replicas":12,"num_gpus":4,"num_nodes":2,"num_groups":6}"#, 422, "multiple of num_groups (6)"),
            (#"{"num_gpus":4}"#, 422, "num_replicas is required"),
            (#"{"num_replicas":12,"num_gpus":4,"layers":["nope"]}"#, 404, "no such layer: nope"),
            (#"{"num_replicas":12,"num_gpus":4,"steps":0}"#, 422, "steps must be from 1 to 512"),
            (#"{"num_replicas":12,"num_gpus":4,"steps":"5"}"#, 422, "steps must be an integer"),
            ("{", 400, "malformed JSON"),
        ]
        for (body, status, message) in refusals {
            let r = try curl("\(daemon.base)/v1/plan", ["--data-binary", body])
            #expect(r.status == status, "\(body): \(r.body)")
            #expect((r.json["error"] as? String ?? "").contains(message), "\(body): \(r.body)")
        }
        // Global policy (3 groups over 2 nodes) is accepted: one node, one group.
        let global = try curl(
            "\(daemon.base)/v1/plan",
            ["--data-binary", #"{"num_replicas":12,"num_gpus":4,"num_nodes":2,"num_groups":3}"#])
        #expect(global.status == 200, "\(global.body)")
    }
}
