import Foundation
import HTTPCore
import MoEStats
import TestTools
import Testing

@testable import MoEDaemon

/// The whole exposition for a fixed input, compared line by line with a golden copy,
/// `Tests/Fixtures/golden-metrics.txt`: any change to a name, a label, HELP text, ordering or number
/// formatting shows up here first. After an intended change, rewrite the file from the current
/// output with `MOE_UPDATE_GOLDEN=1 swift test --filter GoldenMetricsTests` and review its diff.
@Suite struct GoldenMetricsTests {
    static let goldenURL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent()  // MoEDaemonTests
        .deletingLastPathComponent()  // Tests
        .appendingPathComponent("Fixtures/golden-metrics.txt")

    /// The golden text exposition; with `MOE_UPDATE_GOLDEN=1`, the current output, written to the file first.
    static func goldenText() throws -> String {
        if ProcessInfo.processInfo.environment["MOE_UPDATE_GOLDEN"] == "1" {
            let rendered = try render(.prometheusText)
            try Data(rendered.utf8).write(to: goldenURL, options: .atomic)
            return rendered
        }
        let data = try #require(
            FileManager.default.contents(atPath: goldenURL.path), "golden file \(goldenURL.path) is missing")
        return String(decoding: data, as: UTF8.self)
    }

    static func render(_ format: ExpositionFormat) throws -> String {
        let (registry, daemon) = try goldenInput()
        return String(
            decoding: MetricsRenderer.render(
                registry.snapshots(), daemon: daemon, format: format,
                expertSeries: .all), as: UTF8.self)
    }

    /// The fixed input of the golden exposition.
    static func goldenInput() throws -> (LayerRegistry, MetricsRenderer.DaemonState) {
        var c = StatsConfiguration()
        c.latencyBucketsSeconds = [0.001, 0.01]
        let registry = LayerRegistry(configuration: c)
        _ = try registry.ingest(
            [
                RoutingDecision(
                    layer: "b", expertCapacity: 4, latencyMs: 0.5, expertCounts: [3, 1], totalTokens: 4,
                    tokensDropped: 1, loadBalanceLoss: .value(0.5), routerZLoss: .nonFinite, auxiliaryLoss: .value(0.25)
                ),
                RoutingDecision(layer: "a", latencyMs: 20, expertCounts: [2, 2, 0, 0], totalTokens: 4),
            ], defaultLayer: nil, now: 1000)
        let daemon = MetricsRenderer.DaemonState(
            counters: ([(.init(route: "/v1/decisions", code: 200), 1)], [("malformed", 0)]),
            openConnections: 2, layers: 2,
            process: ProcessMetrics(
                residentMemoryBytes: 1024, cpuSeconds: 0.5, openFDs: 7, maxFDs: 1024,
                startTimeSeconds: 1.7e9),
            version: "9.9.9")
        return (registry, daemon)
    }

    func compare(_ actual: String, _ golden: String) {
        let a = actual.split(separator: "\n", omittingEmptySubsequences: false)
        let g = golden.split(separator: "\n", omittingEmptySubsequences: false)
        for i in 0..<max(a.count, g.count) {
            let al = i < a.count ? String(a[i]) : "<none>"
            let gl = i < g.count ? String(g[i]) : "<none>"
            if al != gl {
                Issue.record("line \(i + 1) differs:\n  got:      \(al)\n  expected: \(gl)")
                return
            }
        }
    }

    @Test func textFormat() throws {
        compare(try Self.render(.prometheusText), try Self.goldenText())
    }

    @Test func openMetricsDiffersOnlyWhereTheFormatsDo() throws {
        let om = try Self.render(.openMetrics)
        // Counter families lose `_total` in HELP and TYPE, the build info is an `info` family
        // without `_info`, and the exposition ends with `# EOF`; nothing else differs.
        var expected = try Self.goldenText()
        for name in [
            "moe_routing_decisions", "moe_routing_tokens", "moe_routing_dropped_tokens", "moe_expert_tokens",
            "moe_routing_nonfinite_losses", "moe_routing_late_decisions", "moe_routing_capacity_tokens",
            "moe_routing_capacity_used_tokens",
            "moe_metricsd_http_requests", "moe_metricsd_rejected_decisions", "process_cpu_seconds",
        ] {
            expected = expected.replacingOccurrences(of: "# HELP \(name)_total ", with: "# HELP \(name) ")
                .replacingOccurrences(of: "# TYPE \(name)_total ", with: "# TYPE \(name) ")
        }
        expected = expected.replacingOccurrences(
            of: "# HELP moe_metricsd_build_info ", with: "# HELP moe_metricsd_build "
        )
        .replacingOccurrences(of: "# TYPE moe_metricsd_build_info gauge", with: "# TYPE moe_metricsd_build info")
        expected += "# EOF\n"
        compare(om, expected)
    }
}

/// The metrics-only view and the fast rendering paths against the slow ones they replace: the
/// full summary for every exported value, string-label samples for prepared ones, and
/// `String`-built numbers for numbers written as bytes.
@Suite struct MetricsViewTests {
    /// A registry with layers in varied states: dead experts, zero-token decisions, workers, some
    /// latencies (in and past the buckets), non-finite losses, capacity or none.
    static func registry(seed: UInt64, layers: Int = 6, decisions: Int = 40) throws -> LayerRegistry {
        var c = StatsConfiguration()
        c.latencyBucketsSeconds = [0.0005, 0.002, 0.05]
        c.defaultWindow = 7
        let registry = LayerRegistry(configuration: c)
        var rng = SplitMix64(seed: seed)
        for d in 0..<decisions {
            var batch = [RoutingDecision]()
            for l in 0..<layers {
                let experts = 1 + l * 3
                let total = rng.next() % 3 == 0 && d % 5 == 0 ? 0 : 1 + rng.next() % 500
                // Expert 0 of odd layers never gets a token; others only now and then.
                let counts = (0..<experts).map { e -> UInt64 in
                    if total == 0 || (e == 0 && l % 2 == 1) || rng.next() % 4 == 0 { return 0 }
                    return rng.next() % (total + 1)
                }
                let loss: Loss = rng.next() % 7 == 0 ? .nonFinite : .value(Double(rng.next() % 1000) / 997)
                batch.append(
                    RoutingDecision(
                        layer: "layer.\(l)", worker: rng.next() % 3 == 0 ? nil : "w\(rng.next() % 4)",
                        expertCapacity: l % 3 == 0 ? nil : Int(1 + total / 2),
                        latencyMs: rng.next() % 2 == 0 ? nil : Double(rng.next() % 100_000) / 1000,
                        expertCounts: counts, totalTokens: total, tokensDropped: total / 7,
                        loadBalanceLoss: loss, routerZLoss: .value(Double(rng.next() % 100) * 0.013),
                        auxiliaryLoss: l % 2 == 0 ? .absent : .value(0.1)))
            }
            _ = try registry.ingest(batch, defaultLayer: nil, now: Double(1000 + d * 10))
        }
        return registry
    }

    /// Equality that treats two NaNs alike (a view value and its summary twin).
    static func same(_ a: Double?, _ b: Double?) -> Bool {
        switch (a, b) {
        case (nil, nil): true
        case (let x?, let y?): x.bitPattern == y.bitPattern || (x.isNaN && y.isNaN)
        default: false
        }
    }

    @Test(arguments: [1, 2, 3] as [UInt64])
    func viewMatchesTheSummary(seed: UInt64) throws {
        let registry = try Self.registry(seed: seed)
        let snapshots = registry.snapshots()
        let views = registry.metricsViews()
        #expect(views.map(\.layer) == snapshots.map(\.layer))
        #expect(views.count == 6)
        for (view, snapshot) in zip(views, snapshots) {
            let s = snapshot.summary(window: nil)
            #expect(view.experts == s.experts)
            #expect(view.totalRoutings == s.totalRoutings && view.totalTokens == s.totalTokens)
            #expect(view.tokensDropped == s.tokensDropped)
            #expect(view.expertTokens == s.expertTokenCounts)
            #expect(view.expertUtilization.map(\.bitPattern) == s.expertUtilization.map(\.bitPattern))
            // Every gauge row: the view's series and the summary's own input give the same bits;
            // rows reported at the same scale in both are the JSON field itself.
            let full = snapshot.measureInput(window: nil)
            for row in LayerMeasure.all {
                guard let gauge = row.gauge, case .perLayer = row.value else { continue }
                #expect(Self.same(view.gaugeValue(row), row.unitValue(full).map { $0 * gauge.scale }), "\(row.name)")
                if row.jsonScale == gauge.scale { #expect(Self.same(view.gaugeValue(row), s[row]), "\(row.name)") }
            }
            #expect(view.gaugeValue(.deadExperts) == Double(s.balance.deadExperts))
            #expect(view.loadBalanceLoss == snapshot.loadBalanceLoss && view.routerZLoss == snapshot.routerZLoss)
            #expect(view.auxiliaryLoss == snapshot.auxiliaryLoss && view.nonfiniteLosses == s.nonfiniteLosses)
            #expect(view.latencyHistogram == snapshot.latencyHistogram)
            #expect(view.capacity == snapshot.capacity)
            #expect(view.lastUpdated == snapshot.lastUpdated)
            #expect(view.workerLastSeen.sorted() == snapshot.workers.map(\.lastSeen).sorted())
            for (now, ttl) in [(1000.0, nil), (1300, 50), (1400, 5), (900, 1)] as [(Double, Double?)] {
                #expect(view.workerCounts(now: now, ttl: ttl) == snapshot.workerCounts(now: now, ttl: ttl))
                if let ttl { #expect(view.isIdle(now: now, ttl: ttl) == snapshot.isIdle(now: now, ttl: ttl)) }
            }
            // The view built from the full snapshot is the same view.
            let fromSnapshot = LayerMetrics(snapshot)
            #expect(fromSnapshot.expertUtilization.map(\.bitPattern) == view.expertUtilization.map(\.bitPattern))
            #expect(fromSnapshot.latencyHistogram == view.latencyHistogram)
            for row in LayerMeasure.all where row.gauge != nil {
                #expect(Self.same(fromSnapshot.gaugeValue(row), view.gaugeValue(row)), "\(row.name)")
            }
        }
        // Layers, experts and seeds above must exercise the cases the view handles specially.
        #expect(
            views.contains { $0.gaugeValue(.deadExperts)! > 0 } && views.contains { $0.gaugeValue(.deadExperts) == 0 })
        #expect(views.contains { $0.capacity.totalCapacity == 0 } && views.contains { $0.capacity.totalCapacity > 0 })
        #expect(views.contains { $0.gaugeValue(.entropy) == nil } && views.contains { $0.gaugeValue(.entropy) != nil })
    }

    @Test(arguments: [ExpositionFormat.prometheusText, .openMetrics])
    func viewsAndSnapshotsRenderTheSameBytes(format: ExpositionFormat) throws {
        let registry = try Self.registry(seed: 9)
        let daemon = MetricsRenderer.DaemonState(
            counters: ([(.init(route: "/metrics", code: 200), 3)], [("invalid", 2)]), openConnections: 1, layers: 6,
            process: ProcessMetrics(
                residentMemoryBytes: 5e6, cpuSeconds: 1.25, openFDs: nil, maxFDs: nil,
                startTimeSeconds: nil),
            version: "1.0")
        for perExpert in [true, false] {
            let a = MetricsRenderer.render(
                registry.snapshots(), daemon: daemon, format: format, expertSeries: perExpert ? .all : .none,
                now: 1300, workerTTL: 60)
            let b = MetricsRenderer.render(
                registry.metricsViews(), daemon: daemon, format: format,
                expertSeries: perExpert ? .all : .none, now: 1300, workerTTL: 60)
            // Views out of name order are sorted like snapshots.
            let c = MetricsRenderer.render(
                Array(registry.metricsViews().reversed()), daemon: daemon, format: format,
                expertSeries: perExpert ? .all : .none, now: 1300, workerTTL: 60)
            #expect(a == b)
            #expect(a == c)
            let text = String(decoding: a, as: UTF8.self)
            #expect(text.contains("moe_expert_utilization_ratio{layer=\"layer.3\",expert=\"9\"} ") == perExpert)
            #expect(text.contains("moe_routing_latency_seconds_bucket{layer=\"layer.5\",le=\"+Inf\"} "))
            #expect(text.contains("moe_routing_workers{layer=\"layer.0\",state=\"stale\"} "))
        }
    }

    @Test func repeatedScrapesAreIdentical() throws {
        // The second render reserves from the first one's size; the bytes must not change.
        let registry = try Self.registry(seed: 4, layers: 3)
        let daemon = GoldenMetricsTests.fixedDaemon
        let first = MetricsRenderer.render(
            registry.metricsViews(), daemon: daemon, format: .prometheusText,
            expertSeries: .all)
        let second = MetricsRenderer.render(
            registry.metricsViews(), daemon: daemon, format: .prometheusText,
            expertSeries: .all)
        #expect(first == second)
        #expect(first.count > 1000)
    }
}

extension GoldenMetricsTests {
    static let fixedDaemon = MetricsRenderer.DaemonState(
        counters: ([], []), openConnections: 0, layers: 0,
        process: ProcessMetrics(
            residentMemoryBytes: nil, cpuSeconds: nil, openFDs: nil, maxFDs: nil, startTimeSeconds: nil),
        version: "0")
}

/// The streamed bodies (`MetricsBody`, `SummaryBody`, `GzipSource`) give the very bytes of the
/// whole renderers, in pieces of about the size asked for.
@Suite struct StreamedBodyTests {
    /// Drains `source` in pieces of at most about `piece` bytes; returns the pieces.
    static func pieces(_ source: any HTTPBodySource, piece: Int) -> [[UInt8]] {
        var all: [[UInt8]] = []
        var more = true
        while more {
            var out: [UInt8] = []
            more = source.next(into: &out, atMost: piece)
            #expect(!out.isEmpty || !more, "a piece that is not the last is never empty")
            all.append(out)
        }
        return all
    }

    @Test(arguments: [ExpositionFormat.prometheusText, .openMetrics], [64, 4096])
    func metricsInPiecesEqualsTheWholeExposition(format: ExpositionFormat, piece: Int) throws {
        let registry = try MetricsViewTests.registry(seed: 9)
        let daemon = GoldenMetricsTests.fixedDaemon
        for perExpert in [true, false] {
            let whole = MetricsRenderer.render(
                registry.metricsViews(), daemon: daemon, format: format, expertSeries: perExpert ? .all : .none,
                now: 1300, workerTTL: 60)
            let parts = Self.pieces(
                MetricsBody(
                    registry.metricsViews(), daemon: daemon, format: format, expertSeries: perExpert ? .all : .none,
                    now: 1300, workerTTL: 60),
                piece: piece)
            #expect(Array(parts.joined()) == whole)
            #expect(parts.count > whole.count / (piece + 4096), "pieces, not one body")
            // Each piece ends a line: a piece is a whole number of lines of the exposition.
            for p in parts where !p.isEmpty { #expect(p.last == UInt8(ascii: "\n")) }
            // No piece runs past the size asked for by more than one layer's lines of a family.
            for p in parts { #expect(p.count <= piece + 64 * 1024) }
        }
    }

    @Test func theGoldenExpositionStreamsByteForByte() throws {
        let golden = try GoldenMetricsTests.goldenText()
        let (registry, daemon) = try GoldenMetricsTests.goldenInput()
        let parts = Self.pieces(
            MetricsBody(registry.metricsViews(), daemon: daemon, format: .prometheusText, expertSeries: .all),
            piece: 100)
        #expect(parts.count > 10)
        #expect(String(decoding: Array(parts.joined()), as: UTF8.self) == golden)
    }

    @Test(arguments: [1, 300])
    func summaryInPiecesEqualsTheWholeSummary(piece: Int) throws {
        let registry = try MetricsViewTests.registry(seed: 9)
        let summaries = registry.snapshots().map { $0.summary(window: nil, now: 1300, workerTTL: 60) }
        let whole = Array(Self.pieces(SummaryBody(summaries), piece: Int.max).joined())
        #expect(whole.first == UInt8(ascii: "{") && whole.last == 0x0A)
        let parts = Self.pieces(SummaryBody(summaries), piece: piece)
        #expect(Array(parts.joined()) == whole)
        if piece == 1 { #expect(parts.count == summaries.count + 1) }
    }

    @Test func gzipSourceInflatesToThePlainBody() throws {
        let registry = try MetricsViewTests.registry(seed: 9)
        let daemon = GoldenMetricsTests.fixedDaemon
        let plain = MetricsRenderer.render(
            registry.metricsViews(), daemon: daemon, format: .prometheusText, expertSeries: .all)
        let source = try #require(
            GzipSource(
                MetricsBody(registry.metricsViews(), daemon: daemon, format: .prometheusText, expertSeries: .all)))
        let parts = Self.pieces(source, piece: 512)
        #expect(parts.count > 1)
        let inflated = try #require(inflateWithZlib(Array(parts.joined())))
        #expect(inflated == plain)
    }
}
