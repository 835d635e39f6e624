import MoEStats
import Testing

/// Batches for a single layer take the registry's allocation-free path; these check that it
/// refuses (and leaves nothing behind) exactly as the general path does, and applies the same
/// statistics.
@Suite struct AllocationPathTests {
    private func decision(_ counts: [UInt64], layer: String? = "L0") -> RoutingDecision {
        RoutingDecision(layer: layer, latencyMs: 1, expertCounts: counts, totalTokens: counts.reduce(0, +))
    }

    private func expectError(_ kind: DecisionError.Kind, field: String, index: Int, _ body: () throws -> Int) {
        do {
            _ = try body()
            Issue.record("expected \(kind) error")
        } catch let error as DecisionError {
            #expect(error.kind == kind)
            #expect(error.field == field)
            #expect(error.index == index)
        } catch {
            Issue.record("unexpected error \(error)")
        }
    }

    @Test func newLayerWithMixedExpertCountsIsAConflictAndCreatesNothing() {
        let r = LayerRegistry(configuration: StatsConfiguration())
        expectError(.conflict, field: "expert_capacities", index: 2) {
            try r.ingest([decision([1, 2]), decision([3, 4]), decision([1, 2, 3])], defaultLayer: nil, now: 1)
        }
        #expect(r.layerCount == 0)
    }

    @Test func newLayerOverTheLayerCapIsRefused() throws {
        var config = StatsConfiguration()
        config.maxLayers = 1
        let r = LayerRegistry(configuration: config)
        _ = try r.ingest([decision([1], layer: "a")], defaultLayer: nil, now: 1)
        expectError(.tooManyLayers, field: "layer", index: 0) {
            try r.ingest([decision([1], layer: "b"), decision([2], layer: "b")], defaultLayer: nil, now: 2)
        }
        #expect(r.layerCount == 1)
        #expect(r.snapshot("b") == nil)
    }

    @Test func newLayerOverTheExpertCapIsRefused() {
        var config = StatsConfiguration()
        config.maxExperts = 2
        let r = LayerRegistry(configuration: config)
        expectError(.tooManyExperts, field: "expert_capacities", index: 0) {
            try r.ingest([decision([1, 1, 1])], defaultLayer: nil, now: 1)
        }
        #expect(r.layerCount == 0)
    }

    @Test func oneLayerBatchAppliesEveryDecisionOnce() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        #expect(try r.ingest([decision([1, 2]), decision([3, 4])], defaultLayer: nil, now: 5) == 2)
        #expect(try r.ingest([decision([5, 6], layer: nil)], defaultLayer: "L0", now: 7) == 1)
        let s = try #require(r.snapshot("L0"))
        #expect(s.totalRoutings == 3)
        #expect(s.totalTokens == 21)
        #expect(s.lastUpdated == 7)
    }

    @Test func latencyBucketsAreFiniteDistinctAndAscending() throws {
        var config = StatsConfiguration()
        config.latencyBucketsSeconds = [0.5, .infinity, 0.1, 0.5, .nan, 0.1, 0.25]
        let r = LayerRegistry(configuration: config)
        _ = try r.ingest([decision([1])], defaultLayer: nil, now: 1)
        let s = try #require(r.snapshot("L0"))
        #expect(s.latencyHistogram.upperBoundsSeconds == [0.1, 0.25, 0.5])
    }
}
