import JSONOutput

extension StepTotals {
    /// The sums, then the rows of `LayerMeasure.all` that `include` selects, under their names
    /// (computed by the rows' own functions from these sums), then the per-expert arrays when
    /// `experts`: docs/api.md "History" lists the fields in this order.
    func writeFields(
        _ w: inout JSONWriter, layer: String, experts: Int, rows include: (LayerMeasure) -> Bool,
        withExperts: Bool
    ) {
        let input = measureInput(layer: layer, experts: experts)
        w.field("tokens", tokens)
        w.field("tokens_dropped", tokensDropped)
        for row in LayerMeasure.all where include(row) {
            guard case .perLayer = row.value else { continue }
            w.field(row.name, row.jsonValue(input))
        }
        w.field("max_violation_worst_decision", worstDecisionMaxViolation)
        w.field("nonfinite_losses", nonfiniteLosses)
        w.field("demand_decisions", demandDecisions)
        if withExperts { writeExperts(&w) }
    }

    /// `expert_token_counts`, and `expert_demand` (served plus overflow; a decision without a
    /// demand counts as asking for what it was served) and `expert_overflow`, null without demand.
    func writeExperts(_ w: inout JSONWriter) {
        LayerSummary.writeExpertArrays(tokens: expertTokens, overflow: expertOverflow, into: &w)
    }
}

extension LayerHistory {
    /// `GET /v1/layers/{layer}/history`: the buckets oldest first, each with the per-step rows of
    /// the measure table; with `experts`, each bucket's per-expert arrays too; `extra` writes
    /// fields of the step's sums that the engine does not know (the daemon's placement figures).
    public func writeJSON(
        _ w: inout JSONWriter, experts withExperts: Bool, extra: ((inout JSONWriter, StepTotals) -> Void)? = nil
    ) {
        w.beginObject()
        w.field("layer", layer)
        w.field("experts", experts)
        w.field("bucket", bucketing == .step ? "step" : "seconds")
        w.field("bucket_seconds", bucketing == .time ? bucketSeconds : nil)
        w.field("history_steps", capacity)
        w.field("workers_expected", expectedWorkers)
        w.field("late_decisions", lateDecisions)
        w.field("unbucketed_decisions", unbucketedDecisions)
        w.key("steps")
        w.beginArray()
        for b in buckets {
            w.beginObject()
            w.field(bucketing == .step ? "step" : "time", Int(label(b.key)))
            w.field("decisions", b.totals.decisions)
            w.field("workers", b.workers)
            w.field("workers_expected", expectedWorkers)
            w.field("complete", b.workers >= expectedWorkers)
            b.totals.writeFields(&w, layer: layer, experts: experts, rows: \.inSteps, withExperts: withExperts)
            extra?(&w, b.totals)
            w.endObject()
        }
        w.endArray()
        w.endObject()
    }
}

extension StepWindow {
    /// The values of the rows of `LayerMeasure.all` reported over windows, in table order (nil for
    /// the others): the windowed summary's numbers and the spread of `GET /v1/summary?steps=N`.
    public var measures: [Double?] {
        let input = totals.measureInput(layer: layer, experts: experts)
        return LayerMeasure.all.map { $0.inWindows ? $0.jsonValue(input) : nil }
    }

    /// `GET /v1/layers/{layer}?steps=N`: the summary's fields that the buckets hold, computed over
    /// the window, in the summary's sections and order; the rest are left out (docs/api.md).
    /// `extra` writes fields the engine does not know (the daemon's placement figures) at the end.
    public func writeJSON(_ w: inout JSONWriter, extra: ((inout JSONWriter) -> Void)? = nil) {
        let values = measures
        func rows(_ section: LayerMeasure.Section) {
            for (i, row) in LayerMeasure.all.enumerated() {
                guard row.inWindows, let place = row.summary, place.section == section else { continue }
                w.field(place.key, values[i])
            }
        }
        w.beginObject()
        w.field("layer", layer)
        w.field("experts", experts)
        w.key("window")
        w.beginObject()
        w.field("steps", steps)
        w.field("from", from.map { Int($0) })
        w.field("to", to.map { Int($0) })
        w.field("bucket", bucketing == .step ? "step" : "seconds")
        w.field("complete_steps", completeSteps)
        w.field("workers_expected", expectedWorkers)
        w.endObject()
        w.field("total_routings", totals.decisions)
        w.field("total_tokens", totals.tokens)
        w.field("tokens_dropped", totals.tokensDropped)
        rows(.layer)
        totals.writeExperts(&w)
        rows(.experts)
        for section in LayerMeasure.Section.allCases {
            guard let key = section.key,
                LayerMeasure.all.contains(where: { $0.inWindows && $0.summary?.section == section })
            else { continue }
            w.key(key)
            w.beginObject()
            if section == .capacity { w.field("demand_decisions", totals.demandDecisions) }
            rows(section)
            if section == .balance {
                w.field("max_violation_worst_decision", totals.worstDecisionMaxViolation)
            }
            w.endObject()
        }
        w.field("nonfinite_losses", totals.nonfiniteLosses)
        extra?(&w)
        w.endObject()
    }
}
