import JSONOutput
import Testing

@testable import MoEStats

/// The formulas of `Measures` at their edges: no value, all zeros, one expert.
@Suite struct MeasureTests {
    @Test func mean() {
        #expect(Measures.mean(sum: 0, count: 0) == nil)
        #expect(Measures.mean(sum: 5, count: 0 as UInt64) == nil)
        #expect(Measures.mean(sum: 0, count: 3) == 0)
        #expect(Measures.mean(sum: 3, count: 2) == 1.5)
    }

    @Test func routingEfficiency() {
        #expect(Measures.routingEfficiency(tokens: 0, dropped: 0) == nil)
        #expect(Measures.routingEfficiency(tokens: 8, dropped: 0) == 1)
        #expect(Measures.routingEfficiency(tokens: 8, dropped: 2) == 0.75)
        #expect(Measures.routingEfficiency(tokens: 8, dropped: 2, scale: Measures.percent) == 75)
        #expect(Measures.routingEfficiency(tokens: 8, dropped: 8) == 0)
        // More dropped than routed cannot come from a layer; the share is clamped, not trapped.
        #expect(Measures.routingEfficiency(tokens: 8, dropped: 9) == 0)
        // The percentage is the ratio's own quotient times 100, bit for bit.
        for (t, d) in [(3, 1), (7, 3), (1000, 1), (UInt64.max, 12345)] as [(UInt64, UInt64)] {
            let r = Measures.routingEfficiency(tokens: t, dropped: d)!
            #expect(Measures.routingEfficiency(tokens: t, dropped: d, scale: Measures.percent) == r * 100)
        }
    }

    @Test func capacityUtilization() {
        #expect(Measures.capacityUtilization(used: 0, offered: 0) == nil)
        #expect(Measures.capacityUtilization(used: 3, offered: 0) == nil)
        #expect(Measures.capacityUtilization(used: 0, offered: 8) == 0)
        #expect(Measures.capacityUtilization(used: 4, offered: 8) == 0.5)
        #expect(Measures.capacityUtilization(used: 4, offered: 8, scale: Measures.percent) == 50)
    }

    @Test func perSecond() {
        #expect(Measures.perSecond(perDecision: 4, averageLatencyMs: nil) == nil)
        #expect(Measures.perSecond(perDecision: 4, averageLatencyMs: 0) == nil)
        #expect(Measures.perSecond(perDecision: 4, averageLatencyMs: 2) == 2000)
        #expect(Measures.perSecond(perDecision: 1, averageLatencyMs: 4) == 250)
    }

    @Test func coefficientOfVariation() {
        #expect(Measures.coefficientOfVariation([], sum: 0) == nil)
        #expect(Measures.coefficientOfVariation([0, 0, 0], sum: 0) == nil)
        #expect(Measures.coefficientOfVariation([0.5], sum: 0.5) == 0)
        #expect(Measures.coefficientOfVariation([0.25, 0.25], sum: 0.5) == 0)
        #expect(Measures.coefficientOfVariation([1, 0], sum: 1) == 1)
    }

    @Test func maxViolation() {
        #expect(Measures.maxViolation([]) == nil)
        #expect(Measures.maxViolation([0, 0]) == nil)
        #expect(Measures.maxViolation([5]) == 0)
        #expect(Measures.maxViolation([3, 1]) == 0.5)
        #expect(Measures.maxViolation([4, 0, 0, 0]) == 3)
    }

    @Test func balancedness() {
        #expect(Measures.balancedness([]) == nil)
        #expect(Measures.balancedness([0, 0]) == nil)
        #expect(Measures.balancedness([5]) == 1)
        #expect(Measures.balancedness([2, 2]) == 1)
        #expect(Measures.balancedness([3, 1]) == 2.0 / 3)
    }

    @Test func normalizedEntropy() {
        #expect(Measures.normalizedEntropy([]) == nil)
        #expect(Measures.normalizedEntropy([0, 0]) == nil)
        #expect(Measures.normalizedEntropy([5]) == nil)  // log 1 = 0: no spread to measure
        #expect(Measures.normalizedEntropy([3, 3]) == 1)
        #expect(Measures.normalizedEntropy([4, 0]) == 0)
        #expect(close(Measures.normalizedEntropy([2, 2, 0, 0]), 0.5))
    }

    @Test func deadExpertRule() {
        #expect(Measures.isDead(lastActive: 0, routings: 0, window: 10))  // never received a token
        #expect(Measures.isDead(lastActive: 0, routings: 5, window: 10))
        #expect(!Measures.isDead(lastActive: 5, routings: 5, window: 1))
        #expect(!Measures.isDead(lastActive: 1, routings: 10, window: 10))
        #expect(Measures.isDead(lastActive: 1, routings: 11, window: 10))
        // A window below 1 counts as 1: only the newest decision keeps an expert alive.
        #expect(!Measures.isDead(lastActive: 7, routings: 7, window: 0))
        #expect(Measures.isDead(lastActive: 6, routings: 7, window: -3))
    }

    @Test func trend() {
        #expect(Measures.trend([], window: 10) == 0)
        #expect(Measures.trend([4], window: 10) == 0)
        #expect(Measures.trend([0, 0, 0], window: 10) == 0)
        #expect(Measures.trend([1, 2, 3], window: 10) == 1)
        #expect(Measures.trend([9, 1, 3], window: 2) == 2)  // the newest two only
        #expect(Measures.trend([1, 2, 3], window: 1) == 0)
    }

    @Test func percentile() {
        #expect(Measures.percentile(50, ofSorted: []) == nil)
        #expect(Measures.percentile(99, ofSorted: [7]) == 7)
        #expect(Measures.percentile(0, ofSorted: [1, 2, 3]) == 1)
        #expect(Measures.percentile(100, ofSorted: [1, 2, 3]) == 3)
        let hundred = (1...100).map(Double.init)
        #expect(Measures.percentile(50, ofSorted: hundred) == 50)  // index floor(0.5 x 99) = 49
        #expect(Measures.percentile(99, ofSorted: hundred) == 99)
    }
}

/// The table of layer measures itself: names, keys, places, and that gauges need only what
/// `/metrics` copies.
@Suite struct LayerMeasureTableTests {
    @Test func namesAndKeysAreUnique() {
        let names = LayerMeasure.all.map(\.name)
        #expect(Set(names).count == names.count)
        let places = LayerMeasure.all.compactMap { $0.summary.map { "\($0.section).\($0.key)" } }
        #expect(Set(places).count == places.count)
        let gauges = LayerMeasure.all.compactMap { $0.gauge?.name }
        #expect(Set(gauges).count == gauges.count)
        #expect(LayerMeasure.headlines.map(\.name) == LayerMeasure.all.filter(\.headline).map(\.name))
        // Names are JSON keys written without escaping.
        for name in names + LayerMeasure.all.compactMap({ $0.summary?.key }) {
            #expect(
                name.allSatisfy { $0.isASCII && ($0.isLowercase || $0.isNumber || $0 == "_" || $0 == ".") }, "\(name)")
        }
    }

    @Test func gaugeNamesFollowPrometheusNaming() {
        for row in LayerMeasure.all {
            guard let gauge = row.gauge else { continue }
            let name = gauge.name
            // The metric name grammar, our namespace, and no suffix that Prometheus reserves for
            // counters, summaries and histograms.
            #expect(name.first.map { $0.isLetter || $0 == "_" } == true, "\(name)")
            #expect(name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }, "\(name)")
            #expect(name.hasPrefix("moe_"), "\(name)")
            for suffix in ["_total", "_count", "_sum", "_bucket", "_created", "_info"] {
                #expect(!name.hasSuffix(suffix), "\(name)")
            }
            #expect(!name.contains("__"), "\(name)")
            #expect(!gauge.help.isEmpty && !gauge.help.contains("\n") && !gauge.help.contains("\\"), "\(name)")
            #expect(gauge.scale > 0, "\(name)")
        }
    }

    @Test func everyScalarRowHasAPlaceOrAGauge() {
        for row in LayerMeasure.all {
            switch row.value {
            case .perLayer: #expect(row.summary != nil || row.gauge != nil || row.headline, "\(row.name)")
            case .perExpert: #expect(row.gauge != nil && !row.headline && row.summary == nil, "\(row.name)")
            }
            // Headline rows are spread across layers: one number each.
            if row.headline, case .perExpert = row.value { Issue.record("\(row.name): per-expert headline") }
        }
    }

    /// A gauge is computed from what `/metrics` copies: the same value with or without history.
    @Test(arguments: [nil, 1, 3] as [Int?])
    func gaugesNeedNoHistory(window: Int?) throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest(
            [
                decision([3, 1, 0], dropped: 1, layer: "a", lbl: 0.5, latencyMs: 2, capacity: 4),
                decision([0, 0, 0], tokens: 0, layer: "a"),
                decision([2, 2, 5], layer: "a", latencyMs: 7),
                decision([5], layer: "one"),
                decision([0, 0], tokens: 0, layer: "zero"),
            ], defaultLayer: nil, now: 1)
        for snapshot in registry.snapshots() {
            let full = snapshot.measureInput(window: window)
            let bare = LayerMeasureInput(
                totals: snapshot.totals, window: window ?? snapshot.defaultWindow, history: nil)
            for row in LayerMeasure.all where row.gauge != nil {
                #expect(
                    row.unitValue(full)?.bitPattern == row.unitValue(bare)?.bitPattern, "\(snapshot.layer) \(row.name)")
            }
        }
    }

    @Test func everyPlacedRowIsInTheSummary() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest([decision([3, 1], lbl: 0.5, latencyMs: 2, capacity: 4)], defaultLayer: nil, now: 1)
        let summary = try #require(registry.snapshot("L0")).summary(window: nil)
        #expect(summary.measures.count == LayerMeasure.all.count)
        var w = JSONWriter()
        summary.writeJSON(&w)
        let text = w.string
        for row in LayerMeasure.all {
            guard let place = row.summary else { continue }
            let key = "\"\(place.key)\":"
            if let section = place.section.key {
                let start = try #require(text.range(of: "\"\(section)\":{"), "\(section)")
                let end = try #require(text[start.upperBound...].firstIndex(of: "}"))
                #expect(text[start.upperBound..<end].contains(key), "\(row.name)")
            } else {
                #expect(text.contains(key), "\(row.name)")
            }
            #expect(summary[row] == row.jsonValue(registry.snapshot("L0")!.measureInput(window: nil)), "\(row.name)")
        }
    }
}
