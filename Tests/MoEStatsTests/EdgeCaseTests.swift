import MoEStats
import Testing

@Suite struct EdgeCaseTests {
    @Test func zeroTokens() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest([decision([0, 0], tokens: 0)], defaultLayer: nil, now: 1)
        let s = try #require(registry.snapshot("L0")).summary(window: nil)
        #expect(s.totalRoutings == 1)
        #expect(s.routingEfficiency == nil)  // the reference reports 0 before any token
        #expect(s.expertUtilization == [0, 0])
        #expect(s.utilizationCV == nil)
        #expect(s.mostUtilizedExpert == .init(expert: 1, utilization: 0))  // last maximum
        #expect(s.leastUtilizedExpert == .init(expert: 0, utilization: 0))  // first minimum
        #expect(s.averageLoadBalanceLoss == nil)
        #expect(s.loadVariance.last == 0)
        #expect(
            s.latency == .init(count: 0, averageMs: nil, minMs: nil, maxMs: nil, p50Ms: nil, p95Ms: nil, p99Ms: nil))
        #expect(s.throughput.tokensPerRouting == 0)
        #expect(s.throughput.tokensPerSecond == nil)
        #expect(s.throughput.routingsPerSecond == nil)
        #expect(s.balance.maxViolation == nil)
        #expect(s.balance.maxViolationLast == nil)
        #expect(s.balance.balancedness == nil)
        #expect(s.balance.entropy == nil)
        #expect(s.balance.deadExperts == 2)
    }

    @Test func zeroLatencyGivesNoRates() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest([decision([2, 2], latencyMs: 0)], defaultLayer: nil, now: 1)
        let s = try #require(registry.snapshot("L0")).summary(window: nil)
        #expect(s.latency.averageMs == 0)
        #expect(s.latency.minMs == 0)
        #expect(s.throughput.tokensPerSecond == nil)
        #expect(s.throughput.routingsPerSecond == nil)
    }

    @Test func singleDecision() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest([decision([3, 1], lbl: 0.25, latencyMs: 7, capacity: 2)], defaultLayer: nil, now: 1)
        let s = try #require(registry.snapshot("L0")).summary(window: nil)
        #expect(s.expertUtilization == [0.75, 0.25])
        #expect(s.averageLoadBalanceLoss == 0.25)
        #expect(s.averageRouterZLoss == nil)  // never sent
        #expect(s.loadVariance.historyLength == 1)
        #expect(s.loadVariance.last == 1)  // mean 2, (1 + 1) / 2
        #expect(s.loadVariance.trend == 0)  // fewer than two points
        #expect(s.latency.p50Ms == 7 && s.latency.p99Ms == 7)
        #expect(s.capacity.peakUtilization == 1)  // 4 / (2 x 2)
        #expect(close(s.capacity.averageUtilization, 0.1))
        #expect(s.balance.maxViolation == 0.5)  // (3 - 2) / 2
        #expect(s.balance.maxViolationLast == 0.5)
        #expect(s.balance.balancedness == 2.0 / 3)
        #expect(s.balance.entropy.map { $0 > 0 && $0 < 1 } == true)
    }

    @Test func singleExpertHasNoEntropy() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest([decision([5])], defaultLayer: nil, now: 1)
        let b = try #require(registry.snapshot("L0")).summary(window: nil).balance
        #expect(b.entropy == nil)
        #expect(b.balancedness == 1)
        #expect(b.maxViolation == 0)
    }

    @Test func ringBuffersKeepTheNewest1000() throws {
        // Decision i (1...1500) has counts [2i, 0] (variance i^2) and latency i ms.
        let registry = LayerRegistry(configuration: StatsConfiguration())
        for i in 1...1500 {
            _ = try registry.ingest(
                [decision([UInt64(2 * i), 0], latencyMs: Double(i))], defaultLayer: nil, now: Double(i))
        }
        let snap = try #require(registry.snapshot("L0"))
        #expect(snap.loadVariances.count == 1000)
        #expect(snap.loadVariances.first == Double(501 * 501))
        #expect(snap.loadVariances.last == Double(1500 * 1500))
        #expect(snap.recentLatenciesMs == (501...1500).map(Double.init))
        let s = snap.summary(window: 3)
        #expect(s.totalRoutings == 1500)
        #expect(s.loadVariance.historyLength == 1000)
        #expect(s.loadVariance.last == Double(1500 * 1500))
        #expect(close(s.loadVariance.trend, Double(1500 * 1500 - 1498 * 1498) / 2))
        // count, mean, min and max over all 1500; percentiles over the last 1000 (501...1500).
        #expect(s.latency.count == 1500)
        #expect(s.latency.minMs == 1)
        #expect(s.latency.maxMs == 1500)
        #expect(close(s.latency.averageMs, 750.5))
        #expect(s.latency.p50Ms == Double(501 + 499))  // floor(0.50 x 999)
        #expect(s.latency.p95Ms == Double(501 + 949))  // floor(0.95 x 999)
        #expect(s.latency.p99Ms == Double(501 + 989))  // floor(0.99 x 999)
        #expect(snap.lastUpdated == 1500)
    }

    @Test func deadExpertsOverAWindow() throws {
        // Expert 0 gets tokens every time, expert 1 only in decision 1, expert 2 never.
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest(
            [decision([1, 1, 0]), decision([1, 0, 0]), decision([1, 0, 0])], defaultLayer: nil, now: 1)
        let snap = try #require(registry.snapshot("L0"))
        #expect(snap.summary(window: 1).balance.deadExpertIndices == [1, 2])
        #expect(snap.summary(window: 2).balance.deadExpertIndices == [1, 2])
        #expect(snap.summary(window: 3).balance.deadExpertIndices == [2])
        #expect(snap.summary(window: 100).balance.deadExperts == 1)
        #expect(snap.summary(window: nil).balance.deadExperts == 1)
    }

    @Test func defaultWindowComesFromTheConfiguration() throws {
        var config = StatsConfiguration()
        config.defaultWindow = 2
        let registry = LayerRegistry(configuration: config)
        _ = try registry.ingest(
            [decision([1, 1, 0]), decision([1, 0, 0]), decision([1, 0, 0])], defaultLayer: nil, now: 1)
        #expect(registry.snapshot("L0")?.summary(window: nil).loadVariance.window == 2)
        #expect(registry.snapshot("L0")?.summary(window: nil).balance.deadExperts == 2)
        config.defaultWindow = 3
        registry.update(configuration: config)
        #expect(registry.configuration == config)
        #expect(registry.snapshot("L0")?.summary(window: nil).balance.deadExperts == 1)
    }

    /// Two finite losses of 1.7e308 overflow a Double sum: the second is kept out and counted as
    /// non-finite, so the sum, its count and the average stay finite and consistent.
    @Test func lossSumsNeverOverflowToInfinity() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest(
            [
                decision([1, 1], lbl: 1.7e308, z: -1.7e308), decision([1, 1], lbl: 1.7e308, z: -1.7e308),
                decision([1, 1], lbl: 1, z: 1),
            ], defaultLayer: nil, now: 1)
        let s = try #require(registry.snapshot("L0"))
        #expect(s.loadBalanceLoss.sum == 1.7e308 + 1)
        #expect(s.loadBalanceLoss.count == 2)
        #expect(s.routerZLoss.sum == -1.7e308 + 1 && s.routerZLoss.count == 2)
        #expect(s.nonfiniteLosses == 2)
        #expect(s.summary(window: nil).averageLoadBalanceLoss?.isFinite == true)
    }

    /// Two latencies of 1.7e308 ms overflow the latency sum: the second is kept out of every
    /// latency statistic, so the histogram's sum stays finite and the throughput is not 0.
    @Test func latencySumNeverOverflowsToInfinity() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest(
            [
                decision([1, 1], latencyMs: 1.7e308), decision([1, 1], latencyMs: 1.7e308),
                decision([1, 1], latencyMs: 2),
            ],
            defaultLayer: nil, now: 1)
        let s = try #require(registry.snapshot("L0"))
        #expect(s.latencySumMs == 1.7e308 + 2)
        #expect(s.latencyCount == 2)
        #expect(s.latencyHistogram.sumSeconds.isFinite)
        #expect(s.latencyHistogram.count == 2)
        let summary = s.summary(window: nil)
        #expect(summary.latency.averageMs?.isFinite == true)
        #expect(summary.throughput.routingsPerSecond.map { $0 > 0 } == true)
    }

    @Test func perSecondIsNilForAnInfiniteAverage() {
        #expect(Measures.perSecond(perDecision: 1, averageLatencyMs: .infinity) == nil)
        #expect(Measures.perSecond(perDecision: 1, averageLatencyMs: 0) == nil)
        #expect(Measures.perSecond(perDecision: 2, averageLatencyMs: 4) == 500)
    }

    @Test func countersSaturateInsteadOfTrapping() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest(
            [decision([.max, 1], tokens: .max), decision([.max, 1], tokens: .max)], defaultLayer: nil, now: 1)
        let s = try #require(registry.snapshot("L0"))
        #expect(s.totalTokens == .max)
        #expect(s.expertTokens == [.max, 2])
    }
}
