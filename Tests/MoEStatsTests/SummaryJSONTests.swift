import Foundation
import JSONOutput
import MoEStats
import Testing

@Suite struct SummaryJSONTests {
    static let topLevelKeys = [
        "layer", "experts", "total_routings", "total_tokens", "tokens_dropped", "routing_efficiency",
        "average_load_balance_loss", "average_router_z_loss", "average_auxiliary_loss", "expert_utilization",
        "expert_token_counts", "expert_demand", "expert_overflow", "utilization_cv", "most_utilized_expert",
        "least_utilized_expert",
        "utilization_summary", "load_variance", "latency", "capacity", "throughput", "balance", "nonfinite_losses",
        "workers",
    ]

    static func json(_ decisions: [RoutingDecision], window: Int? = nil) throws -> (String, [String: Any]) {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest(decisions, defaultLayer: nil, now: 1)
        var w = JSONWriter()
        try #require(r.snapshot("L0")).summary(window: window).writeJSON(&w)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(w.bytes)) as? [String: Any])
        return (w.string, object)
    }

    @Test func fieldsInDocumentedOrder() throws {
        let (text, object) = try Self.json([decision([3, 1], lbl: 0.5, latencyMs: 2, capacity: 4)])
        #expect(Set(object.keys) == Set(Self.topLevelKeys))
        // The first occurrence of each top-level key comes in the documented order.
        let positions = Self.topLevelKeys.map { text.range(of: "\"\($0)\":")!.lowerBound }
        #expect(positions == positions.sorted())
        #expect(
            text.hasPrefix(
                #"{"layer":"L0","experts":2,"total_routings":1,"total_tokens":4,"tokens_dropped":0,"routing_efficiency":100,"#
            ))
        let nested: [String: [String]] = [
            "utilization_summary": [
                "mean_utilization", "min_utilization", "max_utilization", "utilization_cv",
                "routing_efficiency", "average_load_balance_loss", "average_router_z_loss",
            ],
            "load_variance": ["last", "history_length", "window", "trend"],
            "latency": ["count", "average_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms"],
            "capacity": [
                "average_utilization", "peak_utilization", "capacity_exceeded_count", "total_capacity",
                "total_used", "demand_decisions", "overall_utilization", "overflow_ratio",
            ],
            "throughput": ["tokens_per_routing", "tokens_per_second", "routings_per_second"],
            "balance": ["max_violation", "max_violation_last", "balancedness", "entropy", "dead_experts"],
            "most_utilized_expert": ["expert", "utilization"],
        ]
        for (key, fields) in nested {
            let inner = try #require(object[key] as? [String: Any], "\(key)")
            #expect(Set(inner.keys) == Set(fields), "\(key)")
        }
        let most = try #require(object["most_utilized_expert"] as? [String: Any])
        #expect(most["expert"] as? Int == 0)
        #expect(most["utilization"] as? Double == 0.75)
        #expect(object["expert_token_counts"] as? [Int] == [3, 1])
        #expect((object["latency"] as? [String: Any])?["p99_ms"] as? Double == 2)
        #expect((object["capacity"] as? [String: Any])?["total_capacity"] as? Int == 8)
    }

    @Test func missingValuesAreNull() throws {
        let (text, object) = try Self.json([decision([0, 0], tokens: 0)])
        #expect(object["routing_efficiency"] is NSNull)
        #expect(object["average_load_balance_loss"] is NSNull)
        #expect(object["utilization_cv"] is NSNull)
        let latency = try #require(object["latency"] as? [String: Any])
        #expect(latency["count"] as? Int == 0)
        for key in ["average_ms", "min_ms", "max_ms", "p50_ms", "p95_ms", "p99_ms"] {
            #expect(latency[key] is NSNull, "latency.\(key)")
        }
        let capacity = try #require(object["capacity"] as? [String: Any])
        for key in ["average_utilization", "peak_utilization", "total_capacity", "total_used", "overall_utilization"] {
            #expect(capacity[key] is NSNull, "capacity.\(key)")
        }
        #expect(capacity["capacity_exceeded_count"] as? Int == 0)
        let throughput = try #require(object["throughput"] as? [String: Any])
        #expect(throughput["tokens_per_second"] is NSNull)
        #expect((object["balance"] as? [String: Any])?["dead_experts"] as? Int == 2)
        #expect(!text.contains("nan") && !text.contains("inf"))
    }
}
