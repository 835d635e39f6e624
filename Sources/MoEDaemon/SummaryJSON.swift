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
    /// The newest complete step and the recent MaxVio (`GET /v1/layers` only).
    let steps: StepHeadline?

    init(_ s: LayerSummary, steps: StepHeadline? = nil) {
        layer = s.layer
        experts = s.experts
        totalRoutings = s.totalRoutings
        totalTokens = s.totalTokens
        tokensDropped = s.tokensDropped
        nonfiniteLosses = s.nonfiniteLosses
        numbers = LayerMeasure.headlines.map { s[$0] }
        self.steps = steps
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
        if let steps {
            let last = steps.lastComplete
            let input = last?.totals.measureInput(layer: layer, experts: experts)
            w.field("last_complete_step", last.map { Int($0.label) })
            w.field("last_complete_step_workers", last?.workers)
            w.field("last_complete_step_max_violation", input.flatMap { LayerMeasure.maxViolation.unitValue($0) })
            w.field("last_complete_step_balancedness", input.flatMap { LayerMeasure.balancedness.unitValue($0) })
            w.field("max_violation_last_100_steps", steps.recentMaxViolation)
        }
        w.endObject()
    }
}

/// The spread of each headline row across layers: minimum, maximum and mean of the finite values
/// (`numbers[layer][row]`, in the order of `LayerMeasure.headlines`) and how many layers have one.
private func writeSpread(_ numbers: [[Double?]], rows: [Int], into w: inout JSONWriter) {
    w.key("spread")
    w.beginObject()
    for i in rows {
        let values = numbers.compactMap { $0[i] }.filter(\.isFinite)
        w.key(LayerMeasure.headlines[i].name)
        w.beginObject()
        w.field("min", values.min())
        w.field("max", values.max())
        w.field("mean", Measures.mean(sum: values.reduce(0, +), count: values.count))
        w.field("layers", values.count)
        w.endObject()
    }
    w.endObject()
}

/// Saturating, as the layers' own counters are: a wrapped sum would report nonsense, and the
/// efficiency needs dropped <= tokens, which saturation preserves (each layer has dropped <=
/// tokens) and wrapping does not.
private func addSaturating(_ a: inout UInt64, _ b: UInt64) {
    let (sum, overflow) = a.addingReportingOverflow(b)
    a = overflow ? .max : sum
}

/// `GET /v1/summary?steps=N`: every layer's summary over its newest N buckets, totals of the
/// windows, and the spread of the headline rows the windows report.
struct WindowFleetSummary {
    let steps: Int
    let windows: [StepWindow]
    /// Adds each window's `placement` figures.
    var placement: PlacementSpec? = nil

    func writeJSON(_ w: inout JSONWriter) {
        var totals = FleetTotals()
        for window in windows {
            totals.add(
                routings: window.totals.decisions, tokens: window.totals.tokens, dropped: window.totals.tokensDropped,
                nonfinite: window.totals.nonfiniteLosses, experts: window.experts)
        }
        w.beginObject()
        w.key("window")
        w.beginObject()
        w.field("steps", steps)
        w.endObject()
        totals.writeJSON(&w)
        let numbers = windows.map { window -> [Double?] in
            let values = window.measures
            return LayerMeasure.headlines.map { row in
                LayerMeasure.all.firstIndex { $0.name == row.name }.flatMap { values[$0] }
            }
        }
        writeSpread(
            numbers, rows: LayerMeasure.headlines.indices.filter { LayerMeasure.headlines[$0].inWindows }, into: &w)
        w.key("layers")
        w.beginArray()
        for window in windows {
            window.writeJSON(
                &w,
                extra: placement.map { spec in
                    { spec.writeField(&$0, layer: window.layer, tokens: window.totals.expertTokens) }
                })
        }
        w.endArray()
        w.endObject()
    }
}

/// The `totals` object of `GET /v1/summary`, run-wide or over a window: sums of counters across
/// layers (saturating), and the efficiency recomputed from those sums.
struct FleetTotals {
    private var layers = 0, experts = 0
    private var routings: UInt64 = 0, tokens: UInt64 = 0, dropped: UInt64 = 0, nonfinite: UInt64 = 0

    mutating func add(routings r: UInt64, tokens t: UInt64, dropped d: UInt64, nonfinite n: UInt64, experts e: Int) {
        layers += 1
        experts += e
        addSaturating(&routings, r)
        addSaturating(&tokens, t)
        addSaturating(&dropped, d)
        addSaturating(&nonfinite, n)
    }

    func writeJSON(_ w: inout JSONWriter) {
        w.key("totals")
        w.beginObject()
        w.field("layers", layers)
        w.field("experts", experts)
        w.field("total_routings", routings)
        w.field("total_tokens", tokens)
        w.field("tokens_dropped", dropped)
        w.field(
            LayerMeasure.routingEfficiency.name,
            Measures.routingEfficiency(
                tokens: tokens, dropped: dropped, scale: LayerMeasure.routingEfficiency.jsonScale))
        w.field("nonfinite_losses", nonfinite)
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
    /// Adds each layer's `placement` figures.
    let placement: PlacementSpec?

    init(_ summaries: [LayerSummary], placement: PlacementSpec? = nil) {
        self.summaries = summaries
        self.placement = placement
    }

    func writeJSON(_ w: inout JSONWriter) {
        writeHead(&w)
        for i in summaries.indices { writeLayer(i, &w) }
        writeTail(&w)
    }

    /// The `i`th layer's summary, with its `placement` figures when a placement is set.
    func writeLayer(_ i: Int, _ w: inout JSONWriter) {
        let s = summaries[i]
        s.writeJSON(
            &w, extra: placement.map { spec in { spec.writeField(&$0, layer: s.layer, tokens: s.expertTokenCounts) } })
    }

    /// Everything before the first layer: totals, spreads, and the opening of `layers`.
    func writeHead(_ w: inout JSONWriter) {
        let headlines = summaries.map { Headline($0) }
        var totals = FleetTotals()
        for h in headlines {
            totals.add(
                routings: h.totalRoutings, tokens: h.totalTokens, dropped: h.tokensDropped,
                nonfinite: h.nonfiniteLosses, experts: h.experts)
        }
        w.beginObject()
        totals.writeJSON(&w)

        writeSpread(headlines.map { $0.numbers }, rows: Array(LayerMeasure.headlines.indices), into: &w)

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

    init(_ summaries: [LayerSummary], placement: PlacementSpec? = nil) {
        fleet = FleetSummary(summaries, placement: placement)
    }

    func next(into output: inout [UInt8], atMost: Int) -> Bool {
        if index < 0 {
            fleet.writeHead(&writer)
            index = 0
        }
        let count = fleet.summaries.count
        while index < count && writer.bytes.count < atMost {
            fleet.writeLayer(index, &writer)
            index += 1
        }
        let done = index == count
        if done { fleet.writeTail(&writer) }
        writer.moveBytes(into: &output)
        if done { output.append(UInt8(ascii: "\n")) }
        return !done
    }
}
