import JSONOutput

extension LayerSummary {
    /// Writes the summary as one JSON object, fields in the documented order (README "Summary
    /// fields"). Nil values are written as `null`; JSONWriter writes any non-finite double as
    /// `null` too, since RFC 8259 section 6 has no NaN or infinity.
    public func writeJSON(_ w: inout JSONWriter) {
        w.beginObject()
        w.field("layer", layer)
        w.field("experts", experts)
        w.field("total_routings", totalRoutings)
        w.field("total_tokens", totalTokens)
        w.field("tokens_dropped", tokensDropped)
        w.field("routing_efficiency", routingEfficiency)
        w.field("average_load_balance_loss", averageLoadBalanceLoss)
        w.field("average_router_z_loss", averageRouterZLoss)
        w.field("average_auxiliary_loss", averageAuxiliaryLoss)
        w.key("expert_utilization")
        w.beginArray()
        for u in expertUtilization { w.value(u) }
        w.endArray()
        w.key("expert_token_counts")
        w.beginArray()
        for c in expertTokenCounts { w.value(c) }
        w.endArray()
        w.field("utilization_cv", utilizationCV)
        Self.write(mostUtilizedExpert, as: "most_utilized_expert", into: &w)
        Self.write(leastUtilizedExpert, as: "least_utilized_expert", into: &w)

        w.key("utilization_summary")
        w.beginObject()
        w.field("mean_utilization", utilizationSummary.meanUtilization)
        w.field("min_utilization", utilizationSummary.minUtilization)
        w.field("max_utilization", utilizationSummary.maxUtilization)
        w.field("utilization_cv", utilizationSummary.utilizationCV)
        w.field("routing_efficiency", utilizationSummary.routingEfficiency)
        w.field("average_load_balance_loss", utilizationSummary.averageLoadBalanceLoss)
        w.field("average_router_z_loss", utilizationSummary.averageRouterZLoss)
        w.endObject()

        w.key("load_variance")
        w.beginObject()
        w.field("last", loadVariance.last)
        w.field("history_length", loadVariance.historyLength)
        w.field("window", loadVariance.window)
        w.field("trend", loadVariance.trend)
        w.endObject()

        w.key("latency")
        w.beginObject()
        w.field("count", latency.count)
        w.field("average_ms", latency.averageMs)
        w.field("min_ms", latency.minMs)
        w.field("max_ms", latency.maxMs)
        w.field("p50_ms", latency.p50Ms)
        w.field("p95_ms", latency.p95Ms)
        w.field("p99_ms", latency.p99Ms)
        w.endObject()

        w.key("capacity")
        w.beginObject()
        w.field("average_utilization", capacity.averageUtilization)
        w.field("peak_utilization", capacity.peakUtilization)
        w.field("capacity_exceeded_count", capacity.capacityExceededCount)
        Self.field("total_capacity", capacity.totalCapacity, into: &w)
        Self.field("total_used", capacity.totalUsed, into: &w)
        w.field("overall_utilization", capacity.overallUtilization)
        w.endObject()

        w.key("throughput")
        w.beginObject()
        w.field("tokens_per_routing", throughput.tokensPerRouting)
        w.field("tokens_per_second", throughput.tokensPerSecond)
        w.field("routings_per_second", throughput.routingsPerSecond)
        w.endObject()

        w.key("balance")
        w.beginObject()
        w.field("max_violation", balance.maxViolation)
        w.field("max_violation_last", balance.maxViolationLast)
        w.field("balancedness", balance.balancedness)
        w.field("entropy", balance.entropy)
        w.field("dead_experts", balance.deadExperts)
        w.endObject()

        w.field("nonfinite_losses", nonfiniteLosses)

        w.key("workers")
        w.beginObject()
        w.field("active", workers.active)
        w.field("stale", workers.stale)
        w.field("ttl_seconds", workers.ttlSeconds)
        w.field("untracked_decisions", workers.untrackedDecisions)
        w.key("list")
        w.beginArray()
        for e in workers.list {
            w.beginObject()
            w.field("worker", e.worker)
            w.field("last_seen", e.lastSeen)
            w.field("age_seconds", e.ageSeconds)
            w.field("stale", e.stale)
            w.field("decisions", e.decisions)
            w.endObject()
        }
        w.endArray()
        w.endObject()
        w.endObject()
    }

    private static func write(_ e: ExpertUtilization?, as name: String, into w: inout JSONWriter) {
        w.key(name)
        guard let e else { w.null(); return }
        w.beginObject()
        w.field("expert", e.expert)
        w.field("utilization", e.utilization)
        w.endObject()
    }

    private static func field(_ name: String, _ v: UInt64?, into w: inout JSONWriter) {
        w.key(name)
        if let v { w.value(v) } else { w.null() }
    }
}
