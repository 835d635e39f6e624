import TestTools
import Testing

@testable import MoEStats

/// Every fast path beside the path it shortcuts, on the same input: the compact count-array scan
/// against the general element-by-element reading, the load check from the decoder's running sum
/// and maximum against a plain loop, and the registry's path for batches into existing layers
/// against applying the same decisions one at a time.
@Suite struct FastPathTests {
    typealias Generator = SplitMix64

    /// The counts in the compact form the fast scan reads, and in a spaced form (a space after
    /// every comma) that sends every element but the first to the general path.
    static func bodies(_ counts: [UInt64], total: UInt64) -> (compact: String, spaced: String) {
        let list = counts.map(String.init)
        return (
            #"{"expert_capacities":[\#(list.joined(separator: ","))],"total_tokens":\#(total)}"#,
            #"{"expert_capacities":[\#(list.joined(separator: ", "))],"total_tokens":\#(total)}"#
        )
    }

    @Test func compactAndSpacedArraysDecodeAlike() throws {
        var g = Generator(seed: 1)
        // Lengths around the scratch array's initial size (256) and its growth.
        for experts in [1, 2, 63, 64, 255, 256, 257, 511, 512, 513, 1500] {
            // Every digit count from 1 to 19 (one 19-digit count, so that the sum fits), and zeros.
            let counts: [UInt64] = (0..<experts).map { i in
                switch i % 5 {
                case 0: return 0
                case 1: return g.below(10)
                case 2: return g.below(1_000)
                case 3 where i == 3: return 1_000_000_000_000_000_000 + g.below(8_000_000_000_000_000_000)  // 19 digits
                default:  // 1 to 15 digits, evenly
                    let digits = Int(g.below(15)) + 1
                    var limit: UInt64 = 1
                    for _ in 0..<digits { limit *= 10 }
                    return g.below(limit)
                }
            }
            let total = counts.max()!
            let (compact, spaced) = Self.bodies(counts, total: total)
            let a = try decodeDecisions(compact)
            let b = try decodeDecisions(spaced)
            #expect(a.count == 1 && a[0].expertCounts == counts, "compact, \(experts) experts")
            #expect(a == b, "spaced, \(experts) experts")
        }
    }

    @Test func twentyDigitCountsLeaveTheFastScan() throws {
        let big: UInt64 = 18_446_744_073_709_551_615  // UInt64.max: 20 digits
        let d = try decodeDecisions(#"{"expert_capacities":[0,\#(big),0],"total_tokens":\#(big)}"#)
        #expect(d[0].expertCounts == [0, big, 0])
    }

    /// The same malformed or invalid element, first reached by the fast scan, then by the general
    /// path, gives the same error.
    @Test(arguments: [
        ("01", DecisionError.Kind.malformed), ("1.5", .malformed), ("1e3", .malformed), ("-1", .invalid),
        ("18446744073709551616", .invalid), ("\"1\"", .malformed), ("null", .malformed), ("1 2", .malformed),
        ("1,]", .malformed), ("[1]", .malformed), ("1,", .malformed),
    ])
    func elementErrorsAgreeOnBothPaths(element: String, kind: DecisionError.Kind) throws {
        let compact = decodeError(#"{"expert_capacities":[7,8,\#(element)],"total_tokens":100}"#)
        let spaced = decodeError(#"{"expert_capacities":[7, 8, \#(element)],"total_tokens":100}"#)
        #expect(compact?.kind == kind)
        #expect(compact?.field == spaced?.field)
        #expect(compact?.kind == spaced?.kind)
        #expect(compact?.field != nil)
    }

    /// Integer fields read directly (plain digits) or by the general number scanner give the
    /// same values and the same errors; a leading space sends the value to neither shortcut.
    @Test(arguments: [
        ("0", true), ("7", true), ("1234567890123456789", true), ("18446744073709551615", true),
        ("-0", true), ("00", false), ("01", false), ("1.0", false), ("1e2", false), ("1E2", false),
        ("18446744073709551616", false), ("-1", false), ("1.", false), ("12345678901234567890", true),
        ("9223372036854775808", true),
    ])
    func integerFieldsAgreeOnBothPaths(text: String, accepted: Bool) {
        for field in ["total_tokens", "step"] {
            func body(_ space: String) -> String {
                #"{"expert_capacities":[0],"\#(field)":\#(space)\#(text)\#(field == "step" ? #","total_tokens":1"# : "")}"#
            }
            let compact = body(""), spaced = body(" ")
            let a = try? decodeDecisions(compact)
            let b = try? decodeDecisions(spaced)
            #expect(a == b, "\(field) \(text)")
            if field == "total_tokens" {  // `step` has a lower maximum (Int64.max): compared only
                #expect((a != nil) == accepted, "\(field) \(text)")
            }
            if a == nil {
                let e1 = decodeError(compact), e2 = decodeError(spaced)
                #expect(e1 != nil && e1?.kind == e2?.kind && e1?.field == e2?.field, "\(field) \(text)")
            }
        }
        let topK = decodeError(#"{"expert_capacities":[1],"total_tokens":1,"top_k":0}"#)
        #expect(topK?.kind == .invalid && topK?.field == "top_k")
    }

    @Test func truncatedArraysAreRefusedOnBothPaths() {
        for text in [
            #"{"expert_capacities":[1,2"#, #"{"expert_capacities":[1,2,"#, #"{"expert_capacities":[1, 2"#,
            #"{"expert_capacities":[12345678901234567890"#,
        ] {
            let e = decodeError(text)
            #expect(e?.kind == .malformed, "\(text)")
            #expect(e?.field == nil, "\(text)")
        }
    }

    @Test func expertLimitIsTheSameOnBothPaths() {
        var limits = DecisionDecoder.Limits()
        for maxExperts in [1, 3, 256, 300] {
            limits.maxExperts = maxExperts
            let fits = [UInt64](repeating: 1, count: maxExperts)
            let over = [UInt64](repeating: 1, count: maxExperts + 1)
            for (body, expected) in [(Self.bodies(fits, total: 1), true), (Self.bodies(over, total: 1), false)] {
                for text in [body.compact, body.spaced] {
                    if expected {
                        #expect((try? decodeDecisions(text, limits: limits))?.first?.expertCounts == fits)
                    } else {
                        let e = decodeError(text, limits: limits)
                        #expect(e?.kind == .tooManyExperts)
                        #expect(e?.field == "expert_capacities[\(maxExperts)]")
                    }
                }
            }
        }
    }

    @Test func sumOverflowIsRefusedOnBothPaths() {
        let half: UInt64 = 1 << 63
        for sep in [",", ", "] {
            let e = decodeError(#"{"expert_capacities":[\#(half)\#(sep)\#(half)],"total_tokens":\#(half)}"#)
            #expect(e?.kind == .invalid)
            #expect(e?.field == "expert_capacities[1]")
        }
    }

    /// The layer-name table against the rule written out, for every byte and at the length bounds.
    @Test func layerNameTableMatchesTheRule() {
        func rule(_ b: UInt8) -> Bool {
            (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || (b >= 0x30 && b <= 0x39)
                || b == 0x5F || b == 0x2E || b == 0x3A || b == 0x2D
        }
        for b in 0...255 {
            let byte = UInt8(b)
            #expect(LayerName.allowed(byte) == rule(byte), "byte \(b)")
            let one = [byte].withUnsafeBufferPointer { LayerName.isValid($0) }
            #expect(one == rule(byte), "byte \(b)")
            if byte < 0x80 {
                let name = "a" + String(Character(Unicode.Scalar(byte)))
                #expect(LayerName.isValid(name) == rule(byte) && LayerRegistry.isValidLayerName(name) == rule(byte))
            }
        }
        #expect(LayerName.isValid(String(repeating: "x", count: 64)))
        #expect(!LayerName.isValid(String(repeating: "x", count: 65)))
        #expect(!LayerName.isValid(""))
        #expect(!LayerName.isValid("é"))
    }

    /// Worker names of printable ASCII are checked on their bytes; anything else by characters,
    /// with the same verdicts.
    @Test func workerNamesOnBothPaths() throws {
        for (worker, accepted) in [
            ("rank-5", true), (" ~", true), ("é-ü", true), (String(repeating: "w", count: 128), true),
            (String(repeating: "é", count: 128), true), ("", false), ("a\u{7F}", false),
            ("a\u{85}", false), ("\u{1F}", false), (String(repeating: "w", count: 129), false),
            (String(repeating: "é", count: 129), false),
        ] {
            var escaped = ""
            for s in worker.unicodeScalars {
                escaped +=
                    s.value < 0x20 || s.value == 0x7F
                    ? "\\u00" + (s.value < 0x10 ? "0" : "") + String(s.value, radix: 16) : String(s)
            }
            let body = minimal(#""worker":"\#(escaped)""#)
            if accepted {
                #expect(try decodeDecisions(body).first?.worker == worker, "\(worker)")
            } else {
                let e = decodeError(body)
                #expect(e?.kind == .invalid && e?.field == "worker", "\(worker)")
            }
        }
    }

    /// The plain definition of `RoutingDecision.loadProblem`, to check both fast versions.
    static func referenceLoadProblem(_ counts: [UInt64], totalTokens: UInt64, topK: Int?) -> RoutingDecision
        .LoadProblem?
    {
        for (i, c) in counts.enumerated() where c > totalTokens { return .expertAboveTotal(expert: i, load: c) }
        guard let k = topK, k >= 1 else { return nil }
        var sum: UInt64 = 0
        var overflow = false
        for c in counts {
            let (s, o) = sum.addingReportingOverflow(c)
            if o { overflow = true }
            sum = s
        }
        let (limit, limitOverflow) = UInt64(k).multipliedReportingOverflow(by: totalTokens)
        if limitOverflow { return nil }
        if overflow { return .sumAboveTopK(sum: .max, topK: k) }
        return sum > limit ? .sumAboveTopK(sum: sum, topK: k) : nil
    }

    @Test func loadChecksAgreeWithThePlainDefinition() {
        var g = Generator(seed: 7)
        var cases: [([UInt64], UInt64, Int?)] = [
            ([.max, 1], .max, 1),  // the sum overflows; the limit is exactly UInt64.max
            ([.max, .max], .max, 2),  // the limit overflows: no sum problem
            ([5, 6], 5, nil), ([5, 5], 5, 1), ([5, 5], 5, 2), ([0], 0, 1),
            ([1 << 62, 1 << 62, 1 << 62, 1 << 62], 1 << 62, 3),
        ]
        for _ in 0..<2_000 {
            let n = Int(g.below(6)) + 1
            let total: UInt64 = [g.below(10), g.next(), .max, 1 << 63][Int(g.below(4))]
            let counts = (0..<n).map { _ in g.below(4) == 0 ? g.next() : (total == 0 ? 0 : g.below(total) + g.below(2))
            }
            let k: Int? = g.below(3) == 0 ? nil : Int(g.below(UInt64(n) + 1))
            cases.append((counts, total, k))
        }
        for (counts, total, k) in cases {
            let expected = Self.referenceLoadProblem(counts, totalTokens: total, topK: k)
            #expect(
                RoutingDecision.loadProblem(counts, totalTokens: total, topK: k) == expected,
                "\(counts) \(total) \(String(describing: k))")
            // The decoder's version, with the sum and maximum it computes (only for sums it accepts).
            let (sum, overflow) = counts.reduce((UInt64(0), false)) { acc, c in
                let (s, o) = acc.0.addingReportingOverflow(c)
                return (s, acc.1 || o)
            }
            if !overflow {
                #expect(
                    RoutingDecision.loadProblem(counts, sum: sum, largest: counts.max()!, totalTokens: total, topK: k)
                        == expected)
            }
        }
    }

    // MARK: - registry

    static func batch(layers: [String], experts: Int, seed: UInt64, workers: Bool = true) -> [RoutingDecision] {
        var g = Generator(seed: seed)
        return layers.enumerated().map { i, layer in
            let counts = (0..<experts).map { _ in g.below(50) }
            let total = counts.max()! + g.below(3)
            return RoutingDecision(
                layer: layer, worker: workers ? "rank-\(i % 3)" : nil,
                topK: g.below(2) == 0 ? nil : experts,
                expertCapacity: g.below(3) == 0 ? Int(g.below(40)) + 1 : nil,
                capacityFactor: g.below(2) == 0 ? 1.25 : nil,
                latencyMs: g.below(4) == 0 ? nil : Double(g.below(2_000)) / 100,
                expertCounts: counts, totalTokens: total, tokensDropped: g.below(total + 1),
                loadBalanceLoss: g.below(5) == 0 ? .nonFinite : .value(Double(g.below(100)) / 7),
                routerZLoss: .value(0.5), auxiliaryLoss: g.below(2) == 0 ? .absent : .value(1))
        }
    }

    /// Batches naming several existing layers (interleaved, repeated, in no particular order)
    /// leave exactly the state that applying their decisions one by one leaves.
    @Test func multiLayerBatchesMatchOneByOne() throws {
        var config = StatsConfiguration()
        config.defaultTopK = 2
        let fast = LayerRegistry(configuration: config)
        let slow = LayerRegistry(configuration: config)
        let names = ["L10", "L2", "a", "L0", "b.1", "L1"]
        // The first batch creates the layers (general path) in both.
        let first = Self.batch(layers: names, experts: 4, seed: 1)
        #expect(try fast.ingest(first, defaultLayer: nil, now: 1) == names.count)
        for d in first { _ = try slow.ingest([d], defaultLayer: nil, now: 1) }
        for round in 0..<20 {
            var g = Generator(seed: UInt64(100 + round))
            let layers = (0..<Int(g.below(12)) + 2).map { _ in names[Int(g.below(UInt64(names.count)))] }
            let batch = Self.batch(layers: layers, experts: 4, seed: UInt64(round))
            #expect(try fast.ingest(batch, defaultLayer: nil, now: Double(round + 2)) == batch.count)
            for d in batch { _ = try slow.ingest([d], defaultLayer: nil, now: Double(round + 2)) }
        }
        #expect(fast.exportState() == slow.exportState())
        // Order within a layer is the body's: the newest counts are those of the last decision.
        let last = Self.batch(layers: ["L2", "L0", "L2"], experts: 4, seed: 99)
        _ = try fast.ingest(last, defaultLayer: nil, now: 50)
        #expect(fast.snapshot("L2")?.lastCounts == last[2].expertCounts)
    }

    /// A batch that the existing-layers path cannot take (a new layer, a conflict) goes to the
    /// general path, which applies it or refuses it whole.
    @Test func multiLayerBatchesFallBackForNewLayersAndConflicts() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        _ = try r.ingest(Self.batch(layers: ["a", "b"], experts: 3, seed: 1), defaultLayer: nil, now: 1)
        let before = r.exportState()
        let conflict =
            Self.batch(layers: ["a", "b"], experts: 3, seed: 2) + Self.batch(layers: ["b"], experts: 2, seed: 3)
        RegistryTests.expectError(.conflict, field: "expert_capacities", index: 2) {
            try r.ingest(conflict, defaultLayer: nil, now: 2)
        }
        #expect(r.exportState() == before)
        #expect(try r.ingest(Self.batch(layers: ["b", "c", "a"], experts: 3, seed: 4), defaultLayer: nil, now: 3) == 3)
        #expect(r.layerCount == 3)
        #expect(r.snapshot("a")?.totalRoutings == 2 && r.snapshot("c")?.totalRoutings == 1)
    }

    /// The last-worker shortcut against a plain model of the worker table, through a full table,
    /// new workers, repeats, and a restore (which must forget the shortcut's position).
    @Test func workerTableMatchesAModel() throws {
        var config = StatsConfiguration()
        config.maxWorkersPerLayer = 3
        var r = LayerRegistry(configuration: config)
        var model: [String: (lastSeen: Double, decisions: UInt64)] = [:]
        var untracked: UInt64 = 0
        var g = Generator(seed: 11)
        let names = ["w0", "w1", "w2", "w3", "w4"]
        for step in 0..<400 {
            // Runs of one worker, as a job's worker posting every layer in turn sends them.
            let name = names[Int(g.below(g.below(3) == 0 ? 5 : 2))]
            let now = Double(step)
            var d = decision([1, 2])
            d.worker = name
            _ = try r.ingest([d], defaultLayer: nil, now: now)
            if model[name] != nil {
                model[name] = (now, model[name]!.decisions + 1)
            } else if model.count < 3 {
                model[name] = (now, 1)
            } else {
                untracked += 1
            }
            if step == 200 {
                r = try LayerRegistry(configuration: config, restoringFrom: r.exportState())
            }
        }
        let s = try #require(r.snapshot("L0"))
        #expect(s.untrackedWorkerDecisions == untracked)
        #expect(s.workers.count == model.count)
        for w in s.workers {
            #expect(model[w.worker]?.decisions == w.decisions, "\(w.worker)")
            #expect(model[w.worker]?.lastSeen == w.lastSeen, "\(w.worker)")
        }
    }

    /// Decisions without a layer take the path's; mixed with decisions naming it, they stay one
    /// layer (the one-layer path), and the layer check still applies.
    @Test func defaultLayerInMultiDecisionBatches() throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        var batch = Self.batch(layers: ["p", "p"], experts: 2, seed: 5)
        batch[0].layer = nil
        #expect(try r.ingest(batch, defaultLayer: "p", now: 1) == 2)
        #expect(r.snapshot("p")?.totalRoutings == 2)
    }

    /// Two threads posting batches over the same layers in opposite orders must not deadlock
    /// (both lock in one fixed order), and every decision is counted.
    @Test func concurrentMultiLayerBatchesDoNotDeadlock() async throws {
        let r = LayerRegistry(configuration: StatsConfiguration())
        let names = (0..<8).map { "L\($0)" }
        _ = try r.ingest(Self.batch(layers: names, experts: 2, seed: 1, workers: false), defaultLayer: nil, now: 0)
        let forward = Self.batch(layers: names, experts: 2, seed: 2, workers: false)
        let backward = Self.batch(layers: names.reversed(), experts: 2, seed: 3, workers: false)
        await withTaskGroup(of: Void.self) { group in
            for batch in [forward, backward] {
                group.addTask {
                    for i in 0..<300 { _ = try? r.ingest(batch, defaultLayer: nil, now: Double(i)) }
                }
            }
        }
        for name in names { #expect(r.snapshot(name)?.totalRoutings == 601) }
    }
}
