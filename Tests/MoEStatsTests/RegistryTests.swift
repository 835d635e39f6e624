import MoEStats
import Testing

/// Layer naming, conflicts, caps, all-or-nothing batches, reset, and concurrent writers.
@Suite struct RegistryTests {
    /// Everything a refused batch could have touched, to compare before and after.
    static func state(_ r: LayerRegistry) -> [String] {
        r.snapshots().map { s in
            "\(s.layer) \(s.totalRoutings) \(s.totalTokens) \(s.tokensDropped) \(s.expertTokens) \(s.loadVariances) \(s.latencyHistogram.count)"
        }
    }

    static func expectError(
        _ kind: DecisionError.Kind, field: String?, index: Int?,
        _ body: () throws -> Int
    ) {
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

    @Test func layerFromDecisionOrPath() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest([decision([1, 1], layer: nil)], defaultLayer: "from-path", now: 1)
        _ = try r.ingest([decision([1, 1], layer: "same")], defaultLayer: "same", now: 1)
        _ = try r.ingest([decision([1, 1], layer: "own")], defaultLayer: nil, now: 1)
        #expect(r.snapshots().map(\.layer) == ["from-path", "own", "same"])
        #expect(r.layerCount == 3)
    }

    @Test func layerErrors() {
        let r = LayerRegistry(configuration: StatsConfiguration())
        Self.expectError(.malformed, field: "layer", index: 0) {
            try r.ingest([decision([1], layer: nil)], defaultLayer: nil, now: 1)
        }
        Self.expectError(.invalid, field: "layer", index: 1) {
            try r.ingest([decision([1], layer: "a"), decision([1], layer: "b")], defaultLayer: "a", now: 1)
        }
        Self.expectError(.invalid, field: "layer", index: 0) {
            try r.ingest([decision([1], layer: "has space")], defaultLayer: nil, now: 1)
        }
        Self.expectError(.invalid, field: "layer", index: 0) {
            try r.ingest([decision([1], layer: nil)], defaultLayer: String(repeating: "x", count: 65), now: 1)
        }
        #expect(r.layerCount == 0)
        #expect(LayerRegistry.isValidLayerName("blocks.3.mlp:moe-1_a"))
        #expect(LayerRegistry.isValidLayerName(String(repeating: "x", count: 64)))
        #expect(!LayerRegistry.isValidLayerName(""))
        #expect(!LayerRegistry.isValidLayerName("é"))
        #expect(!LayerRegistry.isValidLayerName("a/b"))
    }

    @Test func valueErrors() {
        let r = LayerRegistry(configuration: StatsConfiguration())
        var negativeCapacity = decision([1]); negativeCapacity.expertCapacity = -1
        let cases: [(RoutingDecision, String)] = [
            (decision([]), "expert_capacities"),
            (decision([2, 2], tokens: 3, dropped: 4), "tokens_dropped"),
            (decision([1], latencyMs: -1), "latency_ms"),
            (decision([1], latencyMs: .nan), "latency_ms"),
            (decision([1], latencyMs: .infinity), "latency_ms"),
            (negativeCapacity, "expert_capacity"),
            (decision([1], topK: 0), "top_k"),
            (decision([1], factor: 0), "capacity_factor"),
            (decision([1], factor: .nan), "capacity_factor"),
            // Loads no routing of total_tokens tokens can produce (also built without the decoder).
            (decision([5, 5], tokens: 0), "expert_capacities[0]"),
            (decision([4, 400_000], tokens: 8, topK: 2), "expert_capacities[1]"),
            (decision([8, 8, 1], tokens: 8, topK: 2), "expert_capacities"),
            (decision([.max, .max], tokens: .max, topK: 1), "expert_capacities"),
        ]
        for (bad, field) in cases {
            // The bad decision comes second: the good first one must not be applied either.
            Self.expectError(.invalid, field: field, index: 1) {
                try r.ingest([decision([1]), bad], defaultLayer: nil, now: 1)
            }
        }
        #expect(r.layerCount == 0)
    }

    @Test func loadsAtTheirBoundariesAreAccepted() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        // Every expert may receive every token; with top_k, the loads may add up to k per token.
        let n = try r.ingest(
            [
                decision([8, 8], tokens: 8), decision([8, 8, 0], tokens: 8, layer: "L1", topK: 2),
                decision([0, 0], tokens: 0), decision([.max, 1], tokens: .max, layer: "L2", topK: 2),
            ],
            defaultLayer: nil, now: 1)
        #expect(n == 4)
        #expect(r.snapshot("L0")?.expertTokens == [8, 8])
    }

    @Test func expertCountConflictLeavesStateUnchanged() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest([decision([1, 2, 3, 4], latencyMs: 1)], defaultLayer: nil, now: 1)
        let before = Self.state(r)
        Self.expectError(.conflict, field: "expert_capacities", index: 1) {
            try r.ingest([decision([5, 5, 5, 5], latencyMs: 2), decision([1, 2, 3])], defaultLayer: nil, now: 2)
        }
        #expect(Self.state(r) == before)
        #expect(r.snapshot("L0")?.lastUpdated == 1)
    }

    @Test func conflictWithinOneBatchCreatesNothing() {
        let r = LayerRegistry(configuration: StatsConfiguration())
        Self.expectError(.conflict, field: "expert_capacities", index: 2) {
            try r.ingest(
                [decision([1, 1], layer: "a"), decision([1], layer: "b"), decision([1, 1, 1], layer: "a")],
                defaultLayer: nil, now: 1)
        }
        #expect(r.layerCount == 0)
        #expect(r.snapshots().isEmpty)
    }

    @Test func layerCap() throws {
        var config = StatsConfiguration()
        config.maxLayers = 3
        let r = LayerRegistry(configuration: config)
        _ = try r.ingest([decision([1], layer: "a"), decision([1], layer: "b")], defaultLayer: nil, now: 1)
        let before = Self.state(r)
        // c fits (3 layers), d would be the fourth; existing layers in the batch do not count.
        Self.expectError(.tooManyLayers, field: "layer", index: 3) {
            try r.ingest(
                [
                    decision([1], layer: "a"), decision([1], layer: "c"), decision([1], layer: "c"),
                    decision([1], layer: "d"),
                ], defaultLayer: nil, now: 2)
        }
        #expect(Self.state(r) == before)
        #expect(r.layerCount == 2)
        // Exactly at the cap is accepted.
        #expect(try r.ingest([decision([1], layer: "a"), decision([1], layer: "c")], defaultLayer: nil, now: 3) == 2)
        #expect(r.layerCount == 3)
        // A reset frees a place.
        #expect(r.reset("a"))
        _ = try r.ingest([decision([1], layer: "d")], defaultLayer: nil, now: 4)
        #expect(r.snapshots().map(\.layer) == ["b", "c", "d"])
    }

    @Test func expertCap() throws {
        var config = StatsConfiguration()
        config.maxExperts = 4
        let r = LayerRegistry(configuration: config)
        #expect(try r.ingest([decision([1, 1, 1, 1])], defaultLayer: nil, now: 1) == 1)
        Self.expectError(.tooManyExperts, field: "expert_capacities", index: 0) {
            try r.ingest([decision([1, 1, 1, 1, 1], layer: "big")], defaultLayer: nil, now: 1)
        }
        #expect(r.layerCount == 1)
    }

    @Test func emptyBatchDoesNothing() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        #expect(try r.ingest([], defaultLayer: nil, now: 1) == 0)
        #expect(r.layerCount == 0)
    }

    @Test func resetRemovesLayers() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest([decision([1, 1], layer: "a"), decision([1, 1], layer: "b")], defaultLayer: nil, now: 1)
        #expect(r.reset("a"))
        #expect(!r.reset("a"))
        #expect(!r.reset("unknown"))
        #expect(r.snapshot("a") == nil)
        // After a reset the layer may come back with another expert count: no conflict.
        _ = try r.ingest([decision([1, 1, 1], layer: "a")], defaultLayer: nil, now: 2)
        #expect(r.snapshot("a")?.experts == 3)
        #expect(r.snapshot("a")?.totalRoutings == 1)
        r.resetAll()
        #expect(r.layerCount == 0)
        #expect(r.snapshots().isEmpty)
    }

    @Test func latencyBucketsApplyToNewLayers() throws {
        var config = StatsConfiguration()
        config.latencyBucketsSeconds = [0.5, .nan, 0.1, 0.5]
        let r = LayerRegistry(configuration: config)
        _ = try r.ingest([decision([1], layer: "a", latencyMs: 200)], defaultLayer: nil, now: 1)
        config.latencyBucketsSeconds = [1]
        r.update(configuration: config)
        _ = try r.ingest(
            [decision([1], layer: "a", latencyMs: 200), decision([1], layer: "b", latencyMs: 200)],
            defaultLayer: nil, now: 1)
        #expect(r.snapshot("a")?.latencyHistogram.upperBoundsSeconds == [0.1, 0.5])
        #expect(r.snapshot("a")?.latencyHistogram.cumulativeCounts == [0, 2])
        #expect(r.snapshot("b")?.latencyHistogram.upperBoundsSeconds == [1])
        #expect(r.snapshot("b")?.latencyHistogram.cumulativeCounts == [1])
    }

    @Test func concurrentWritersLoseNothing() async throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        let layers = ["a", "b", "c"]
        let tasks = 8, rounds = 200
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<tasks {
                group.addTask {
                    for i in 0..<rounds {
                        let layer = layers[(t + i) % layers.count]
                        // A batch spanning two layers, plus a single decision.
                        _ = try r.ingest(
                            [
                                decision([1, 2, 3], layer: layer, latencyMs: 1),
                                decision([1, 2, 3], layer: "shared", latencyMs: 1),
                            ],
                            defaultLayer: nil, now: Double(i))
                        _ = try r.ingest([decision([0, 0, 1], layer: "shared")], defaultLayer: nil, now: Double(i))
                    }
                }
            }
            group.addTask {
                // A concurrent reader: every snapshot it sees is internally consistent.
                for _ in 0..<200 {
                    for s in r.snapshots() {
                        #expect(s.expertTokens.reduce(0, +) == s.totalTokens)
                        #expect(s.loadVariances.count == min(Int(s.totalRoutings), 1000))
                    }
                    await Task.yield()
                }
            }
            try await group.waitForAll()
        }
        let total = UInt64(tasks * rounds)
        let perLayer = layers.map { r.snapshot($0)?.totalRoutings ?? 0 }
        #expect(perLayer.reduce(0, +) == total)
        let shared = try #require(r.snapshot("shared"))
        #expect(shared.totalRoutings == 2 * total)
        #expect(shared.expertTokens == [total, 2 * total, 4 * total])
        #expect(shared.latencyHistogram.count == total)
    }

    @Test func concurrentBatchesAreAllOrNothing() async throws {
        // Every batch puts two decisions into x and two into y under both layers' locks, so no
        // reader ever sees an odd count; batches that conflict on z (3 experts, not 2) apply nothing.
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest([decision([1, 1], layer: "z")], defaultLayer: nil, now: 0)
        let writers = 6, rounds = 150
        let accepted = try await withThrowingTaskGroup(of: Int.self) { group in
            for w in 0..<writers {
                group.addTask {
                    var ok = 0
                    for i in 0..<rounds {
                        var batch = [
                            decision([1, 0], layer: "x"), decision([0, 1], layer: "y"),
                            decision([1, 0], layer: "x"), decision([0, 1], layer: "y"),
                        ]
                        if (w + i) % 3 == 0 { batch.append(decision([1, 1, 1], layer: "z")) }
                        do {
                            ok += try r.ingest(batch, defaultLayer: nil, now: Double(i)) > 0 ? 1 : 0
                        } catch {
                            #expect(
                                (error as? DecisionError)?.kind == .conflict && (error as? DecisionError)?.index == 4)
                        }
                    }
                    return ok
                }
            }
            group.addTask {
                for _ in 0..<300 {
                    for s in r.snapshots() where s.layer != "z" {
                        #expect(s.totalRoutings % 2 == 0, "a reader saw half a batch in \(s.layer)")
                    }
                    await Task.yield()
                }
                return 0
            }
            return try await group.reduce(0, +)
        }
        let refused = (0..<writers).flatMap { w in (0..<rounds).filter { (w + $0) % 3 == 0 } }.count
        #expect(accepted == writers * rounds - refused)
        #expect(r.snapshot("x")?.totalRoutings == UInt64(2 * accepted))
        #expect(r.snapshot("y")?.expertTokens == [0, UInt64(2 * accepted)])
        #expect(r.snapshot("z")?.totalRoutings == 1)
    }

    @Test func layerCapHoldsUnderConcurrentCreation() async throws {
        // 20 writers each try to create two new layers at once; with a cap of 5 exactly two
        // batches fit, and a refused batch creates neither of its layers.
        var config = StatsConfiguration()
        config.maxLayers = 5
        let r = LayerRegistry(configuration: config)
        let results = await withTaskGroup(of: Bool.self) { group in
            for t in 0..<20 {
                group.addTask {
                    do {
                        _ = try r.ingest(
                            [decision([1], layer: "t\(t)-a"), decision([1], layer: "t\(t)-b")],
                            defaultLayer: nil, now: 1)
                        return true
                    } catch {
                        #expect((error as? DecisionError)?.kind == .tooManyLayers)
                        return false
                    }
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(results.filter { $0 }.count == 2)
        #expect(r.layerCount == 4)
        let names = Set(r.snapshots().map(\.layer))
        for name in names where name.hasSuffix("-a") {
            #expect(names.contains(String(name.dropLast(2)) + "-b"))
        }
    }
}
