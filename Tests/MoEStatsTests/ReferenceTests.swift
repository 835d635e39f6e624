import MoEStats
import Testing

/// The seven unit tests of the reference (`stats.rs`), ported to the registry. Where the
/// reference only asserted "> 0", the hand-computed value is asserted as well.
@Suite struct ReferenceTests {
    @Test func routingStatsCreation() {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        #expect(registry.layerCount == 0)
        #expect(registry.snapshot("L0") == nil)
        #expect(registry.snapshots().isEmpty)
    }

    @Test func routingStatsRecording() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        let n = try registry.ingest(
            [decision([5, 3, 2, 0], tokens: 10, lbl: 0.1, z: 0.05, aux: 0.15)],
            defaultLayer: nil, now: 1)
        #expect(n == 1)
        let s = try #require(registry.snapshot("L0")).summary(window: nil)
        #expect(s.totalRoutings == 1)
        #expect(s.totalTokens == 10)
        #expect(s.tokensDropped == 0)
        #expect(s.routingEfficiency == 100)
        #expect(s.expertUtilization.count == 4)
        #expect(s.expertUtilization == [0.5, 0.3, 0.2, 0])
    }

    @Test func latencyStats() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        for ms in [10.0, 20, 30] {
            _ = try registry.ingest([decision([1, 1], latencyMs: ms)], defaultLayer: nil, now: 1)
        }
        let l = try #require(registry.snapshot("L0")).summary(window: nil).latency
        #expect(l.count == 3)
        #expect(l.averageMs == 20)
        #expect(l.minMs == 10)
        #expect(l.maxMs == 30)
    }

    @Test func utilizationCV() throws {
        // Utilization 0.1, 0.2, 0.3, 0.4 as in the reference: mean 0.25, population sd sqrt(0.0125).
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest([decision([1, 2, 3, 4], tokens: 10)], defaultLayer: nil, now: 1)
        let summary = try #require(registry.snapshot("L0")).summary(window: nil)
        let cv = try #require(summary.utilizationCV)
        #expect(cv > 0)
        #expect(close(cv, 0.0125.squareRoot() / 0.25))
    }

    @Test func capacityStats() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest([decision([50, 75, 25, 100], tokens: 250, capacity: 100)], defaultLayer: nil, now: 1)
        let c = try #require(registry.snapshot("L0")).summary(window: nil).capacity
        let average = try #require(c.averageUtilization)
        let peak = try #require(c.peakUtilization)
        #expect(average > 0)
        #expect(peak > 0)
        #expect(close(peak, 250.0 / 400))  // u = sum / (E x capacity)
        #expect(close(average, 0.1 * 250 / 400))  // EMA alpha 0.1 from 0
    }

    @Test func throughputStats() throws {
        // 10 routings of 100 tokens at 50 ms: (100 x 1000) / 50 = 2000 tokens/s, 1000 / 50 = 20 routings/s.
        let registry = LayerRegistry(configuration: StatsConfiguration())
        let batch = (0..<10).map { _ in decision([60, 40], tokens: 100, latencyMs: 50) }
        _ = try registry.ingest(batch, defaultLayer: nil, now: 1)
        let t = try #require(registry.snapshot("L0")).summary(window: nil).throughput
        #expect(t.tokensPerRouting == 100)
        #expect(t.tokensPerSecond == 2000)
        #expect(t.routingsPerSecond == 20)
    }

    @Test func performanceMonitor() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest(
            [decision([10, 20, 30], tokens: 60, lbl: 0.1, z: 0.05, aux: 0.15, latencyMs: 25)],
            defaultLayer: nil, now: 1)
        let s = try #require(registry.snapshot("L0")).summary(window: nil)
        #expect(s.totalRoutings == 1)
        #expect(s.totalTokens == 60)
        #expect(s.latency.count == 1)
    }
}
