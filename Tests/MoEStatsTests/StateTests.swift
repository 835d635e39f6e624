import JSONOutput
import TestTools
import Testing

@testable import MoEStats

/// The state file: a restored registry answers exactly as the saved one, and every damaged,
/// foreign or contradictory file is refused with a `StateError`, changing nothing.
@Suite struct StateTests {
    typealias SplitMix = SplitMix64

    static func withWorker(_ d: RoutingDecision, _ worker: String?) -> RoutingDecision {
        var d = d
        d.worker = worker
        return d
    }

    /// A registry exercising every part of the state: several layers and expert counts, all three
    /// losses with non-finite ones and an infinite sum, latencies wrapping the 1000-sample ring,
    /// known and unknown capacities, dropped tokens, dead experts, two bucket layouts, workers
    /// beyond a small cap, and layers updated at different times.
    static func populated(seed: UInt64 = 7) throws -> LayerRegistry {
        var configuration = StatsConfiguration()
        configuration.maxWorkersPerLayer = 3
        configuration.defaultTopK = 2
        configuration.defaultCapacityFactor = 1.25
        let r = LayerRegistry(configuration: configuration)
        var rng = SplitMix(state: seed)
        // "wide": 1500 decisions, so both rings have wrapped.
        for i in 0..<1500 {
            var counts = (0..<8).map { _ in UInt64.random(in: 0...40, using: &rng) }
            counts[7] = i < 1420 ? counts[7] : 0  // expert 7 dies near the end
            let tokens = counts.reduce(0, +)
            var d = decision(
                counts, tokens: tokens, dropped: tokens / 7, layer: "blocks.0.moe",
                lbl: i % 5 == 0 ? nil : Double.random(in: 0...1, using: &rng),
                z: Double.random(in: 0...0.1, using: &rng),
                aux: i % 3 == 0 ? 0.1 + 0.2 : nil,
                latencyMs: i % 4 == 3 ? nil : Double.random(in: 0...1500, using: &rng),
                capacity: i % 2 == 0 ? Int.random(in: 1...30, using: &rng) : nil)
            if i % 11 == 0 { d.loadBalanceLoss = .nonFinite }
            d.worker = ["rank-0", "rank-1", "rank-2", "rank-3", "rank-4"][i % 5]
            _ = try r.ingest([d], defaultLayer: nil, now: 1_700_000_000 + Double(i) * 0.25)
        }
        // "tiny": one expert, no latency, no capacity, no worker, no token.
        _ = try r.ingest([decision([0], tokens: 0, layer: "tiny")], defaultLayer: nil, now: 1_700_000_100.5)
        // "huge-loss": losses at the edge of a Double; the second of each would overflow the sum
        // and is kept out (counted as non-finite), the third brings the sums back to 0.
        _ = try r.ingest(
            [
                decision([5, 0, 3], layer: "huge-loss", lbl: 1.7e308, z: -1.7e308, latencyMs: 0),
                decision([5, 0, 3], layer: "huge-loss", lbl: 1.7e308, z: -1.7e308, latencyMs: 2e-9),
            ],
            defaultLayer: nil, now: 1_700_000_200)
        _ = try r.ingest(
            [decision([1, 2, 3], layer: "huge-loss", lbl: -1.7e308, z: 1.7e308)],
            defaultLayer: nil, now: 1_700_000_201)
        // "other-buckets": created after a reload with other latency buckets.
        var reloaded = configuration
        reloaded.latencyBucketsSeconds = [0.3, 0.001, 7]
        r.update(configuration: reloaded)
        for i in 0..<30 {
            let d = withWorker(
                decision(
                    [UInt64(i), 2, 0, 9], layer: "other-buckets", latencyMs: Double(i) * 37.5,
                    topK: 1, factor: 0.75), i.isMultiple(of: 2) ? "host-a" : "ħost-β")
            _ = try r.ingest([d], defaultLayer: nil, now: 1_700_000_300 + Double(i))
        }
        r.update(configuration: configuration)
        return r
    }

    static func summaryJSON(_ s: LayerSnapshot, window: Int?, now: Double?, ttl: Double?) -> String {
        var w = JSONWriter()
        s.summary(window: window, now: now, workerTTL: ttl).writeJSON(&w)
        return w.string
    }

    /// Every raw field `/metrics` and the summaries read, doubles as bit patterns.
    static func rawFields(_ s: LayerSnapshot) -> [String] {
        func bits(_ v: Double?) -> String { v.map { String($0.bitPattern, radix: 16) } ?? "nil" }
        func bits(_ v: [Double]) -> String { v.map { bits($0) }.joined(separator: ",") }
        return [
            s.layer, "\(s.experts)", "\(s.totalRoutings)", "\(s.totalTokens)", "\(s.tokensDropped)",
            "\(s.expertTokens)", bits(s.utilizationSums), "\(s.lastCounts)", "\(s.lastActive)",
            bits(s.loadBalanceLoss.sum), "\(s.loadBalanceLoss.count)", bits(s.routerZLoss.sum),
            "\(s.routerZLoss.count)",
            bits(s.auxiliaryLoss.sum), "\(s.auxiliaryLoss.count)", "\(s.nonfiniteLosses)",
            bits(s.latencyHistogram.upperBoundsSeconds), "\(s.latencyHistogram.cumulativeCounts)",
            bits(s.latencyHistogram.sumSeconds), "\(s.latencyHistogram.count)",
            bits(s.latencyMinMs), bits(s.latencyMaxMs), bits(s.latencySumMs),
            "\(s.capacity.decisions)", bits(s.capacity.averageUtilization), bits(s.capacity.peakUtilization),
            "\(s.capacity.totalCapacity)", "\(s.capacity.totalUsed)", "\(s.capacityExceededCount)",
            bits(s.lastUpdated), "\(s.defaultWindow)", bits(s.loadVariances), bits(s.recentLatenciesMs),
            s.workers.map { "\($0.worker)@\(bits($0.lastSeen))x\($0.decisions)" }.joined(separator: ";"),
            "\(s.untrackedWorkerDecisions)",
        ]
    }

    static func expectSameAnswers(
        _ a: LayerRegistry, _ b: LayerRegistry,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        let sa = a.snapshots(), sb = b.snapshots()
        #expect(sa.map(\.layer) == sb.map(\.layer), sourceLocation: sourceLocation)
        for (x, y) in zip(sa, sb) {
            #expect(rawFields(x) == rawFields(y), "\(x.layer)", sourceLocation: sourceLocation)
            for (window, now, ttl) in [
                (nil, nil, nil), (1, 1_700_000_400.0, 60.0), (50, 1_700_000_250.0, 0.5),
                (1000, 1_700_000_000.0, nil), (7, nil, 30.0),
            ] as [(Int?, Double?, Double?)] {
                #expect(
                    summaryJSON(x, window: window, now: now, ttl: ttl)
                        == summaryJSON(y, window: window, now: now, ttl: ttl),
                    "\(x.layer) window \(String(describing: window))", sourceLocation: sourceLocation)
            }
            #expect(
                x.workerCounts(now: 1_700_000_310, ttl: 5) == y.workerCounts(now: 1_700_000_310, ttl: 5),
                sourceLocation: sourceLocation)
        }
    }

    @Test func restoredRegistryAnswersExactlyAsTheSavedOne() throws {
        let original = try Self.populated()
        let bytes = original.exportState()
        let restored = try LayerRegistry(configuration: original.configuration, restoringFrom: bytes)
        #expect(restored.layerCount == 4)
        Self.expectSameAnswers(original, restored)
        // The inputs really are varied: wrapped rings, untracked workers, losses kept out.
        let wide = try #require(restored.snapshot("blocks.0.moe"))
        #expect(wide.loadVariances.count == 1000 && wide.recentLatenciesMs.count == 1000)
        #expect(wide.workers.count == 3 && wide.untrackedWorkerDecisions == 600)
        #expect(wide.summary(window: 50).balance.deadExperts == 1)
        let huge = try #require(restored.snapshot("huge-loss"))
        #expect(
            huge.loadBalanceLoss == LossTotals(sum: 0, count: 2) && huge.routerZLoss == LossTotals(sum: 0, count: 2))
        #expect(huge.nonfiniteLosses == 2)
        #expect(
            try #require(restored.snapshot("other-buckets")).latencyHistogram.upperBoundsSeconds == [0.001, 0.3, 7])
        // The same state gives the same bytes.
        #expect(restored.exportState() == bytes)
    }

    @Test func restoredLayersKeepCountingLikeTheOriginals() throws {
        let original = try Self.populated()
        let restored = try LayerRegistry(configuration: original.configuration, restoringFrom: original.exportState())
        var rng = SplitMix(state: 99)
        for i in 0..<700 {
            let counts = (0..<8).map { _ in UInt64.random(in: 0...9, using: &rng) }
            let batch = [
                Self.withWorker(
                    decision(counts, layer: "blocks.0.moe", lbl: 0.01 * Double(i), latencyMs: Double(i % 13)),
                    ["rank-1", "rank-9", "rank-0"][i % 3]),
                decision([UInt64(i % 3), 1, 2], layer: "huge-loss", latencyMs: 1),
                Self.withWorker(decision([1], layer: "tiny"), "late-worker"),
            ]
            for r in [original, restored] { _ = try r.ingest(batch, defaultLayer: nil, now: 1_700_001_000 + Double(i)) }
        }
        Self.expectSameAnswers(original, restored)
        #expect(original.exportState() == restored.exportState())
    }

    @Test func emptyRegistryRoundTripsAndRestoreReplacesEveryLayer() throws {
        let empty = LayerRegistry(configuration: StatsConfiguration()).exportState()
        #expect(empty.count == StateFormat.headerSize + 4 + 8)
        let r = try Self.populated()
        try r.restore(from: empty)
        #expect(r.layerCount == 0)
        let other = LayerRegistry(configuration: StatsConfiguration())
        _ = try other.ingest([decision([1, 1], layer: "gone")], defaultLayer: nil, now: 1)
        try other.restore(from: try Self.populated().exportState())
        #expect(other.snapshot("gone") == nil)
        #expect(other.snapshots().map(\.layer) == ["blocks.0.moe", "huge-loss", "other-buckets", "tiny"])
    }

    @Test func headerLayout() throws {
        let bytes = try Self.populated().exportState()
        #expect(Array(bytes[0..<8]) == Array("MOESTATE".utf8))
        #expect(Array(bytes[8..<12]) == [3, 0, 0, 0])
        var r = StateReader(bytes, from: 12)
        let length = try r.u64("length")
        let crc = try r.u32("crc")
        #expect(Int(length) == bytes.count - 24)
        #expect(crc == CRC32.checksum(bytes[24...]))
        // The standard check value of CRC-32/ISO-HDLC (zlib's crc32).
        #expect(CRC32.checksum(Array("123456789".utf8)[...]) == 0xCBF4_3926)
        #expect(CRC32.checksum([][...]) == 0)
    }

    /// Exports taken while writers run restore cleanly, and each saved layer is whole: its
    /// counters agree with each other, as they do in the live layer.
    @Test func exportWhileWritingSavesWholeLayers() async throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        let tasks = 4, rounds = 300
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<tasks {
                group.addTask {
                    for i in 0..<rounds {
                        let d = Self.withWorker(
                            decision([1, 2, 3], layer: ["a", "b"][(t + i) % 2], lbl: 0.5, latencyMs: 1),
                            "w\(t)")
                        _ = try r.ingest([d, decision([0, 1], layer: "c")], defaultLayer: nil, now: Double(i))
                    }
                }
            }
            group.addTask {
                for _ in 0..<100 {
                    let restored = try LayerRegistry(
                        configuration: StatsConfiguration(), restoringFrom: r.exportState())
                    for s in restored.snapshots() {
                        #expect(s.expertTokens.reduce(0, +) == s.totalTokens)
                        #expect(s.latencyHistogram.count == s.totalRoutings || s.layer == "c")
                        #expect(s.workers.reduce(0) { $0 + $1.decisions } == (s.layer == "c" ? 0 : s.totalRoutings))
                    }
                    await Task.yield()
                }
            }
            try await group.waitForAll()
        }
        let final = try LayerRegistry(configuration: StatsConfiguration(), restoringFrom: r.exportState())
        #expect(final.snapshot("c")?.totalRoutings == UInt64(tasks * rounds))
        Self.expectSameAnswers(r, final)
    }

    // MARK: - refusals

    static func refusal(_ bytes: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) -> StateError? {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try? r.ingest([decision([4, 4], layer: "kept", latencyMs: 1)], defaultLayer: nil, now: 5)
        let before = r.snapshots().map(rawFields)
        do {
            try r.restore(from: bytes)
            Issue.record("accepted a bad state file", sourceLocation: sourceLocation)
            return nil
        } catch {
            // Never a partial restore: the registry still holds what it held.
            #expect(r.snapshots().map(rawFields) == before, sourceLocation: sourceLocation)
            #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
            return error
        }
    }

    /// Re-encodes `bytes` with a valid header around `payload`, so only the checks can refuse it.
    static func withValidHeader(_ payload: [UInt8]) -> [UInt8] {
        var w = StateWriter()
        w.bytes = StateFormat.magic
        w.u32(StateFormat.version)
        w.u64(UInt64(payload.count))
        w.u32(CRC32.checksum(payload[...]))
        return w.bytes + payload
    }

    @Test func foreignFilesAndOtherVersions() throws {
        #expect(Self.refusal(Array("{\"layers\": []}\n".utf8))?.kind == .notAStateFile)
        #expect(Self.refusal(Array("MOESTATX".utf8) + [UInt8](repeating: 0, count: 30))?.kind == .notAStateFile)
        #expect(Self.refusal([0xFF])?.kind == .notAStateFile)
        var newer = try Self.populated().exportState()
        newer[8] = 4
        let error = Self.refusal(newer)
        #expect(error?.kind == .unsupportedVersion)
        #expect(error?.message.contains("version 4") == true)
        newer[8] = 0
        #expect(Self.refusal(newer)?.kind == .unsupportedVersion)
    }

    @Test func everyTruncationIsRefused() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest(
            [
                Self.withWorker(decision([3, 1], layer: "a", lbl: 0.5, latencyMs: 2, capacity: 4), "w"),
                decision([1, 1, 1], layer: "b"),
            ], defaultLayer: nil, now: 10)
        let bytes = r.exportState()
        for n in 0..<bytes.count {
            #expect(Self.refusal(Array(bytes[..<n]))?.kind == .truncated, "\(n) of \(bytes.count) bytes")
        }
        #expect(Self.refusal(bytes + [0])?.kind == .inconsistent)
    }

    @Test func everyFlippedBitIsCaughtByTheChecksum() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest(
            [Self.withWorker(decision([3, 1], layer: "a", lbl: 0.5, latencyMs: 2, capacity: 4), "w")],
            defaultLayer: nil, now: 10)
        let bytes = r.exportState()
        for i in StateFormat.headerSize..<bytes.count {
            var damaged = bytes
            damaged[i] ^= UInt8(1) << UInt8(i % 8)
            #expect(Self.refusal(damaged)?.kind == .checksumMismatch, "byte \(i)")
        }
        var badCRC = bytes
        badCRC[20] ^= 0x80
        #expect(Self.refusal(badCRC)?.kind == .checksumMismatch)
    }

    /// Files with a valid checksum whose values contradict the engine's invariants.
    @Test func inconsistentValuesAreRefused() throws {
        let source = try Self.populated()
        let images = try LayerRegistry.decodeState(source.exportState())
        let wide = try #require(images.first { $0.name == "blocks.0.moe" })
        let tiny = try #require(images.first { $0.name == "tiny" })
        let mutations: [(String, (inout LayerImage) -> Void)] = [
            ("dropped > total", { $0.tokensDropped = $0.totalTokens + 1 }),
            ("bad name", { $0.name = "has space" }),
            ("no decision", { $0.totalRoutings = 0 }),
            ("last active in the future", { $0.lastActive[0] = $0.totalRoutings + 1 }),
            ("negative utilization sum", { $0.utilizationSums[1] = -1 }),
            ("NaN utilization sum", { $0.utilizationSums[1] = .nan }),
            ("more losses than decisions", { $0.routerZLoss.count = $0.totalRoutings + 1 }),
            ("short variance history", { $0.loadVariances.removeLast() }),
            ("infinite variance", { $0.loadVariances[3] = .infinity }),
            ("latency ring vs count", { $0.latencyCount = 10 }),
            ("negative latency sample", { $0.recentLatenciesMs[0] = -1 }),
            ("min above max", { $0.latencyMinMs = $0.latencyMaxMs + 1 }),
            ("buckets not increasing", { $0.latencyBoundsSeconds.swapAt(0, 1) }),
            ("buckets over count", { $0.latencyBucketCounts[0] = $0.latencyCount + 1 }),
            ("capacity decisions over decisions", { $0.capacity.decisions = $0.totalRoutings + 1 }),
            ("non-finite peak", { $0.capacity.peakUtilization = .nan }),
            ("non-finite last update", { $0.lastUpdated = .infinity }),
            ("duplicate worker", { $0.workers.append($0.workers[0]) }),
            ("worker with no decision", { $0.workers[0].decisions = 0 }),
            ("empty worker name", { $0.workers[0].worker = "" }),
            ("workers over decisions", { $0.untrackedWorkerDecisions = $0.totalRoutings }),
        ]
        for (what, mutate) in mutations {
            var bad = wide
            mutate(&bad)
            let error = Self.refusal(LayerRegistry.encodeState([bad, tiny]))
            #expect(error?.kind == .inconsistent, "\(what): \(String(describing: error))")
        }
        var noSamples = tiny
        noSamples.latencyMaxMs = 3
        #expect(Self.refusal(LayerRegistry.encodeState([noSamples]))?.kind == .inconsistent)
        var noCapacity = tiny
        noCapacity.capacity.totalUsed = 1
        #expect(Self.refusal(LayerRegistry.encodeState([noCapacity]))?.kind == .inconsistent)
        let twice = Self.refusal(LayerRegistry.encodeState([tiny, tiny]))
        #expect(twice?.kind == .inconsistent && twice?.message.contains("twice") == true)
        // The unmodified images pass: the refusals above are the mutations' doing.
        let ok = LayerRegistry(configuration: StatsConfiguration())
        try ok.restore(from: LayerRegistry.encodeState([wide, tiny]))
        #expect(ok.layerCount == 2)
    }

    /// Lengths that promise more than the file holds are refused before anything is allocated.
    @Test func hugeCountsAreRefusedWithoutAllocating() throws {
        for layerCount in [UInt32.max, 1_000_000] {
            var w = StateWriter()
            w.u32(layerCount)
            #expect(Self.refusal(Self.withValidHeader(w.bytes))?.kind == .truncated)
        }
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest([decision([1], layer: "a")], defaultLayer: nil, now: 1)
        let payload = Array(r.exportState()[StateFormat.headerSize...])
        // Layer count 1, record length 8, then the name "a" (2 + 1 bytes); the expert count follows.
        let expertsAt = 4 + 8 + 3
        var huge = payload
        for i in 0..<4 { huge[expertsAt + i] = 0xFF }
        #expect(Self.refusal(Self.withValidHeader(huge))?.kind == .truncated)
        var longRecord = payload
        longRecord[4 + 7] = 0x7F
        #expect(Self.refusal(Self.withValidHeader(longRecord))?.kind == .truncated)
    }

    /// Random damage behind a recomputed checksum: refused or restored, never a crash, and what
    /// is restored always passes the checks again on export.
    @Test func randomDamageNeverCrashes() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest(
            [
                Self.withWorker(decision([3, 1, 0], layer: "a", lbl: 0.5, latencyMs: 2, capacity: 4), "w1"),
                Self.withWorker(decision([0, 1, 7], layer: "b", z: 0.25, latencyMs: 9), "w2"),
            ],
            defaultLayer: nil, now: 10)
        let payload = Array(r.exportState()[StateFormat.headerSize...])
        var rng = SplitMix(state: 2024)
        var restored = 0
        for _ in 0..<3000 {
            var damaged = payload
            for _ in 0..<Int.random(in: 1...3, using: &rng) {
                let i = Int.random(in: 0..<damaged.count, using: &rng)
                damaged[i] = UInt8.random(in: 0...255, using: &rng)
            }
            let target = LayerRegistry(configuration: StatsConfiguration())
            do {
                try target.restore(from: Self.withValidHeader(damaged))
                restored += 1
                let again = LayerRegistry(configuration: StatsConfiguration())
                try again.restore(from: target.exportState())
                #expect(again.layerCount == target.layerCount)
            } catch {
                #expect(target.layerCount == 0)
            }
        }
        // Some damage (a changed double) is undetectable by the invariants; most is caught.
        #expect(restored < 3000)
    }
}
