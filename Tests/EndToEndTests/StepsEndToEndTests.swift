import Foundation
import TestTools
import Testing

/// Steps, windows and history on the built binary over real sockets, driven with curl: many
/// workers over hundreds of steps with a change of routing part way, every step checked against
/// a computation from the raw decisions posted.
@Suite struct StepsEndToEndTests {
    static let experts = 8

    /// One decision as posted, remembered for the expected numbers.
    struct Raw {
        var step: Int
        var worker: Int
        var counts: [Int]
        var tokens: Int
        var dropped: Int

        var json: String {
            #"{"layer":"moe.3","worker":"rank\#(worker)","step":\#(step),"expert_capacities":[\#(counts.map(String.init).joined(separator: ","))],"total_tokens":\#(tokens),"tokens_dropped":\#(dropped),"load_balance_loss":0.5}"#
        }
    }

    /// 4 workers over `steps` steps; from step 150 the router sends most tokens to experts 0 and 1;
    /// rank3 misses every 9th step.
    static func traffic(steps: Int) -> [Raw] {
        var state: UInt64 = 11
        func next(_ n: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(n))
        }
        var out = [Raw]()
        for step in 0..<steps {
            for worker in 0..<4 where !(worker == 3 && step % 9 == 4) {
                let counts = (0..<experts).map { e in step < 150 ? 20 + next(10) : (e < 2 ? 90 + next(10) : next(3)) }
                let tokens = counts.reduce(0, +) / 2 + 5
                out.append(Raw(step: step, worker: worker, counts: counts, tokens: tokens, dropped: next(4)))
            }
        }
        return out
    }

    static func post(_ raws: ArraySlice<Raw>, _ daemon: RunningDaemon) throws -> CurlResponse {
        let body = raws.map(\.json).joined(separator: "\n") + "\n"
        let dir = try temporaryDirectory("steps")
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = dir.appendingPathComponent("body.ndjson")
        try Data(body.utf8).write(to: file)
        return try curl(
            "\(daemon.base)/v1/decisions",
            ["-H", "Content-Type: application/x-ndjson", "--data-binary", "@\(file.path)"])
    }

    static func maxVio(_ c: [Int]) -> Double {
        let mean = Double(c.reduce(0, +)) / Double(c.count)
        return (Double(c.max()!) - mean) / mean
    }

    func near(_ a: Any?, _ b: Double, _ what: String) {
        guard let v = (a as? NSNumber)?.doubleValue else {
            Issue.record("\(what) is \(String(describing: a)), expected \(b)")
            return
        }
        #expect(abs(v - b) <= 1e-9 * max(1, abs(b)), "\(what) = \(v), expected \(b)")
    }

    @Test(.needs("curl")) func historyWindowsAndCompletenessOverHundredsOfSteps() throws {
        let daemon = try RunningDaemon(["--stats-history-steps", "200", "--stats-expected-workers", "4"])
        defer { daemon.stop() }
        let raws = Self.traffic(steps: 250)
        var i = 0
        while i < raws.count {
            let end = min(raws.count, i + 400)
            let r = try Self.post(raws[i..<end], daemon)
            #expect(r.status == 200, "\(r.body)")
            i = end
        }

        let h = try curl("\(daemon.base)/v1/layers/moe.3/history?last=200&experts=1")
        #expect(h.status == 200, "\(h.body)")
        #expect(h.json["bucket"] as? String == "step")
        #expect(h.json["workers_expected"] as? Int == 4)
        let steps = h.json["steps"] as? [[String: Any]] ?? []
        #expect(steps.count == 200)
        #expect(steps.first?["step"] as? Int == 50)
        #expect(steps.last?["step"] as? Int == 249)
        for s in steps {
            let step = s["step"] as? Int ?? -1
            let mine = raws.filter { $0.step == step }
            var counts = [Int](repeating: 0, count: Self.experts)
            for r in mine { for e in 0..<Self.experts { counts[e] += r.counts[e] } }
            #expect(s["decisions"] as? Int == mine.count, "step \(step)")
            #expect(s["workers"] as? Int == mine.count, "step \(step)")
            #expect(s["complete"] as? Bool == (mine.count == 4), "step \(step)")
            #expect(s["tokens"] as? Int == mine.map(\.tokens).reduce(0, +), "step \(step)")
            #expect(s["tokens_dropped"] as? Int == mine.map(\.dropped).reduce(0, +), "step \(step)")
            #expect(s["expert_token_counts"] as? [Int] == counts, "step \(step)")
            near(s["max_violation"], Self.maxVio(counts), "step \(step) max_violation")
            let mean = Double(counts.reduce(0, +)) / Double(Self.experts)
            near(s["balancedness"], mean / Double(counts.max()!), "step \(step) balancedness")
            near(s["max_violation_worst_decision"], mine.map { Self.maxVio($0.counts) }.max()!, "step \(step) worst")
            near(s["average_load_balance_loss"], 0.5, "step \(step) loss")
        }

        // Without experts=1 the arrays are left out, the statistics are the same.
        let plain = try curl("\(daemon.base)/v1/layers/moe.3/history?last=2").json["steps"] as? [[String: Any]] ?? []
        #expect(plain.count == 2)
        #expect(plain.last?["expert_token_counts"] == nil)
        #expect((plain.last?["max_violation"] as? Double) == (steps.last?["max_violation"] as? Double))
        #expect(plain.last?["max_violation"] as? Double != nil)

        // Windows: the newest 10 steps, and every kept step against the run totals of those steps.
        let w = try curl("\(daemon.base)/v1/layers/moe.3?steps=10").json
        let window = w["window"] as? [String: Any] ?? [:]
        #expect(window["steps"] as? Int == 10)
        #expect(window["from"] as? Int == 240)
        #expect(window["to"] as? Int == 249)
        let last10 = raws.filter { $0.step >= 240 }
        #expect(
            window["complete_steps"] as? Int
                == Set(last10.map(\.step)).filter { s in last10.filter { $0.step == s }.count == 4 }.count)
        var counts10 = [Int](repeating: 0, count: Self.experts)
        for r in last10 { for e in 0..<Self.experts { counts10[e] += r.counts[e] } }
        #expect(w["expert_token_counts"] as? [Int] == counts10)
        near((w["balance"] as? [String: Any])?["max_violation"], Self.maxVio(counts10), "window max_violation")
        #expect(w["expert_utilization"] == nil)
        #expect(w["latency"] == nil)
        let run = try curl("\(daemon.base)/v1/layers/moe.3").json
        let whole = try curl("\(daemon.base)/v1/layers/moe.3?steps=200").json
        let kept = raws.filter { $0.step >= 50 }
        #expect(whole["total_tokens"] as? Int == kept.map(\.tokens).reduce(0, +))
        #expect(run["total_tokens"] as? Int == raws.map(\.tokens).reduce(0, +))
        // The run-wide MaxVio still carries the balanced first 150 steps; the window does not.
        let runVio = (run["balance"] as? [String: Any])?["max_violation"] as? Double ?? 99
        #expect(runVio < Self.maxVio(counts10))

        let fleet = try curl("\(daemon.base)/v1/summary?steps=10").json
        #expect((fleet["window"] as? [String: Any])?["steps"] as? Int == 10)
        #expect((fleet["layers"] as? [[String: Any]])?.count == 1)
        #expect((fleet["totals"] as? [String: Any])?["total_tokens"] as? Int == last10.map(\.tokens).reduce(0, +))

        // GET /v1/layers and /metrics: the newest complete step (all four reported step 249).
        let layer = (try curl("\(daemon.base)/v1/layers").json["layers"] as? [[String: Any]])?.first ?? [:]
        #expect(layer["last_complete_step"] as? Int == 249)
        #expect(layer["last_complete_step_workers"] as? Int == 4)
        let last = raws.filter { $0.step == 249 }
        var counts249 = [Int](repeating: 0, count: Self.experts)
        for r in last { for e in 0..<Self.experts { counts249[e] += r.counts[e] } }
        near(layer["last_complete_step_max_violation"], Self.maxVio(counts249), "last complete MaxVio")
        let metrics = try curl("\(daemon.base)/metrics").body
        #expect(metrics.contains("\nmoe_routing_last_complete_step{layer=\"moe.3\"} 249\n"))
        #expect(metrics.contains("\nmoe_routing_last_complete_step_workers{layer=\"moe.3\"} 4\n"))
        #expect(metrics.contains("\nmoe_routing_late_decisions_total{layer=\"moe.3\"} 0\n"))

        // A late decision counts in the run only; a refused batch changes no bucket.
        let before = try curl("\(daemon.base)/v1/layers/moe.3/history?last=200&experts=1").body
        let refused = try curl(
            "\(daemon.base)/v1/decisions",
            [
                "-H", "Content-Type: application/json", "--data-binary",
                "[\(Raw(step: 249, worker: 0, counts: [1, 1, 1, 1, 1, 1, 1, 1], tokens: 8, dropped: 0).json),"
                    + #"{"layer":"moe.3","step":249,"expert_capacities":[2,0,0,0,0,0,0,0],"expert_demand":[1,0,0,0,0,0,0,0],"total_tokens":2}]"#,
            ])
        #expect(refused.status == 422)
        #expect(refused.json["field"] as? String == "expert_demand[0]")
        #expect(refused.json["index"] as? Int == 1)
        #expect(try curl("\(daemon.base)/v1/layers/moe.3/history?last=200&experts=1").body == before)
        let late = try Self.post(
            [Raw(step: 3, worker: 0, counts: [1, 1, 1, 1, 1, 1, 1, 1], tokens: 8, dropped: 0)], daemon)
        #expect(late.status == 200)
        let after = try curl("\(daemon.base)/v1/layers/moe.3/history?last=200&experts=1")
        #expect(after.json["late_decisions"] as? Int == 1)
        #expect((after.json["steps"] as? [[String: Any]])?.first?["step"] as? Int == 50)
        #expect(try curl("\(daemon.base)/v1/layers/moe.3").json["total_routings"] as? Int == raws.count + 1)

        // Bad parameters are 400s with a JSON error naming them.
        for (query, field) in [("last=0", "last"), ("last=201", "last"), ("experts=2", "experts")] {
            let bad = try curl("\(daemon.base)/v1/layers/moe.3/history?\(query)")
            #expect(bad.status == 400, "\(query)")
            #expect(bad.json["field"] as? String == field, "\(query)")
        }
        #expect(try curl("\(daemon.base)/v1/layers/moe.3?steps=0").status == 400)
        #expect(try curl("\(daemon.base)/v1/summary?steps=x").status == 400)
        #expect(try curl("\(daemon.base)/v1/layers/none/history").status == 404)
    }

    @Test(.needs("curl")) func demandAndOverflowPerStepAndOverTheRun() throws {
        let daemon = try RunningDaemon()
        defer { daemon.stop() }
        let body =
            #"{"layer":"d","worker":"a","step":1,"expert_capacities":[4,2,0,2],"expert_demand":[6,2,1,2],"total_tokens":8,"tokens_dropped":3}"#
            + "\n"
            + #"{"layer":"d","worker":"b","step":1,"expert_capacities":[4,2,0,2],"total_tokens":8}"# + "\n"
        let r = try curl(
            "\(daemon.base)/v1/decisions", ["-H", "Content-Type: application/x-ndjson", "--data-binary", body])
        #expect(r.status == 200, "\(r.body)")
        let step = (try curl("\(daemon.base)/v1/layers/d/history?experts=1").json["steps"] as? [[String: Any]])?.first
        #expect(step?["expert_overflow"] as? [Int] == [2, 0, 1, 0])
        #expect(step?["expert_demand"] as? [Int] == [10, 4, 1, 4])
        #expect(step?["demand_decisions"] as? Int == 1)
        near(step?["overflow_ratio"], 3.0 / 19.0, "step overflow_ratio")
        let run = try curl("\(daemon.base)/v1/layers/d").json
        #expect(run["expert_overflow"] as? [Int] == [2, 0, 1, 0])
        near((run["capacity"] as? [String: Any])?["overflow_ratio"], 3.0 / 19.0, "run overflow_ratio")
        #expect(try curl("\(daemon.base)/metrics").body.contains("\nmoe_routing_overflow_ratio{layer=\"d\"} "))
    }

    @Test(.needs("curl")) func layersWithoutStepsAreBucketedByTheSecond() throws {
        let daemon = try RunningDaemon(["--stats-bucket-seconds", "1"])
        defer { daemon.stop() }
        let d = #"{"layer":"t","expert_capacities":[3,1],"total_tokens":4}"#
        var times = Set<Int>()
        for _ in 0..<3 {
            #expect(
                try curl("\(daemon.base)/v1/decisions", ["-H", "Content-Type: application/json", "--data-binary", d])
                    .status == 200)
            Thread.sleep(forTimeInterval: 0.6)
        }
        let h = try curl("\(daemon.base)/v1/layers/t/history").json
        #expect(h["bucket"] as? String == "seconds")
        #expect(h["bucket_seconds"] as? Int == 1)
        let steps = h["steps"] as? [[String: Any]] ?? []
        for s in steps { if let t = s["time"] as? Int { times.insert(t) } }
        // Three posts 0.6 s apart span at least two one-second buckets, at most three.
        #expect((2...3).contains(steps.count))
        #expect(times.count == steps.count)
        #expect(steps.map { $0["decisions"] as? Int ?? 0 }.reduce(0, +) == 3)
        let now = Int(Date().timeIntervalSince1970)
        #expect(times.allSatisfy { abs($0 - now) < 30 })
        #expect(steps.allSatisfy { $0["step"] == nil })
    }
}
