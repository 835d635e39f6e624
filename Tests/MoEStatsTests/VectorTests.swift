import Foundation
import MoEStats
import Testing

/// The reference's own results (`Tests/Fixtures/vectors/*.json`, produced by running torsh's `stats.rs`)
/// reproduced to a relative tolerance of 1e-4 (the reference computes in f32), and the same
/// formulas in f64 to 1e-9. Where the reference reports 0 for lack of latency samples, we report
/// null, as the vectors' README says to read them.
@Suite struct VectorTests {
    static let names = ["seed_tests_capacity", "seed_tests_monitor", "seed_tests_recording", "small_8x10"]

    /// `Tests/Fixtures/vectors` (outside the test target's folder, so SwiftPM does not build it).
    static var directory: URL {
        URL(fileURLWithPath: #filePath)
            .deletingLastPathComponent()  // MoEStatsTests
            .deletingLastPathComponent()  // Tests
            .appendingPathComponent("Fixtures/vectors")
    }

    @Test(arguments: names)
    func vector(_ name: String) throws {
        let url = Self.directory.appendingPathComponent("\(name).json")
        // Missing vectors are a failure, not a skip.
        let data = try #require(
            FileManager.default.contents(atPath: url.path),
            "reference vector \(url.path) is missing")
        let root = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let rawDecisions = try #require(root["decisions"] as? [[String: Any]])
        let decisions = try rawDecisions.map(Self.decision)

        let registry = LayerRegistry(configuration: StatsConfiguration())
        for d in decisions {
            #expect(try registry.ingest([d], defaultLayer: name, now: 1) == 1)
        }
        let snapshot = try #require(registry.snapshot(name))
        #expect(snapshot.experts == root["num_experts"] as? Int)

        var checker = Checker(scenario: name, tolerance: 1e-4)
        try checker.compare(snapshot, with: try #require(root["expected"] as? [String: Any]))
        var f64 = Checker(scenario: name + " (f64)", tolerance: 1e-9)
        try f64.compare(snapshot, with: try #require(root["f64_recomputation"] as? [String: Any]))
        #expect(checker.compared > 40)
    }

    static func decision(_ o: [String: Any]) throws -> RoutingDecision {
        func loss(_ key: String) -> Loss {
            if let v = o[key] as? Double { return .value(v) }
            return o[key] is NSNull ? .nonFinite : .absent
        }
        let counts = try #require(o["expert_capacities"] as? [NSNumber]).map(\.uint64Value)
        return RoutingDecision(
            expertCapacity: o["expert_capacity"] as? Int,
            latencyMs: o["latency_ms"] as? Double,
            expertCounts: counts,
            totalTokens: try #require((o["total_tokens"] as? NSNumber)?.uint64Value),
            tokensDropped: try #require((o["tokens_dropped"] as? NSNumber)?.uint64Value),
            loadBalanceLoss: loss("load_balance_loss"),
            routerZLoss: loss("router_z_loss"),
            auxiliaryLoss: loss("auxiliary_loss"),
            assignmentCount: (o["expert_assignments"] as? [Any])?.count ?? 0)
    }
}

/// Compares our values with one `expected` object, naming every mismatch.
struct Checker {
    var scenario: String
    var tolerance: Double
    var compared = 0

    mutating func number(_ what: String, _ actual: Double?, _ expected: Any?) {
        compared += 1
        guard let e = (expected as? NSNumber)?.doubleValue else {
            Issue.record("\(scenario): \(what): expected value \(String(describing: expected)) is not a number")
            return
        }
        guard let a = actual else {
            Issue.record("\(scenario): \(what) is null, expected \(e)")
            return
        }
        let ok = e == 0 ? abs(a) <= 1e-12 : abs(a - e) <= tolerance * abs(e)
        #expect(ok, "\(scenario): \(what) = \(a), expected \(e)")
    }

    mutating func null(_ what: String, _ actual: Double?) {
        compared += 1
        #expect(actual == nil, "\(scenario): \(what) should be null before any latency sample")
    }

    mutating func compare(_ snapshot: LayerSnapshot, with e: [String: Any]) throws {
        let s = snapshot.summary(window: nil)
        number("total_routings", Double(s.totalRoutings), e["total_routings"])
        number("total_tokens", Double(s.totalTokens), e["total_tokens"])
        number("tokens_dropped", Double(s.tokensDropped), e["tokens_dropped"])
        number("routing_efficiency", s.routingEfficiency, e["routing_efficiency"])
        number("average_load_balance_loss", s.averageLoadBalanceLoss, e["average_load_balance_loss"])
        number("average_router_z_loss", s.averageRouterZLoss, e["average_router_z_loss"])
        let utilization = try #require(e["expert_utilization"] as? [Any])
        #expect(utilization.count == s.expertUtilization.count)
        for (i, u) in utilization.enumerated() where i < s.expertUtilization.count {
            number("expert_utilization[\(i)]", s.expertUtilization[i], u)
        }
        let counts = try #require(e["expert_token_counts"] as? [NSNumber]).map(\.uint64Value)
        #expect(counts == s.expertTokenCounts, "\(scenario): expert_token_counts")
        number("utilization_cv", s.utilizationCV, e["utilization_cv"])
        for (key, ours) in [
            ("most_utilized_expert", s.mostUtilizedExpert), ("least_utilized_expert", s.leastUtilizedExpert),
        ] {
            let pair = try #require(e[key] as? [NSNumber])
            #expect(ours?.expert == pair[0].intValue, "\(scenario): \(key) index")
            number("\(key).utilization", ours?.utilization, pair[1])
        }
        let us = try #require(e["utilization_summary"] as? [String: Any])
        number("utilization_summary.mean_utilization", s.utilizationSummary.meanUtilization, us["mean_utilization"])
        number("utilization_summary.min_utilization", s.utilizationSummary.minUtilization, us["min_utilization"])
        number("utilization_summary.max_utilization", s.utilizationSummary.maxUtilization, us["max_utilization"])
        number("utilization_summary.utilization_cv", s.utilizationSummary.utilizationCV, us["utilization_cv"])
        number(
            "utilization_summary.routing_efficiency", s.utilizationSummary.routingEfficiency, us["routing_efficiency"])
        number(
            "utilization_summary.average_load_balance_loss", s.utilizationSummary.averageLoadBalanceLoss,
            us["average_load_balance_loss"])
        number(
            "utilization_summary.average_router_z_loss", s.utilizationSummary.averageRouterZLoss,
            us["average_router_z_loss"])

        number("load_variance_history_len", Double(s.loadVariance.historyLength), e["load_variance_history_len"])
        number("load_variance_last", s.loadVariance.last, e["load_variance_last"])
        let trends = try #require(e["recent_load_variance_trend"] as? [String: Any])
        #expect(!trends.isEmpty)
        for (window, value) in trends {
            let w = try #require(Int(window))
            number("recent_load_variance_trend(\(w))", snapshot.summary(window: w).loadVariance.trend, value)
        }

        let latency = try #require(e["latency"] as? [String: Any])
        number("latency.total_measurements", Double(s.latency.count), latency["total_measurements"])
        number("latency.total_latency_ms", snapshot.latencySumMs, latency["total_latency_ms"])
        let throughput = try #require(e["throughput"] as? [String: Any])
        number("throughput.tokens_per_routing", s.throughput.tokensPerRouting, throughput["tokens_per_routing"])
        if s.latency.count > 0 {
            number("latency.average_latency", s.latency.averageMs, latency["average_latency"])
            number("latency.min_latency_ms", s.latency.minMs, latency["min_latency_ms"])
            number("latency.max_latency_ms", s.latency.maxMs, latency["max_latency_ms"])
            number("latency.p50", s.latency.p50Ms, latency["p50"])
            number("latency.p95", s.latency.p95Ms, latency["p95"])
            number("latency.p99", s.latency.p99Ms, latency["p99"])
            number("throughput.average_latency", s.latency.averageMs, throughput["average_latency"])
            number("throughput.tokens_per_second", s.throughput.tokensPerSecond, throughput["tokens_per_second"])
            number("throughput.routings_per_second", s.throughput.routingsPerSecond, throughput["routings_per_second"])
        } else {
            // The reference's zeros (and infinite minimum) before any sample are nulls here.
            for (what, v) in [
                ("average", s.latency.averageMs), ("min", s.latency.minMs), ("max", s.latency.maxMs),
                ("p50", s.latency.p50Ms), ("p95", s.latency.p95Ms), ("p99", s.latency.p99Ms),
                ("tokens_per_second", s.throughput.tokensPerSecond),
                ("routings_per_second", s.throughput.routingsPerSecond),
            ] {
                null(what, v)
            }
            #expect((latency["average_latency"] as? NSNumber)?.doubleValue == 0)
        }

        let c = try #require(e["capacity_stats"] as? [String: Any])
        number("capacity.average_utilization", s.capacity.averageUtilization, c["average_utilization"])
        number("capacity.peak_utilization", s.capacity.peakUtilization, c["peak_utilization"])
        number(
            "capacity.capacity_exceeded_count", Double(s.capacity.capacityExceededCount), c["capacity_exceeded_count"])
        number("capacity.total_capacity", s.capacity.totalCapacity.map { Double($0) }, c["total_capacity"])
        number("capacity.total_used", s.capacity.totalUsed.map { Double($0) }, c["total_used"])
        number("capacity.overall_utilization", s.capacity.overallUtilization, c["overall_utilization"])
    }
}
