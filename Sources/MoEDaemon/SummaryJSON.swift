import JSONOutput
import MoEStats

/// The headline numbers of one layer, as `GET /v1/layers` lists them and `GET /v1/summary`
/// spreads them across layers. Names match the full summary's fields.
struct Headline {
    let layer: String
    let experts: Int
    let totalRoutings: UInt64
    let totalTokens: UInt64
    let tokensDropped: UInt64
    let nonfiniteLosses: UInt64
    /// The spread-able numbers, in output order; nil where the layer has no value yet.
    let numbers: [(String, Double?)]

    init(_ s: LayerSummary) {
        layer = s.layer
        experts = s.experts
        totalRoutings = s.totalRoutings
        totalTokens = s.totalTokens
        tokensDropped = s.tokensDropped
        nonfiniteLosses = s.nonfiniteLosses
        numbers = [
            ("routing_efficiency", s.routingEfficiency),
            ("average_load_balance_loss", s.averageLoadBalanceLoss),
            ("average_router_z_loss", s.averageRouterZLoss),
            ("average_auxiliary_loss", s.averageAuxiliaryLoss),
            ("utilization_cv", s.utilizationCV),
            ("max_violation", s.balance.maxViolation),
            ("balancedness", s.balance.balancedness),
            ("entropy", s.balance.entropy),
            ("dead_experts", Double(s.balance.deadExperts)),
            ("average_latency_ms", s.latency.averageMs),
            ("p99_latency_ms", s.latency.p99Ms),
            ("capacity_utilization", s.capacity.overallUtilization),
            ("tokens_per_second", s.throughput.tokensPerSecond),
        ]
    }

    func writeJSON(_ w: inout JSONWriter) {
        w.beginObject()
        w.field("layer", layer)
        w.field("experts", experts)
        w.field("total_routings", totalRoutings)
        w.field("total_tokens", totalTokens)
        w.field("tokens_dropped", tokensDropped)
        for (name, value) in numbers { w.field(name, value) }
        w.field("nonfinite_losses", nonfiniteLosses)
        w.endObject()
    }
}

/// `GET /v1/summary`: every layer's full summary, totals across layers, and for each headline
/// number its minimum, maximum and mean over the layers that have a value.
///
/// Totals are sums of counters (decisions, tokens, dropped tokens, non-finite losses) and the
/// efficiency recomputed from those sums; averaging per-layer efficiencies would weight a layer
/// that saw ten tokens like one that saw ten million.
struct FleetSummary {
    let summaries: [LayerSummary]

    init(_ summaries: [LayerSummary]) { self.summaries = summaries }

    func writeJSON(_ w: inout JSONWriter) {
        let headlines = summaries.map(Headline.init)
        var routings: UInt64 = 0, tokens: UInt64 = 0, dropped: UInt64 = 0, nonfinite: UInt64 = 0
        var experts = 0
        // Saturating, as the layers' own counters are: a wrapped sum would report nonsense, and
        // `tokens - dropped` below relies on dropped <= tokens, which saturation preserves
        // (each layer has dropped <= tokens) and wrapping does not.
        func add(_ a: inout UInt64, _ b: UInt64) {
            let (sum, overflow) = a.addingReportingOverflow(b)
            a = overflow ? .max : sum
        }
        for h in headlines {
            add(&routings, h.totalRoutings)
            add(&tokens, h.totalTokens)
            add(&dropped, h.tokensDropped)
            add(&nonfinite, h.nonfiniteLosses)
            experts += h.experts
        }
        w.beginObject()
        w.key("totals")
        w.beginObject()
        w.field("layers", headlines.count)
        w.field("experts", experts)
        w.field("total_routings", routings)
        w.field("total_tokens", tokens)
        w.field("tokens_dropped", dropped)
        w.field("routing_efficiency", tokens > 0 ? Double(tokens - min(dropped, tokens)) / Double(tokens) * 100 : nil)
        w.field("nonfinite_losses", nonfinite)
        w.endObject()

        w.key("spread")
        w.beginObject()
        let names = headlines.first?.numbers.map(\.0) ?? Headline.numberNames
        for (i, name) in names.enumerated() {
            let values = headlines.compactMap { $0.numbers[i].1 }.filter(\.isFinite)
            w.key(name)
            w.beginObject()
            w.field("min", values.min())
            w.field("max", values.max())
            w.field("mean", values.isEmpty ? nil : values.reduce(0, +) / Double(values.count))
            w.field("layers", values.count)
            w.endObject()
        }
        w.endObject()

        w.key("layers")
        w.beginArray()
        for s in summaries { s.writeJSON(&w) }
        w.endArray()
        w.endObject()
    }
}

extension Headline {
    static let numberNames = [
        "routing_efficiency", "average_load_balance_loss", "average_router_z_loss", "average_auxiliary_loss",
        "utilization_cv", "max_violation", "balancedness", "entropy", "dead_experts", "average_latency_ms",
        "p99_latency_ms", "capacity_utilization", "tokens_per_second",
    ]
}
