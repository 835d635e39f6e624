import MoEStats
import Testing

/// Every statistic of one layer against values computed by hand.
@Suite struct StatisticsTests {
    /// Two decisions on 4 experts, top-2 (counts sum to 2 x tokens):
    /// D1 counts [4,2,2,0] of 4 tokens, losses 0.2 / 1.0 / 0.5, 2 ms, expert_capacity 3;
    /// D2 counts [2,2,2,2] of 4 tokens, 1 dropped, losses 0.4 / null / 0.7, 4 ms, capacity from
    /// top_k 2 and factor 2: ceil(floor(4 x 2 / 4) x 2) = 4.
    static func twoDecisions() throws -> LayerSummary {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        var d2 = decision([2, 2, 2, 2], tokens: 4, dropped: 1, lbl: 0.4, aux: 0.7, latencyMs: 4, topK: 2, factor: 2)
        d2.routerZLoss = .nonFinite
        _ = try registry.ingest(
            [decision([4, 2, 2, 0], tokens: 4, lbl: 0.2, z: 1.0, aux: 0.5, latencyMs: 2, capacity: 3), d2],
            defaultLayer: nil, now: 1_700_000_000)
        return try #require(registry.snapshot("L0")).summary(window: nil)
    }

    @Test func totalsEfficiencyAndLosses() throws {
        let s = try Self.twoDecisions()
        #expect(s.layer == "L0")
        #expect(s.experts == 4)
        #expect(s.totalRoutings == 2)
        #expect(s.totalTokens == 8)
        #expect(s.tokensDropped == 1)
        #expect(close(s.routingEfficiency, 87.5))
        #expect(close(s.averageLoadBalanceLoss, 0.3))
        #expect(close(s.averageRouterZLoss, 1.0))  // the null loss is kept out of the average
        #expect(close(s.averageAuxiliaryLoss, 0.6))
        #expect(s.nonfiniteLosses == 1)
    }

    @Test func utilization() throws {
        let s = try Self.twoDecisions()
        // Per decision count/tokens: [1, .5, .5, 0] and [.5, .5, .5, .5]; cumulative mean:
        #expect(s.expertUtilization == [0.75, 0.5, 0.5, 0.25])
        #expect(s.expertTokenCounts == [6, 4, 4, 2])
        // mean 0.5, population variance (0.0625 + 0 + 0 + 0.0625) / 4 = 0.03125
        #expect(close(s.utilizationCV, 0.03125.squareRoot() / 0.5))
        #expect(s.mostUtilizedExpert == .init(expert: 0, utilization: 0.75))
        #expect(s.leastUtilizedExpert == .init(expert: 3, utilization: 0.25))
        let u = s.utilizationSummary
        #expect(u.meanUtilization == 0.5)
        #expect(u.minUtilization == 0.25)
        #expect(u.maxUtilization == 0.75)
        #expect(u.utilizationCV == s.utilizationCV)
        #expect(u.routingEfficiency == s.routingEfficiency)
        #expect(u.averageLoadBalanceLoss == s.averageLoadBalanceLoss)
        #expect(u.averageRouterZLoss == s.averageRouterZLoss)
    }

    @Test func loadVariance() throws {
        let s = try Self.twoDecisions()
        // D1: mean 2, ((2)^2 + 0 + 0 + (-2)^2) / 4 = 2; D2: 0. Slope of (0, 2), (1, 0) is -2.
        #expect(s.loadVariance.last == 0)
        #expect(s.loadVariance.historyLength == 2)
        #expect(s.loadVariance.window == 100)
        #expect(close(s.loadVariance.trend, -2))
    }

    @Test func latencyAndThroughput() throws {
        let s = try Self.twoDecisions()
        #expect(s.latency == .init(count: 2, averageMs: 3, minMs: 2, maxMs: 4, p50Ms: 2, p95Ms: 2, p99Ms: 2))
        #expect(s.throughput.tokensPerRouting == 4)
        #expect(close(s.throughput.tokensPerSecond, 4 * 1000 / 3.0))
        #expect(close(s.throughput.routingsPerSecond, 1000 / 3.0))
    }

    @Test func capacity() throws {
        let c = try Self.twoDecisions().capacity
        // D1: 8 / (4 x 3) = 2/3; D2: 8 / (4 x 4) = 1/2. EMA: 0.1 x 2/3, then 0.1 x 1/2 + 0.9 x that.
        #expect(close(c.averageUtilization, 0.1 * 0.5 + 0.9 * 0.1 * 2 / 3))
        #expect(close(c.peakUtilization, 2.0 / 3))
        #expect(c.capacityExceededCount == 1)
        #expect(c.totalCapacity == 28)
        #expect(c.totalUsed == 16)
        #expect(close(c.overallUtilization, 16.0 / 28 * 100))
    }

    @Test func balance() throws {
        let b = try Self.twoDecisions().balance
        // Cumulative [6,4,4,2]: mean 4, max 6. Last [2,2,2,2].
        #expect(close(b.maxViolation, 0.5))
        #expect(b.maxViolationLast == 0)
        #expect(close(b.balancedness, 4.0 / 6))
        // -(.375 ln .375 + 2 x .25 ln .25 + .125 ln .125) / ln 4
        #expect(close(b.entropy, 0.9528195311147832, 1e-12))
        #expect(b.deadExperts == 0)
    }

    @Test func percentilesUseTheReferenceIndex() throws {
        // 100 samples 1...100 in shuffled order: sorted[floor(p/100 x 99)] = 50, 95, 99.
        let registry = LayerRegistry(configuration: StatsConfiguration())
        let values = (1...100).map(Double.init).shuffled()
        _ = try registry.ingest(values.map { decision([1], latencyMs: $0) }, defaultLayer: nil, now: 1)
        let l = try #require(registry.snapshot("L0")).summary(window: nil).latency
        #expect(l.p50Ms == 50)
        #expect(l.p95Ms == 95)
        #expect(l.p99Ms == 99)
        #expect(l.minMs == 1)
        #expect(l.maxMs == 100)
        #expect(close(l.averageMs, 50.5))
    }

    @Test func tiesPickLastMaximumAndFirstMinimum() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest([decision([3, 1, 3, 1], tokens: 8)], defaultLayer: nil, now: 1)
        let s = try #require(registry.snapshot("L0")).summary(window: nil)
        #expect(s.mostUtilizedExpert?.expert == 2)
        #expect(s.leastUtilizedExpert?.expert == 1)
    }

    @Test func trendOverWindow() throws {
        // Variances of [2k, 0] are k^2: 1, 4, 9, 16, 25. Window 2: 25 - 16; window 3: (25 - 9) / 2;
        // window 5: least squares of 1,4,9,16,25 over 0..4 = 6.
        let registry = LayerRegistry(configuration: StatsConfiguration())
        _ = try registry.ingest((1...5).map { decision([UInt64(2 * $0), 0]) }, defaultLayer: nil, now: 1)
        let snap = try #require(registry.snapshot("L0"))
        #expect(snap.loadVariances == [1, 4, 9, 16, 25])
        #expect(close(snap.summary(window: 2).loadVariance.trend, 9))
        #expect(close(snap.summary(window: 3).loadVariance.trend, 8))
        #expect(close(snap.summary(window: 5).loadVariance.trend, 6))
        #expect(close(snap.summary(window: 50).loadVariance.trend, 6))
        #expect(snap.summary(window: 1).loadVariance.trend == 0)
        #expect(snap.summary(window: 0).loadVariance.window == 1)
    }

    @Test func rawSumsForPrometheus() throws {
        var config = StatsConfiguration()
        config.latencyBucketsSeconds = [0.001, 0.002, 0.005]
        let registry = LayerRegistry(configuration: config)
        var d3 = decision([1, 1], lbl: 0.5, z: 0.25, latencyMs: 9)
        d3.auxiliaryLoss = .value(.infinity)
        _ = try registry.ingest(
            [
                decision([1, 1], lbl: 1, z: 2, aux: 3, latencyMs: 1),  // le 0.001 (boundary is inclusive)
                decision([4, 0], dropped: 1, lbl: 2, latencyMs: 1.5),  // le 0.002
                d3,  // above every bound: only +Inf
            ], defaultLayer: nil, now: 42.5)
        let s = try #require(registry.snapshot("L0"))
        #expect(s.totalTokens == 8)
        #expect(s.tokensDropped == 1)
        #expect(s.expertTokens == [6, 2])
        #expect(s.loadBalanceLoss == LossTotals(sum: 3.5, count: 3))
        #expect(s.routerZLoss == LossTotals(sum: 2.25, count: 2))
        #expect(s.auxiliaryLoss == LossTotals(sum: 3, count: 1))
        #expect(s.nonfiniteLosses == 1)
        #expect(s.latencyHistogram.upperBoundsSeconds == [0.001, 0.002, 0.005])
        #expect(s.latencyHistogram.cumulativeCounts == [1, 2, 2])
        #expect(s.latencyHistogram.count == 3)
        #expect(close(s.latencyHistogram.sumSeconds, 0.0115))
        #expect(s.lastUpdated == 42.5)
    }

    @Test func capacityFromConfiguredDefaults() throws {
        var config = StatsConfiguration()
        config.defaultTopK = 2
        config.defaultCapacityFactor = 1.1
        let registry = LayerRegistry(configuration: config)
        // floor(200 x 2 / 4) = 100; 100 x 1.1 must be 110, not 111 from binary rounding.
        _ = try registry.ingest([decision([100, 100, 100, 100], tokens: 200)], defaultLayer: nil, now: 1)
        // The decision's own top_k wins over the default: floor(200 x 1 / 4) x 1.1 = 55.
        _ = try registry.ingest(
            [decision([50, 50, 50, 50], tokens: 200, layer: "L1", topK: 1)], defaultLayer: nil, now: 1)
        #expect(registry.snapshot("L0")?.capacity.totalCapacity == 440)
        #expect(registry.snapshot("L1")?.capacity.totalCapacity == 220)
        // torsh's formula rounds up: floor(10 x 1 / 4) = 2, 2 x 1.25 = 2.5 -> 3.
        _ = try registry.ingest(
            [decision([3, 3, 2, 2], tokens: 10, layer: "L2", topK: 1, factor: 1.25)],
            defaultLayer: nil, now: 1)
        #expect(registry.snapshot("L2")?.capacity.totalCapacity == 12)
    }

    @Test func noCapacityMeansNullCapacityStatistics() throws {
        let registry = LayerRegistry(configuration: StatsConfiguration())
        // top_k without a factor is not enough.
        _ = try registry.ingest([decision([5, 5], dropped: 2, topK: 1)], defaultLayer: nil, now: 1)
        let c = try #require(registry.snapshot("L0")).summary(window: nil).capacity
        #expect(c.averageUtilization == nil)
        #expect(c.peakUtilization == nil)
        #expect(c.totalCapacity == nil)
        #expect(c.totalUsed == nil)
        #expect(c.overallUtilization == nil)
        #expect(c.capacityExceededCount == 1)
    }
}
