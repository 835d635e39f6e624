import Foundation
import JSONOutput
import MoEStats
import Testing

@testable import MoEDaemon

/// The table of layer measures as the daemon's outputs show it: every headline row in the
/// `GET /v1/layers` entries and in the spread of `GET /v1/summary`, every gauge row in `/metrics`
/// with its help text.
@Suite struct MeasureOutputTests {
    static func summaries() throws -> [LayerSummary] {
        try MetricsViewTests.registry(seed: 5, layers: 4, decisions: 12).snapshots().map { $0.summary(window: nil) }
    }

    static func object(_ w: JSONWriter) throws -> Any {
        try JSONSerialization.jsonObject(with: Data(w.bytes))
    }

    @Test func headlineRowsInTheLayerList() throws {
        for s in try Self.summaries() {
            var w = JSONWriter()
            Headline(s).writeJSON(&w)
            let entry = try #require(try Self.object(w) as? [String: Any])
            for row in LayerMeasure.headlines {
                #expect(entry.keys.contains(row.name), "\(row.name)")
            }
            // In table order, between the counters and `nonfinite_losses`.
            let names = ["tokens_dropped"] + LayerMeasure.headlines.map(\.name) + ["nonfinite_losses"]
            let positions = names.map { w.string.range(of: "\"\($0)\":")!.lowerBound }
            #expect(positions == positions.sorted())
        }
    }

    @Test func headlineRowsInTheSpread() throws {
        let summaries = try Self.summaries()
        var w = JSONWriter()
        FleetSummary(summaries).writeJSON(&w)
        let root = try #require(try Self.object(w) as? [String: Any])
        let spread = try #require(root["spread"] as? [String: Any])
        #expect(Set(spread.keys) == Set(LayerMeasure.headlines.map(\.name)))
        for row in LayerMeasure.headlines {
            let entry = try #require(spread[row.name] as? [String: Any], "\(row.name)")
            #expect(Set(entry.keys) == ["min", "max", "mean", "layers"], "\(row.name)")
            let values = summaries.compactMap { $0[row] }.filter(\.isFinite)
            #expect(entry["layers"] as? Int == values.count, "\(row.name)")
        }
        // The fleet's efficiency is the layers' formula on the summed counters, at the layers' scale.
        let totals = try #require(root["totals"] as? [String: Any])
        let tokens = summaries.reduce(0) { $0 + $1.totalTokens },
            dropped = summaries.reduce(0) { $0 + $1.tokensDropped }
        #expect(
            totals["routing_efficiency"] as? Double
                == Measures.routingEfficiency(tokens: tokens, dropped: dropped, scale: Measures.percent))
    }

    @Test func gaugeRowsInTheExposition() throws {
        let registry = try MetricsViewTests.registry(seed: 5, layers: 4, decisions: 12)
        for perExpert in [true, false] {
            let text = String(
                decoding: MetricsRenderer.render(
                    registry.metricsViews(), daemon: GoldenMetricsTests.fixedDaemon,
                    format: .prometheusText, expertSeries: perExpert ? .all : .none),
                as: UTF8.self)
            var previous = text.startIndex
            for row in LayerMeasure.all {
                guard let gauge = row.gauge else { continue }
                let present = text.range(of: "# HELP \(gauge.name) \(gauge.help)\n# TYPE \(gauge.name) gauge\n")
                if case .perExpert = row.value, !perExpert {
                    #expect(present == nil, "\(gauge.name)")
                    continue
                }
                let found = try #require(present, "\(gauge.name)")
                // Families in table order.
                #expect(found.lowerBound >= previous, "\(gauge.name)")
                previous = found.lowerBound
                // A sample wherever a layer has a value (no layer of these has a demand, for one).
                let valued = registry.metricsViews().contains { $0.gaugeValue(row) != nil }
                if case .perLayer = row.value {
                    #expect(text.contains("\n\(gauge.name){layer=\"") == valued, "\(gauge.name)")
                } else {
                    #expect(text.contains("\n\(gauge.name){layer=\""), "\(gauge.name)")
                }
            }
        }
    }
}
