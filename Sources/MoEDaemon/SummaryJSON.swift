import HTTPCore
import JSONOutput
import MoEStats

/// The headline numbers of one layer, as `GET /v1/layers` lists them and `GET /v1/summary`
/// spreads them across layers: the counters, then the headline rows of `LayerMeasure.all` under
/// their names, as the full summary reports them.
struct Headline {
    let layer: String
    let experts: Int
    let totalRoutings: UInt64
    let totalTokens: UInt64
    let tokensDropped: UInt64
    let nonfiniteLosses: UInt64
    /// The values of `LayerMeasure.headlines`, in that order; nil where the layer has no value yet.
    let numbers: [Double?]

    init(_ s: LayerSummary) {
        layer = s.layer
        experts = s.experts
        totalRoutings = s.totalRoutings
        totalTokens = s.totalTokens
        tokensDropped = s.tokensDropped
        nonfiniteLosses = s.nonfiniteLosses
        numbers = LayerMeasure.headlines.map { s[$0] }
    }

    func writeJSON(_ w: inout JSONWriter) {
        w.beginObject()
        w.field("layer", layer)
        w.field("experts", experts)
        w.field("total_routings", totalRoutings)
        w.field("total_tokens", totalTokens)
        w.field("tokens_dropped", tokensDropped)
        for (row, value) in zip(LayerMeasure.headlines, numbers) { w.field(row.name, value) }
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
        writeHead(&w)
        for s in summaries { s.writeJSON(&w) }
        writeTail(&w)
    }

    /// Everything before the first layer: totals, spreads, and the opening of `layers`.
    func writeHead(_ w: inout JSONWriter) {
        let headlines = summaries.map(Headline.init)
        var routings: UInt64 = 0, tokens: UInt64 = 0, dropped: UInt64 = 0, nonfinite: UInt64 = 0
        var experts = 0
        // Saturating, as the layers' own counters are: a wrapped sum would report nonsense, and
        // the efficiency below needs dropped <= tokens, which saturation preserves (each layer
        // has dropped <= tokens) and wrapping does not.
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
        w.field(
            LayerMeasure.routingEfficiency.name,
            Measures.routingEfficiency(
                tokens: tokens, dropped: dropped,
                scale: LayerMeasure.routingEfficiency.jsonScale))
        w.field("nonfinite_losses", nonfinite)
        w.endObject()

        w.key("spread")
        w.beginObject()
        for (i, row) in LayerMeasure.headlines.enumerated() {
            let values = headlines.compactMap { $0.numbers[i] }.filter(\.isFinite)
            w.key(row.name)
            w.beginObject()
            w.field("min", values.min())
            w.field("max", values.max())
            w.field("mean", Measures.mean(sum: values.reduce(0, +), count: values.count))
            w.field("layers", values.count)
            w.endObject()
        }
        w.endObject()

        w.key("layers")
        w.beginArray()
    }

    /// Everything after the last layer.
    func writeTail(_ w: inout JSONWriter) {
        w.endArray()
        w.endObject()
    }
}

/// `GET /v1/summary` as a streamed body (`HTTPBodySource`): the head, then a few layers per
/// piece, then the tail and a newline, so the text of a large fleet never exists whole. Drained
/// whole, the bytes are exactly `FleetSummary.writeJSON`'s and the newline.
final class SummaryBody: HTTPBodySource {
    private let fleet: FleetSummary
    private var writer = JSONWriter(capacity: 0)
    /// The next layer to write; -1 before the head.
    private var index = -1

    init(_ summaries: [LayerSummary]) { fleet = FleetSummary(summaries) }

    func next(into output: inout [UInt8], atMost: Int) -> Bool {
        if index < 0 {
            fleet.writeHead(&writer)
            index = 0
        }
        let layers = fleet.summaries
        while index < layers.count && writer.bytes.count < atMost {
            layers[index].writeJSON(&writer)
            index += 1
        }
        let done = index == layers.count
        if done { fleet.writeTail(&writer) }
        writer.moveBytes(into: &output)
        if done { output.append(UInt8(ascii: "\n")) }
        return !done
    }
}
