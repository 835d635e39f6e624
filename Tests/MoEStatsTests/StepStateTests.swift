import JSONOutput
import Testing

@testable import MoEStats

/// The state file keeps the step history (format version 2), and a version-1 file, which has
/// none, still loads.
@Suite struct StepStateTests {
    /// Three layers: steps with many workers and demand, steps past the ring, and time buckets.
    static func populated(history: Int = 64) throws -> LayerRegistry {
        var c = StatsConfiguration()
        c.historySteps = history
        c.expectedWorkers = 3
        let r = LayerRegistry(configuration: c)
        let sent = StepHistoryTests.traffic(steps: 100, workers: 3, change: 60)
        try StepHistoryTests.post(sent, to: r, now: 5000)
        var demanded = StepHistoryTests.make(
            .init(step: 99, worker: "rank0", counts: [UInt64](repeating: 1, count: 16), tokens: 16, dropped: 0))
        demanded.expertDemand = [UInt64](repeating: 3, count: 16)
        _ = try r.ingest([demanded], defaultLayer: nil, now: 5001)
        var late = demanded
        late.step = 1
        late.expertDemand = nil
        _ = try r.ingest([late], defaultLayer: nil, now: 5002)
        for now in [100.0, 104, 117, 121] {
            _ = try r.ingest([decision([2, 1, 0], layer: "timed")], defaultLayer: nil, now: now)
        }
        return r
    }

    static func historyJSON(_ r: LayerRegistry, _ layer: String) -> [UInt8]? {
        guard let h = r.history(layer, last: 100_000, now: 5010, workerTTL: nil) else { return nil }
        var w = JSONOutput.JSONWriter()
        h.writeJSON(&w, experts: true)
        return w.bytes
    }

    @Test func restartKeepsTheHistory() throws {
        let original = try Self.populated()
        let bytes = original.exportState()
        let restored = try LayerRegistry(configuration: original.configuration, restoringFrom: bytes)
        for layer in ["L0", "timed"] {
            let a = try #require(Self.historyJSON(original, layer))
            #expect(a == Self.historyJSON(restored, layer), "\(layer)")
        }
        let h = try #require(restored.history("L0", last: 1000, now: 5010, workerTTL: nil))
        #expect(h.buckets.count == 64 && h.lateDecisions == 1)
        #expect(h.buckets.last?.totals.expertOverflow == [UInt64](repeating: 2, count: 16))
        #expect(try #require(restored.snapshot("L0")).expertOverflow == [UInt64](repeating: 2, count: 16))
        #expect(
            restored.window("L0", steps: 10, now: 5010, workerTTL: nil)?.totals
                == original.window("L0", steps: 10, now: 5010, workerTTL: nil)?.totals)
        #expect(restored.exportState() == bytes)

        // Both keep counting alike: known workers keep their bits, so a step is not counted twice.
        let more = StepHistoryTests.traffic(steps: 103, workers: 3, change: 0, seed: 9).filter { $0.step >= 99 }
        try StepHistoryTests.post(more, to: original, now: 6000)
        try StepHistoryTests.post(more, to: restored, now: 6000)
        #expect(Self.historyJSON(original, "L0") == Self.historyJSON(restored, "L0"))
        #expect(
            restored.history("L0", last: 4, now: 6000, workerTTL: nil)?.buckets.map(\.workers) == [
                3, 3, 3, 3,
            ])
    }

    @Test func aSmallerHistoryKeepsTheNewestSteps() throws {
        let original = try Self.populated()
        var c = original.configuration
        c.historySteps = 10
        let restored = try LayerRegistry(configuration: c, restoringFrom: original.exportState())
        let h = try #require(restored.history("L0", last: 1000, now: 5010, workerTTL: nil))
        #expect(h.buckets.map(\.key) == (90..<100).map { Int64($0) })
        let before = try #require(original.history("L0", last: 10, now: 5010, workerTTL: nil))
        #expect(h.buckets == before.buckets)
    }

    @Test func aVersionOneFileStillLoadsWithoutHistory() throws {
        let original = try Self.populated()
        let v1 = original.exportState(version: 1)
        #expect(Array(v1[8..<12]) == [1, 0, 0, 0])
        let restored = try LayerRegistry(configuration: original.configuration, restoringFrom: v1)
        for (a, b) in zip(original.snapshots(), restored.snapshots()) {
            #expect(StateTests.rawFields(a) == StateTests.rawFields(b))
        }
        #expect(restored.history("L0", last: 10, now: 5010, workerTTL: nil) == nil)
        // Its layers start a history with their next decision.
        _ = try restored.ingest(
            [
                StepHistoryTests.make(
                    .init(step: 100, worker: "rank2", counts: [UInt64](repeating: 1, count: 16), tokens: 16, dropped: 0)
                )
            ],
            defaultLayer: nil, now: 6000)
        #expect(
            restored.history("L0", last: 10, now: 6000, workerTTL: nil)?.buckets.map(\.key) == [100])
        // The version-1 bytes are the version-2 ones without the step fields.
        #expect(v1.count < original.exportState().count)
    }

    @Test func aVersionTwoFileStillLoadsWithoutPlacement() throws {
        let original = try Self.populated()
        let v2 = original.exportState(version: 2, placement: Array("ignored".utf8))
        #expect(Array(v2[8..<12]) == [2, 0, 0, 0])
        let restored = LayerRegistry(configuration: original.configuration)
        #expect(try restored.restore(from: v2) == nil)
        #expect(restored.exportState() == original.exportState())
        // Version 3 is version 2 and the placement's length and bytes after the last layer.
        #expect(original.exportState().count == v2.count + 8)
    }

    @Test func thePlacementIsCarriedWholeBesideTheLayers() throws {
        let original = try Self.populated()
        let placement = Array(#"{"ranks":4,"nodes":1}"#.utf8)
        let bytes = original.exportState(placement: placement)
        #expect(Array(bytes[8..<12]) == [3, 0, 0, 0])
        let saved = try LayerRegistry.readState(bytes)
        #expect(saved.placement == placement)
        #expect(saved.layers.map(\.name) == original.snapshots().map(\.layer).sorted())
        // Reading changes nothing; restoring applies the layers and hands the placement back.
        let restored = LayerRegistry(configuration: original.configuration)
        #expect(restored.layerCount == 0)
        #expect(try restored.restore(from: bytes) == placement)
        #expect(restored.exportState(placement: placement) == bytes)
        #expect(try LayerRegistry.readState(original.exportState()).placement == nil)
        // A placement longer than what follows is a truncated file, whatever the checksum says.
        var payload = Array(bytes[StateFormat.headerSize...])
        let at = payload.count - placement.count - 8
        payload[at] = UInt8(placement.count + 1)
        #expect(StateTests.refusal(StateTests.withValidHeader(payload))?.kind == .truncated)
    }

    @Test func inconsistentHistoriesAreRefused() throws {
        let images = try LayerRegistry.decodeState(try Self.populated().exportState())
        let layer = try #require(images.first { $0.name == "L0" })
        let mutations: [(String, (inout LayerImage) -> Void)] = [
            ("worker count vs set", { $0.history!.buckets[0].totals.workers += 1 }),
            (
                "dropped over tokens",
                { $0.history!.buckets[1].totals.tokensDropped = $0.history!.buckets[1].totals.tokens + 1 }
            ),
            ("out of order", { $0.history!.buckets.swapAt(0, 1) }),
            ("outside the ring", { $0.history!.buckets[0].totals.key -= 64 }),
            ("demand without overflow", { $0.history!.buckets[3].totals.demandDecisions = 1 }),
            ("duplicate worker bit", { $0.workerBits[1] = $0.workerBits[0] }),
            ("overflow without demand", { $0.demandDecisions = 0 }),
        ]
        for (what, mutate) in mutations {
            var bad = layer
            mutate(&bad)
            let error = StateTests.refusal(LayerRegistry.encodeState([bad]))
            #expect(error?.kind == .inconsistent, "\(what): \(String(describing: error))")
        }
        let ok = LayerRegistry(configuration: StatsConfiguration())
        try ok.restore(from: LayerRegistry.encodeState([layer]))
        #expect(ok.layerCount == 1)
    }
}
