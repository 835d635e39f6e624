import Foundation
import TestTools
import Testing

@testable import MoEStats

/// The step buckets: per-step sums over workers, windows, completeness, late decisions, time
/// buckets, and refusals. Every expected number is computed here from the raw decisions, by hand
/// written formulas, not by the engine's functions.
@Suite struct StepHistoryTests {
    /// One raw decision as a test remembers it.
    struct Sent {
        var step: Int64
        var worker: String
        var counts: [UInt64]
        var tokens: UInt64
        var dropped: UInt64
        var lbl: Double?
    }

    static func make(_ s: Sent, demand: [UInt64]? = nil) -> RoutingDecision {
        var d = decision(s.counts, tokens: s.tokens, dropped: s.dropped, lbl: s.lbl)
        d.worker = s.worker
        d.step = s.step
        d.expertDemand = demand
        return d
    }

    /// `workers` workers over `steps` steps of 16 experts; from step `change` on, the router sends
    /// almost every token to experts 0 to 3. Some workers skip some steps.
    static func traffic(steps: Int, workers: Int, change: Int, seed: UInt64 = 3) -> [Sent] {
        var rng = SplitMix64(seed: seed)
        var out = [Sent]()
        for step in 0..<steps {
            for w in 0..<workers {
                if (step + w) % 7 == 0 && w == workers - 1 { continue }  // a straggler
                let counts: [UInt64] = (0..<16).map { e in
                    step < change ? 10 + rng.below(20) : (e < 4 ? 60 + rng.below(20) : rng.below(2))
                }
                let tokens = counts.reduce(0, +) / 2 + 1
                out.append(
                    Sent(
                        step: Int64(step), worker: "rank\(w)", counts: counts.map { min($0, tokens) }, tokens: tokens,
                        dropped: rng.below(tokens / 4 + 1), lbl: step % 5 == 0 ? nil : Double(rng.below(1000)) / 1000))
            }
        }
        return out
    }

    /// The per-expert table grows with the steps seen (doubling), not to the ring's size at the
    /// first decision; a step older than the first one still finds its own slot; a full ring holds
    /// every bucket's own counts.
    @Test func theTableGrowsWithTheStepsSeen() throws {
        var h = StepHistory(capacity: 512, experts: 256, bucketSeconds: 10)
        func record(_ step: Int64, _ count: UInt64 = 1) throws {
            let d = decision(Array(repeating: count, count: 256), tokens: 256 * count, dropped: 0, lbl: nil)
            let key = h.key(step: step, now: 0)
            let slot = key.flatMap { h.slot(for: $0) }
            let s = try #require(slot)
            h.add(d, to: s, maxViolation: 0, workerBit: 0)
        }
        try record(5000)
        #expect(h.expertTokens.count <= 8 * 256)
        for step in Int64(5001)..<5100 { try record(step) }
        #expect(h.expertTokens.count <= 2 * 100 * 256)
        try record(4990, 3)
        let slots = h.newestSlots(512)
        #expect(slots.count == 101)
        #expect(h.bucket(slots[0]).key == 4990)
        #expect(h.bucket(slots[0]).totals.expertTokens == Array(repeating: 3, count: 256))
        for step in Int64(5100)..<6000 { try record(step, UInt64(step % 7)) }
        #expect(h.expertTokens.count == 512 * 256)
        let full = h.newestSlots(512)
        #expect(full.map { h.bucket($0).key } == Array(Int64(5488)..<6000))
        for s in full {
            let b = h.bucket(s)
            #expect(b.totals.expertTokens == Array(repeating: UInt64(b.key % 7), count: 256))
        }
    }

    static func registry(history: Int = 512, expected: Int? = nil) -> LayerRegistry {
        var c = StatsConfiguration()
        c.historySteps = history
        c.expectedWorkers = expected
        return LayerRegistry(configuration: c)
    }

    /// Posts `sent` in batches of one step's decisions, as workers of a job would.
    static func post(_ sent: [Sent], to r: LayerRegistry, now: Double = 1000) throws {
        var i = 0
        while i < sent.count {
            var j = i
            while j < sent.count && sent[j].step == sent[i].step { j += 1 }
            _ = try r.ingest(sent[i..<j].map { make($0) }, defaultLayer: nil, now: now)
            i = j
        }
    }

    // Hand-written reference formulas.
    static func maxVio(_ c: [UInt64]) -> Double? {
        let mean = Double(c.reduce(0, +)) / Double(c.count)
        return mean > 0 ? (Double(c.max()!) - mean) / mean : nil
    }
    static func balancedness(_ c: [UInt64]) -> Double? {
        let mean = Double(c.reduce(0, +)) / Double(c.count)
        return mean > 0 ? mean / Double(c.max()!) : nil
    }
    static func entropy(_ c: [UInt64]) -> Double? {
        let total = Double(c.reduce(0, +))
        guard total > 0 else { return nil }
        var h = 0.0
        for x in c where x > 0 { h -= Double(x) / total * log(Double(x) / total) }
        return h / log(Double(c.count))
    }

    @Test func eachStepEqualsTheSumOfItsWorkersDecisions() throws {
        let sent = Self.traffic(steps: 300, workers: 8, change: 180)
        let r = Self.registry()
        try Self.post(sent, to: r)
        let h = try #require(r.history("L0", last: 1000, now: 1000, workerTTL: nil))
        #expect(h.bucketing == .step)
        #expect(h.buckets.count == 300)
        #expect(h.buckets.map(\.key) == (0..<300).map { Int64($0) })
        for b in h.buckets {
            let raw = sent.filter { $0.step == b.key }
            var counts = [UInt64](repeating: 0, count: 16)
            for s in raw { for e in 0..<16 { counts[e] += s.counts[e] } }
            let t = b.totals
            #expect(t.decisions == UInt64(raw.count))
            #expect(b.workers == Set(raw.map(\.worker)).count)
            #expect(t.tokens == raw.map(\.tokens).reduce(0, +))
            #expect(t.tokensDropped == raw.map(\.dropped).reduce(0, +))
            #expect(t.expertTokens == counts)
            let input = t.measureInput(layer: "L0", experts: 16)
            #expect(close(LayerMeasure.maxViolation.unitValue(input), Self.maxVio(counts)))
            #expect(close(LayerMeasure.balancedness.unitValue(input), Self.balancedness(counts)))
            #expect(close(LayerMeasure.entropy.unitValue(input), Self.entropy(counts), 1e-9))
            #expect(LayerMeasure.deadExperts.unitValue(input) == Double(counts.filter { $0 == 0 }.count))
            let tokens = Double(t.tokens), dropped = Double(t.tokensDropped)
            #expect(close(LayerMeasure.routingEfficiency.jsonValue(input), (tokens - dropped) / tokens * 100))
            let losses = raw.compactMap(\.lbl)
            #expect(
                close(
                    LayerMeasure.averageLoadBalanceLoss.unitValue(input),
                    losses.isEmpty ? nil : losses.reduce(0, +) / Double(losses.count), 1e-9))
            #expect(close(t.worstDecisionMaxViolation, raw.compactMap { Self.maxVio($0.counts) }.max()))
        }
        // The change of routing shows in the steps, while the run-wide MaxVio lags behind it.
        let before = h.buckets[170].totals.measureInput(layer: "L0", experts: 16)
        let after = h.buckets[299].totals.measureInput(layer: "L0", experts: 16)
        #expect(LayerMeasure.maxViolation.unitValue(before)! < 1)
        #expect(LayerMeasure.maxViolation.unitValue(after)! > 2.5)
        let run = try #require(r.snapshot("L0")).summary(window: nil)
        #expect(run[.maxViolation]! < LayerMeasure.maxViolation.unitValue(after)!)
    }

    @Test func aWindowOfEveryStepEqualsTheRunAndShorterWindowsTheirSteps() throws {
        let sent = Self.traffic(steps: 200, workers: 4, change: 120)
        let r = Self.registry()
        try Self.post(sent, to: r)
        let all = try #require(r.window("L0", steps: 1000, now: 1000, workerTTL: nil))
        let run = try #require(r.snapshot("L0"))
        #expect(all.steps == 200 && all.from == 0 && all.to == 199)
        #expect(all.totals.decisions == run.totalRoutings)
        #expect(all.totals.tokens == run.totalTokens)
        #expect(all.totals.tokensDropped == run.tokensDropped)
        #expect(all.totals.expertTokens == run.expertTokens)
        #expect(all.totals.loadBalanceLoss.count == run.loadBalanceLoss.count)
        let allInput = all.totals.measureInput(layer: "L0", experts: 16)
        let runInput = run.measureInput(window: nil)
        for row in LayerMeasure.all where row.inWindows && row.name != "dead_experts" {
            #expect(close(row.unitValue(allInput), row.unitValue(runInput), 1e-9), "\(row.name)")
        }

        let last10 = try #require(r.window("L0", steps: 10, now: 1000, workerTTL: nil))
        #expect(last10.steps == 10 && last10.from == 190 && last10.to == 199)
        var counts = [UInt64](repeating: 0, count: 16)
        for s in sent where s.step >= 190 { for e in 0..<16 { counts[e] += s.counts[e] } }
        #expect(last10.totals.expertTokens == counts)
        #expect(
            close(
                LayerMeasure.maxViolation.unitValue(last10.totals.measureInput(layer: "L0", experts: 16)),
                Self.maxVio(counts)))
    }

    @Test func completenessCountsExpectedWorkersOrActiveOnes() throws {
        let sent = Self.traffic(steps: 30, workers: 4, change: 100)
        let skipped = Set(sent.map(\.step)).filter { step in sent.filter { $0.step == step }.count < 4 }
        #expect(!skipped.isEmpty)

        let fixed = Self.registry(expected: 4)
        try Self.post(sent, to: fixed)
        let h = try #require(fixed.history("L0", last: 100, now: 1000, workerTTL: nil))
        #expect(h.expectedWorkers == 4)
        #expect(Set(h.buckets.filter { $0.workers < 4 }.map(\.key)) == skipped)
        let w = try #require(fixed.window("L0", steps: 100, now: 1000, workerTTL: nil))
        #expect(w.completeSteps == 30 - skipped.count)

        // A world size above the workers seen: no step is complete.
        let larger = Self.registry(expected: 5)
        try Self.post(sent, to: larger)
        #expect(try #require(larger.window("L0", steps: 100, now: 1000, workerTTL: nil)).completeSteps == 0)
        #expect(larger.stepHeadlines(now: 1000, workerTTL: nil, recent: false)[0].lastComplete == nil)

        // Without it: the workers active within the TTL (all four posted at 1000), at least 1.
        let active = Self.registry()
        try Self.post(sent, to: active)
        #expect(
            try #require(active.history("L0", last: 1, now: 1030, workerTTL: 60)).expectedWorkers == 4)
        #expect(
            try #require(active.history("L0", last: 1, now: 1100, workerTTL: 60)).expectedWorkers == 1)
        // One worker falls silent: posted later by the other three only.
        let later = (30..<33).flatMap { step in
            (0..<3).map { w in
                Sent(
                    step: Int64(step), worker: "rank\(w)", counts: [UInt64](repeating: 1, count: 16), tokens: 16,
                    dropped: 0)
            }
        }
        _ = try active.ingest(later.map { Self.make($0) }, defaultLayer: nil, now: 2000)
        let h2 = try #require(active.history("L0", last: 3, now: 2010, workerTTL: 60))
        #expect(h2.expectedWorkers == 3)
        let head = active.stepHeadlines(now: 2010, workerTTL: 60, recent: true)[0]
        #expect(head.lastComplete?.label == 32)
        #expect(head.lastComplete?.workers == 3)
        #expect(head.recentMaxViolation != nil)
    }

    @Test func decisionsOlderThanTheHistoryAreLateAndCountInTheRunOnly() throws {
        let r = Self.registry(history: 16)
        let sent = Self.traffic(steps: 40, workers: 2, change: 100)
        try Self.post(sent, to: r)
        let h = try #require(r.history("L0", last: 100, now: 1000, workerTTL: nil))
        #expect(h.buckets.map(\.key) == (24..<40).map { Int64($0) })
        #expect(h.lateDecisions == 0)
        let late = Sent(step: 10, worker: "rank0", counts: [UInt64](repeating: 2, count: 16), tokens: 32, dropped: 0)
        let inWindow = Sent(
            step: 30, worker: "rank9", counts: [UInt64](repeating: 1, count: 16), tokens: 16, dropped: 0)
        let before = try #require(r.snapshot("L0")).totalTokens
        _ = try r.ingest([Self.make(late), Self.make(inWindow)], defaultLayer: nil, now: 1001)
        let h2 = try #require(r.history("L0", last: 100, now: 1001, workerTTL: nil))
        #expect(h2.lateDecisions == 1)
        #expect(h2.buckets.map(\.key) == h.buckets.map(\.key))
        #expect(try #require(r.snapshot("L0")).totalTokens == before + 48)
        let b30 = try #require(h2.buckets.first { $0.key == 30 })
        #expect(b30.workers == 3)
        // A jump forward keeps only the steps within the history of the new newest.
        _ = try r.ingest(
            [
                Self.make(
                    Sent(step: 45, worker: "rank0", counts: [UInt64](repeating: 1, count: 16), tokens: 16, dropped: 0))
            ], defaultLayer: nil, now: 1002)
        let h3 = try #require(r.history("L0", last: 100, now: 1002, workerTTL: nil))
        #expect(h3.buckets.map(\.key) == (30..<40).map { Int64($0) } + [45])
    }

    @Test func stepLessLayersAreBucketedByArrivalTime() throws {
        var c = StatsConfiguration()
        c.bucketSeconds = 10
        let r = LayerRegistry(configuration: c)
        for now in [100.0, 105, 109.9, 112, 131] {
            _ = try r.ingest([decision([3, 1])], defaultLayer: nil, now: now)
        }
        let h = try #require(r.history("L0", last: 10, now: 131, workerTTL: nil))
        #expect(h.bucketing == .time)
        #expect(h.buckets.map { h.label($0.key) } == [100, 110, 130])
        #expect(h.buckets.map(\.totals.decisions) == [3, 1, 1])
        #expect(h.buckets[0].totals.expertTokens == [9, 3])
        // A decision with a step in a time-bucketed layer still goes by its arrival.
        var d = decision([1, 1])
        d.step = 7
        _ = try r.ingest([d], defaultLayer: nil, now: 133)
        #expect(
            try #require(r.history("L0", last: 1, now: 133, workerTTL: nil)).buckets[0].totals.decisions
                == 2)
        // And a step-bucketed layer counts a decision without a step apart.
        var s = decision([1, 1], layer: "S")
        s.step = 1
        _ = try r.ingest([s, decision([1, 1], layer: "S")], defaultLayer: nil, now: 140)
        let hs = try #require(r.history("S", last: 10, now: 140, workerTTL: nil))
        #expect(hs.unbucketedDecisions == 1)
        #expect(hs.buckets.map(\.totals.decisions) == [1])
    }

    @Test func aRefusedBatchChangesNoBucket() throws {
        let r = Self.registry()
        try Self.post(Self.traffic(steps: 5, workers: 2, change: 100), to: r)
        let before = try #require(r.history("L0", last: 10, now: 1000, workerTTL: nil))
        var bad = decision([5, 5], tokens: 4)  // counts above total_tokens
        bad.step = 4
        var wrongDemand = Self.make(
            Sent(step: 4, worker: "rank0", counts: [UInt64](repeating: 1, count: 16), tokens: 16, dropped: 0))
        wrongDemand.expertDemand = [UInt64](repeating: 0, count: 16)
        for batch in [
            [
                Self.make(
                    Sent(step: 4, worker: "rank0", counts: [UInt64](repeating: 1, count: 16), tokens: 16, dropped: 0)),
                bad,
            ],
            [
                Self.make(
                    Sent(step: 5, worker: "rank0", counts: [UInt64](repeating: 1, count: 16), tokens: 16, dropped: 0)),
                wrongDemand,
            ],
        ] {
            #expect(throws: DecisionError.self) { try r.ingest(batch, defaultLayer: nil, now: 1001) }
        }
        let after = try #require(r.history("L0", last: 10, now: 1000, workerTTL: nil))
        #expect(after.buckets == before.buckets)
    }

    @Test func demandGivesOverflowPerStepAndOverTheRun() throws {
        let r = Self.registry()
        let served: [UInt64] = [4, 2, 0, 2]
        let a = Self.make(Sent(step: 1, worker: "a", counts: served, tokens: 8, dropped: 2), demand: [6, 2, 1, 2])
        let b = Self.make(Sent(step: 1, worker: "b", counts: served, tokens: 8, dropped: 0))
        let c = Self.make(Sent(step: 2, worker: "a", counts: served, tokens: 8, dropped: 0), demand: [4, 3, 0, 2])
        _ = try r.ingest([a, b, c], defaultLayer: nil, now: 1)
        let h = try #require(r.history("L0", last: 10, now: 1, workerTTL: nil))
        #expect(h.buckets[0].totals.expertOverflow == [2, 0, 1, 0])
        #expect(h.buckets[0].totals.demandDecisions == 1)
        #expect(h.buckets[1].totals.expertOverflow == [0, 1, 0, 0])
        let step1 = h.buckets[0].totals.measureInput(layer: "L0", experts: 4)
        // Served 16 in step 1 (b counts as demand = served), overflow 3.
        #expect(close(LayerMeasure.overflowRatio.unitValue(step1), 3.0 / 19.0))
        let run = try #require(r.snapshot("L0"))
        #expect(run.expertOverflow == [2, 1, 1, 0])
        #expect(run.demandDecisions == 2)
        #expect(close(LayerMeasure.overflowRatio.unitValue(run.measureInput(window: nil)), 4.0 / 28.0))
        // Without any demand the ratio does not exist.
        _ = try r.ingest([decision([1, 1], layer: "N")], defaultLayer: nil, now: 1)
        #expect(LayerMeasure.overflowRatio.unitValue(try #require(r.snapshot("N")).measureInput(window: nil)) == nil)
        // Refused: another length, or served above demand.
        for demand in [[UInt64]([6, 2, 1]), [3, 2, 0, 2]] {
            let bad = Self.make(Sent(step: 3, worker: "a", counts: served, tokens: 8, dropped: 0), demand: demand)
            #expect(throws: DecisionError.self) { try r.ingest([bad], defaultLayer: nil, now: 2) }
        }
    }

    @Test func manyWorkersWidenTheWorkerSets() throws {
        let r = Self.registry(history: 8)
        var batch = [RoutingDecision]()
        for w in 0..<150 {
            var d = decision([1, 0])
            d.worker = "w\(w)"
            d.step = 3
            batch.append(d)
            batch.append(d)  // twice: counted once
        }
        var anonymous = decision([0, 1])
        anonymous.step = 3
        batch.append(anonymous)
        _ = try r.ingest(batch, defaultLayer: nil, now: 1)
        let h = try #require(r.history("L0", last: 1, now: 1, workerTTL: nil))
        #expect(h.buckets[0].workers == 151)
        #expect(h.buckets[0].totals.decisions == 301)
    }
}
