import JSONOutput

extension LayerSummary {
    /// `expert_token_counts`, `expert_demand` (served plus overflow; a decision without a demand
    /// counts as asking for what it was served) and `expert_overflow`, both null without demand:
    /// the same three arrays in a layer's summary, a window and a history step.
    static func writeExpertArrays(tokens: [UInt64], overflow: [UInt64]?, into w: inout JSONWriter) {
        w.key("expert_token_counts")
        w.beginArray()
        for c in tokens { w.value(c) }
        w.endArray()
        w.key("expert_demand")
        if let overflow {
            w.beginArray()
            for (s, o) in zip(tokens, overflow) { w.value(s.addingSaturated(o)) }
            w.endArray()
        } else {
            w.null()
        }
        w.key("expert_overflow")
        if let overflow {
            w.beginArray()
            for o in overflow { w.value(o) }
            w.endArray()
        } else {
            w.null()
        }
    }

    /// Writes the summary as one JSON object, fields in the documented order (docs/api.md "Summary
    /// fields"): in each section its raw fields, then the rows of `LayerMeasure.all` placed in
    /// it, in table order. Nil values are written as `null`; JSONWriter writes any non-finite
    /// double as `null` too, since RFC 8259 section 6 has no NaN or infinity. `extra` writes
    /// fields the layer's engine does not know (the daemon's placement figures) at the end.
    public func writeJSON(_ w: inout JSONWriter, extra: ((inout JSONWriter) -> Void)? = nil) {
        w.beginObject()
        w.field("layer", layer)
        w.field("experts", experts)
        w.field("total_routings", totalRoutings)
        w.field("total_tokens", totalTokens)
        w.field("tokens_dropped", tokensDropped)
        writeMeasures(of: .layer, into: &w)
        w.key("expert_utilization")
        w.beginArray()
        for u in expertUtilization { w.value(u) }
        w.endArray()
        Self.writeExpertArrays(tokens: expertTokenCounts, overflow: expertOverflow, into: &w)
        writeMeasures(of: .experts, into: &w)
        Self.write(mostUtilizedExpert, as: "most_utilized_expert", into: &w)
        Self.write(leastUtilizedExpert, as: "least_utilized_expert", into: &w)

        w.key("utilization_summary")
        w.beginObject()
        writeMeasures(of: .utilizationSummary, into: &w)
        w.endObject()

        w.key("load_variance")
        w.beginObject()
        w.field("last", lastLoadVariance)
        w.field("history_length", loadVarianceHistoryLength)
        w.field("window", window)
        writeMeasures(of: .loadVariance, into: &w)
        w.endObject()

        w.key("latency")
        w.beginObject()
        w.field("count", latencyCount)
        writeMeasures(of: .latency, into: &w)
        w.endObject()

        w.key("capacity")
        w.beginObject()
        w.field("average_utilization", capacityAverageUtilization)
        w.field("peak_utilization", capacityPeakUtilization)
        w.field("capacity_exceeded_count", capacityExceededCount)
        Self.field("total_capacity", totalCapacity, into: &w)
        Self.field("total_used", totalUsed, into: &w)
        w.field("demand_decisions", demandDecisions)
        writeMeasures(of: .capacity, into: &w)
        w.endObject()

        w.key("throughput")
        w.beginObject()
        writeMeasures(of: .throughput, into: &w)
        w.endObject()

        w.key("balance")
        w.beginObject()
        writeMeasures(of: .balance, into: &w)
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
        extra?(&w)
        w.endObject()
    }

    /// The rows of the table placed in `section`, in table order.
    private func writeMeasures(of section: LayerMeasure.Section, into w: inout JSONWriter) {
        for (i, row) in LayerMeasure.all.enumerated() {
            guard let place = row.summary, place.section == section else { continue }
            w.field(place.key, measures[i])
        }
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
