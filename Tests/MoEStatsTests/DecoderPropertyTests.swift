import Foundation
import TestTools
import Testing

@testable import MoEStats

/// Builds random decision documents as Foundation objects, valid most of the time and with one
/// deliberate defect otherwise.
struct DocumentGenerator {
    var rng: SplitMix64

    mutating func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
    mutating func int(_ r: ClosedRange<Int>) -> Int { Int.random(in: r, using: &rng) }

    mutating func double() -> Double {
        switch int(0...5) {
        case 0: return Double(int(0...1000))
        case 1: return Double.random(in: 0...1, using: &rng)
        case 2: return Double.random(in: -1e6...1e6, using: &rng)
        case 3: return Double(Float.random(in: 0...10, using: &rng))  // what torsh's f32 losses become
        case 4:
            return Double(sign: .plus, exponent: int(-1070...1020), significand: Double.random(in: 1..<2, using: &rng))
        default: return Double(int(0...99)) / 100
        }
    }

    mutating func string(maxLength: Int, pool: [Character]) -> String {
        String((0..<int(1...maxLength)).map { _ in pool[int(0...(pool.count - 1))] })
    }

    static let layerPool = Array("abcXYZ019_.:-")
    static let workerPool: [Character] = Array("aZ9 -_./\\\"'{}[]:,é€😀\u{7F}\u{A0}\u{2028}\u{1}\u{9F}")

    mutating func jsonValue(depth: Int) -> Any {
        switch int(depth > 2 ? 0...4 : 0...6) {
        case 0: return int(-1_000_000...1_000_000)
        case 1: return double()
        case 2: return string(maxLength: 8, pool: Self.workerPool)
        case 3: return chance(0.5)
        case 4: return NSNull()
        case 5: return (0..<int(0...3)).map { _ in jsonValue(depth: depth + 1) }
        default:
            var o: [String: Any] = [:]
            for _ in 0..<int(0...3) { o[string(maxLength: 5, pool: Self.workerPool)] = jsonValue(depth: depth + 1) }
            return o
        }
    }

    /// One decision object.
    mutating func decision() -> [String: Any] {
        var d: [String: Any] = [:]
        let experts = int(1...80)
        let total = int(0...1_000_000)
        // Realistic loads: each expert at most every token, all of them at most k per token.
        let k = int(1...experts)
        let perExpert = min(total, k * total / experts)
        var counts = (0..<experts).map { _ in int(0...perExpert) }
        if chance(0.05) { counts[int(0...(experts - 1))] = Int.max - int(0...10) }
        d[chance(0.8) ? "expert_capacities" : "tokens_per_expert"] = counts
        d["total_tokens"] = total
        if chance(0.7) { d["tokens_dropped"] = int(0...total) }
        for key in ["load_balance_loss", "router_z_loss", "auxiliary_loss"] where chance(0.8) {
            d[key] = chance(0.2) ? NSNull() : double()
        }
        if chance(0.5) {
            var tokens: [[Any]] = []
            for t in 0..<int(0...6) {
                tokens.append(
                    (0..<int(0...3)).map { rank in
                        [
                            "expert_id": int(0...(experts - 1)), "probability": Double.random(in: 0...1, using: &rng),
                            "token_idx": t, "expert_rank": rank,
                        ] as [String: Any]
                    })
            }
            d["expert_assignments"] = tokens
        }
        if chance(0.5) { d["layer"] = chance(0.7) ? string(maxLength: 64, pool: Self.layerPool) : int(0...100_000) }
        if chance(0.5) { d["worker"] = chance(0.7) ? string(maxLength: 20, pool: Array("abc-_.0 é😀")) : int(0...4096) }
        if chance(0.5) { d["step"] = int(0...Int.max) }
        if chance(0.5) { d["top_k"] = k }
        if chance(0.3) { d["expert_capacity"] = int(1...100_000) }
        if chance(0.3) { d["capacity_factor"] = Double.random(in: 0.01...4, using: &rng) }
        if chance(0.5) { d["latency_ms"] = abs(double()) }
        if chance(0.3) { d["null_field"] = NSNull() }
        for _ in 0..<int(0...2) { d["extra_" + string(maxLength: 4, pool: Self.layerPool)] = jsonValue(depth: 1) }
        if chance(0.35) { injectDefect(&d, experts: experts) }
        return d
    }

    /// Replaces one count, keeping the expert count (so assignments stay in range).
    func setCount(_ d: inout [String: Any], at i: Int, to value: Any) {
        let key = d["expert_capacities"] != nil ? "expert_capacities" : "tokens_per_expert"
        var counts = d[key] as! [Any]
        counts[i] = value
        d[key] = counts
    }

    /// One thing a worker could get wrong; the reference decides whether it is an error.
    mutating func injectDefect(_ d: inout [String: Any], experts: Int) {
        switch int(0...19) {
        case 0: d["total_tokens"] = -int(1...5)
        case 1: d["tokens_dropped"] = (d["total_tokens"] as! Int) + int(1...5)
        case 2: d.removeValue(forKey: "total_tokens")
        case 3: d.removeValue(forKey: "expert_capacities"); d.removeValue(forKey: "tokens_per_expert")
        case 4:
            let counts = d["expert_capacities"] ?? d["tokens_per_expert"]!
            d["expert_capacities"] = counts
            d["tokens_per_expert"] = counts
        case 5: setCount(&d, at: int(0...(experts - 1)), to: -int(1...9))
        case 6: d["total_tokens"] = "12"
        case 7: d["layer"] = string(maxLength: 70, pool: Self.workerPool)
        case 8: d["worker"] = string(maxLength: 140, pool: Self.workerPool)
        case 9: d["latency_ms"] = -Double.random(in: 0.001...10, using: &rng)
        case 10: d["top_k"] = int(0...1) == 0 ? 0 : experts + int(1...3)
        case 11: d["capacity_factor"] = -Double(int(0...3))
        case 12:
            d["expert_assignments"] = [
                [
                    ["expert_id": experts + int(0...3), "probability": 0.5, "token_idx": 0, "expert_rank": 0]
                        as [String: Any]
                ]
            ]
        case 13:
            d["expert_assignments"] = [
                [
                    [
                        "expert_id": 0, "probability": 1 + Double.random(in: 0.001...2, using: &rng), "token_idx": 0,
                        "expert_rank": 0,
                    ] as [String: Any]
                ]
            ]
        case 14: d["expert_assignments"] = [[["expert_id": 0, "probability": 0.5, "token_idx": 0] as [String: Any]]]
        case 15: d["load_balance_loss"] = [1]
        case 16: d["layer"] = -int(1...100)
        case 17:
            // One expert with more tokens than the batch held.
            setCount(&d, at: int(0...(experts - 1)), to: (d["total_tokens"] as! Int) + int(1...5))
        case 18:
            // Every expert receives every token, more than top-1 allows (with two experts or more).
            let total = max(1, d["total_tokens"] as! Int)
            d["total_tokens"] = total
            d["top_k"] = 1
            for i in 0..<experts { setCount(&d, at: i, to: total) }
        default: setCount(&d, at: int(0...(experts - 1)), to: Double(int(0...9)) + 0.5)
        }
    }
}

/// An independent decoding of the same rules from Foundation's parse of the document, to compare
/// with `DecisionDecoder`. Returns the decision, or the kind of error expected.
struct Refusal: Error, Equatable {
    var kind: DecisionError.Kind
    static let malformed = Refusal(kind: .malformed)
    static let invalid = Refusal(kind: .invalid)
}

enum ReferenceDecoder {
    static func decode(_ object: Any) -> Result<RoutingDecision, Refusal> {
        do throws(Refusal) {
            return .success(try decision(object))
        } catch {
            return .failure(error)
        }
    }

    static func number(_ v: Any?) -> Double? {
        guard let v, !(v is String), !(v is NSNull), !(v is [Any]), !(v is [String: Any]) else { return nil }
        if let i = v as? Int { return Double(i) }
        if let n = v as? NSNumber { return n.doubleValue }
        return v as? Double
    }

    static func count(_ v: Any?, max: UInt64 = .max, min: UInt64 = 0) throws(Refusal) -> UInt64 {
        guard let v, !(v is String), !(v is NSNull), !(v is [Any]), !(v is [String: Any]) else { throw .malformed }
        // The generator writes non-integers in count fields only as fractional values.
        guard let i = v as? Int else { throw .malformed }
        guard i >= 0 else { throw .invalid }
        let u = UInt64(i)
        guard u >= min && u <= max else { throw .invalid }
        return u
    }

    static func decision(_ object: Any) throws(Refusal) -> RoutingDecision {
        guard let o = object as? [String: Any] else { throw .malformed }
        func loss(_ key: String) throws(Refusal) -> Loss {
            guard let v = o[key] else { return .absent }
            if v is NSNull { return .nonFinite }
            guard let n = number(v) else { throw .malformed }
            return .value(n)
        }
        func name(_ key: String, isLayer: Bool) throws(Refusal) -> String? {
            guard let v = o[key], !(v is NSNull) else { return nil }
            if !(v is String), let i = v as? Int {
                guard i >= 0 else { throw .invalid }
                return String(i)
            }
            guard let s = v as? String else { throw .malformed }
            if isLayer {
                guard LayerName.isValid(s) else { throw .invalid }
                return s
            }
            let scalars = s.unicodeScalars
            let printable = scalars.allSatisfy { $0.value >= 0x20 && !(0x7F...0x9F).contains($0.value) }
            guard printable && (1...128).contains(scalars.count) else { throw .invalid }
            return s
        }
        if o["expert_capacities"] != nil && o["tokens_per_expert"] != nil { throw .malformed }
        guard let list = (o["expert_capacities"] ?? o["tokens_per_expert"]) as? [Any] else { throw .malformed }
        var counts: [UInt64] = []
        var sum: UInt64 = 0
        for v in list {
            let c = try count(v)
            let (s, overflow) = sum.addingReportingOverflow(c)
            if overflow { throw .invalid }
            sum = s
            counts.append(c)
        }
        if counts.isEmpty { throw .invalid }
        guard o["total_tokens"] != nil else { throw .malformed }
        var d = RoutingDecision(expertCounts: counts, totalTokens: try count(o["total_tokens"]))
        if let v = o["tokens_dropped"] { d.tokensDropped = try count(v) }
        d.loadBalanceLoss = try loss("load_balance_loss")
        d.routerZLoss = try loss("router_z_loss")
        d.auxiliaryLoss = try loss("auxiliary_loss")
        d.layer = try name("layer", isLayer: true)
        d.worker = try name("worker", isLayer: false)
        if let v = o["step"], !(v is NSNull) { d.step = Int64(try count(v, max: UInt64(Int64.max))) }
        if let v = o["top_k"], !(v is NSNull) { d.topK = Int(try count(v, max: UInt64(Int.max), min: 1)) }
        if let v = o["expert_capacity"], !(v is NSNull) {
            d.expertCapacity = Int(try count(v, max: UInt64(Int.max), min: 1))
        }
        if let v = o["capacity_factor"], !(v is NSNull) {
            guard let f = number(v) else { throw .malformed }
            guard f > 0 else { throw .invalid }
            d.capacityFactor = f
        }
        if let v = o["latency_ms"], !(v is NSNull) {
            guard let f = number(v) else { throw .malformed }
            guard f >= 0 else { throw .invalid }
            d.latencyMs = f
        }
        if let v = o["expert_assignments"], !(v is NSNull) {
            guard let tokens = v as? [Any] else { throw .malformed }
            for t in tokens {
                guard let entries = t as? [Any] else { throw .malformed }
                for e in entries {
                    guard let a = e as? [String: Any] else { throw .malformed }
                    for key in ["expert_id", "probability", "token_idx", "expert_rank"] where a[key] == nil {
                        throw .malformed
                    }
                    let id = try count(a["expert_id"])
                    _ = try count(a["token_idx"])
                    _ = try count(a["expert_rank"])
                    if a["probability"] is NSNull { throw .invalid }
                    guard let p = number(a["probability"]) else { throw .malformed }
                    guard p >= 0 && p <= 1 else { throw .invalid }
                    guard id < UInt64(counts.count) else { throw .invalid }
                }
            }
            d.assignmentCount = tokens.count
        }
        guard d.tokensDropped <= d.totalTokens else { throw .invalid }
        if let k = d.topK, k > counts.count { throw .invalid }
        // A token reaches an expert at most once, and at most top_k experts.
        if counts.contains(where: { $0 > d.totalTokens }) { throw .invalid }
        if let k = d.topK {
            let (limit, overflow) = UInt64(k).multipliedReportingOverflow(by: d.totalTokens)
            if !overflow && sum > limit { throw .invalid }
        }
        return d
    }
}

/// The fields that differ between two lists of decisions, for readable failures.
func differences(_ a: [RoutingDecision], _ b: [RoutingDecision]) -> String {
    guard a.count == b.count else { return "\(a.count) decisions vs \(b.count)" }
    var out: [String] = []
    for (i, (x, y)) in zip(a, b).enumerated() {
        for (l, r) in zip(Mirror(reflecting: x).children, Mirror(reflecting: y).children)
        where String(describing: l.value) != String(describing: r.value) {
            out.append("[\(i)].\(l.label ?? "?"): \(l.value) vs \(r.value)")
        }
    }
    return out.joined(separator: "; ")
}

/// Equal, except that doubles may differ in their last digits (relative 1e-14: swift-corelibs-
/// foundation's JSONSerialization was seen up to about 10 units in the last place off).
func nearlyEqual(_ a: [RoutingDecision], _ b: [RoutingDecision]) -> Bool {
    func close(_ x: Double?, _ y: Double?) -> Bool {
        guard let x, let y else { return x == nil && y == nil }
        return x == y || abs(x - y) <= 1e-14 * max(abs(x), abs(y))
    }
    func close(_ x: Loss, _ y: Loss) -> Bool {
        if case .value(let p) = x, case .value(let q) = y { return close(p, q) }
        return x == y
    }
    guard a.count == b.count else { return false }
    for (x, y) in zip(a, b) {
        var x2 = x
        x2.capacityFactor = y.capacityFactor
        x2.latencyMs = y.latencyMs
        x2.loadBalanceLoss = y.loadBalanceLoss
        x2.routerZLoss = y.routerZLoss
        x2.auxiliaryLoss = y.auxiliaryLoss
        guard x2 == y, close(x.capacityFactor, y.capacityFactor), close(x.latencyMs, y.latencyMs),
            close(x.loadBalanceLoss, y.loadBalanceLoss), close(x.routerZLoss, y.routerZLoss),
            close(x.auxiliaryLoss, y.auxiliaryLoss)
        else { return false }
    }
    return true
}

/// What Foundation's `JSONSerialization` accepts and we refuse, checked here independently of our
/// scanner on a document Foundation accepted: a trailing comma before `]` or `}`, a leading byte
/// order mark, and a name repeated in one object (compared by raw bytes). A document with any of
/// them is expected to be refused by us.
func foundationLeniency(_ bytes: [UInt8]) -> Bool {
    if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { return true }
    var lastSignificant: UInt8 = 0
    // One entry per open container: the names seen so far, nil for an array.
    var names: [Set<[UInt8]>?] = []
    var i = 0
    while i < bytes.count {
        let b = bytes[i]
        switch b {
        case UInt8(ascii: "\""):
            var j = i + 1
            while j < bytes.count && bytes[j] != UInt8(ascii: "\"") { j += bytes[j] == UInt8(ascii: "\\") ? 2 : 1 }
            let isName =
                lastSignificant == UInt8(ascii: "{")
                || (lastSignificant == UInt8(ascii: ",") && names.last.map { $0 != nil } == true)
            if isName, names.last != nil,
                names[names.count - 1]!.insert(Array(bytes[(i + 1)..<min(j, bytes.count)])).inserted == false
            {
                return true
            }
            i = j
            lastSignificant = b
        case 0x20, 0x09, 0x0A, 0x0D:
            break
        case UInt8(ascii: "{"), UInt8(ascii: "["):
            names.append(b == UInt8(ascii: "{") ? [] : nil)
            lastSignificant = b
        case UInt8(ascii: "]"), UInt8(ascii: "}"):
            if lastSignificant == UInt8(ascii: ",") { return true }
            if !names.isEmpty { names.removeLast() }
            lastSignificant = b
        default:
            lastSignificant = b
        }
        i += 1
    }
    return false
}

@Suite("Decision decoder: properties against Foundation")
struct DecoderPropertyTests {
    @Test func randomDocumentsDecodeLikeFoundation() throws {
        var gen = DocumentGenerator(rng: SplitMix64(seed: 0x5EED_0001))
        var accepted = 0
        var refused = 0
        for iteration in 0..<3000 {
            let batchSize = gen.chance(0.3) ? gen.int(1...4) : 0
            let decisions = (0..<max(batchSize, 1)).map { _ in gen.decision() }
            let format: DecisionDecoder.Format = batchSize > 0 && gen.chance(0.5) ? .ndjson : .json
            var body: [UInt8]
            switch (batchSize, format) {
            case (0, _): body = Array(try JSONSerialization.data(withJSONObject: decisions[0]))
            case (_, .json): body = Array(try JSONSerialization.data(withJSONObject: decisions))
            case (_, .ndjson):
                body = []
                for d in decisions {
                    body += Array(try JSONSerialization.data(withJSONObject: d))
                    body += gen.chance(0.5) ? [0x0D, 0x0A] : [0x0A]
                    if gen.chance(0.2) { body += [0x20, 0x0A] }
                }
            }
            // The reference runs twice: on what Foundation parses back from the same bytes (its
            // verdict must match ours, its numbers within 1e-14 relative, because swift-corelibs-foundation's
            // JSONSerialization does not round every decimal to the nearest double), and on the
            // generated objects themselves (JSONSerialization writes 17 significant digits, so a
            // correctly rounding parser must give back exactly the generated doubles).
            var expected: [RoutingDecision] = []
            var throughFoundation: [RoutingDecision] = []
            var expectedFailure: (index: Int, kind: DecisionError.Kind)? = nil
            for (i, d) in decisions.enumerated() {
                let parsed = try JSONSerialization.jsonObject(with: try JSONSerialization.data(withJSONObject: d))
                let viaFoundation = ReferenceDecoder.decode(parsed)
                let direct = ReferenceDecoder.decode(d)
                switch (direct, viaFoundation) {
                case (.success(let r), .success(let f)):
                    expected.append(r)
                    throughFoundation.append(f)
                case (.failure(let a), .failure(let b)):
                    #expect(a == b, "iteration \(iteration): the reference disagrees with itself")
                    if expectedFailure == nil { expectedFailure = (i, a.kind) }
                default:
                    Issue.record(
                        "iteration \(iteration): the reference disagrees with itself: \(direct) vs \(viaFoundation)")
                }
            }
            let text = String(decoding: body, as: UTF8.self)
            do {
                let got = try DecisionDecoder().decode(body, format: format)
                #expect(
                    expectedFailure == nil,
                    "iteration \(iteration): accepted, reference refused with \(String(describing: expectedFailure)): \(text)"
                )
                #expect(got == expected, "iteration \(iteration): \(differences(got, expected)) in \(text)")
                #expect(
                    nearlyEqual(got, throughFoundation),
                    "iteration \(iteration): \(differences(got, throughFoundation)) in \(text)")
                accepted += 1
            } catch {
                #expect(
                    expectedFailure?.kind == error.kind,
                    "iteration \(iteration): \(error) vs reference \(String(describing: expectedFailure)): \(text)")
                #expect(
                    error.index == (batchSize > 0 ? expectedFailure?.index : nil), "iteration \(iteration): \(error)")
                refused += 1
            }
        }
        // Both verdicts must have been exercised, or the comparison proves little.
        #expect(accepted > 1000 && refused > 300, "accepted \(accepted), refused \(refused)")
    }

    @Test func torshShapedDocumentsFromJSONEncoder() throws {
        struct Assignment: Codable {
            var expert_id: Int; var probability: Float; var token_idx: Int; var expert_rank: Int
        }
        struct Decision: Codable {
            var expert_assignments: [[Assignment]]
            var expert_capacities: [UInt64]
            var total_tokens: UInt64
            var tokens_dropped: UInt64
            var load_balance_loss: Float
            var router_z_loss: Float
            var auxiliary_loss: Float
        }
        var gen = DocumentGenerator(rng: SplitMix64(seed: 0x5EED_0002))
        let encoder = JSONEncoder()
        for iteration in 0..<500 {
            let experts = gen.int(1...64)
            let tokens = gen.int(0...8)
            let value = Decision(
                expert_assignments: (0..<tokens).map { t in
                    (0..<gen.int(1...2)).map { r in
                        Assignment(
                            expert_id: gen.int(0...(experts - 1)),
                            probability: Float.random(in: 0...1, using: &gen.rng),
                            token_idx: t, expert_rank: r)
                    }
                },
                expert_capacities: (0..<experts).map { _ in UInt64(gen.int(0...(tokens + 10))) },
                total_tokens: UInt64(tokens + 10), tokens_dropped: UInt64(gen.int(0...10)),
                load_balance_loss: Float.random(in: 0...2, using: &gen.rng),
                router_z_loss: Float.random(in: 0...2, using: &gen.rng),
                auxiliary_loss: Float.random(in: 0...2, using: &gen.rng))
            let body = Array(try encoder.encode(value))
            let parsed = try JSONSerialization.jsonObject(with: Data(body))
            let expected = try ReferenceDecoder.decode(parsed).get()
            let got = try DecisionDecoder().decode(body, format: .json)
            #expect(got == [expected], "iteration \(iteration): \(String(decoding: body, as: UTF8.self))")
            #expect(got.first?.assignmentCount == tokens)
        }
    }

    @Test func mutatedDocumentsGetFoundationsSyntaxVerdict() throws {
        var gen = DocumentGenerator(rng: SplitMix64(seed: 0x5EED_0003))
        let interesting: [UInt8] =
            Array(#"{}[],:"\/0123456789-+.eEuntfl "#.utf8) + [
                0x00, 0x09, 0x0A, 0x0D, 0x7F, 0x80, 0xBF, 0xC3, 0xE2, 0xED, 0xF0, 0xFF,
            ]
        var agreedAccept = 0
        var agreedRefuse = 0
        for iteration in 0..<4000 {
            var body = Array(try JSONSerialization.data(withJSONObject: gen.decision()))
            for _ in 0..<gen.int(1...3) where !body.isEmpty {
                let at = gen.int(0...(body.count - 1))
                let byte = gen.chance(0.8) ? interesting[gen.int(0...(interesting.count - 1))] : UInt8(gen.int(0...255))
                switch gen.int(0...4) {
                case 0: body[at] = byte
                case 1: body.remove(at: at)
                case 2: body.insert(byte, at: at)
                case 3: body.removeSubrange(at...)
                default:
                    let end = min(body.count, at + gen.int(1...8))
                    body.insert(contentsOf: body[at..<end], at: at)
                }
            }
            let foundation = (try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])) != nil
            let expected = foundation && !foundationLeniency(body)
            let ours: Bool
            do {
                try body.withUnsafeBufferPointer { (b) throws(DecisionError) in
                    try JSONScanner.validate(b, maxDepth: 512)
                }
                ours = true
            } catch {
                ours = false
            }
            #expect(ours == expected, "iteration \(iteration): ours \(ours), Foundation \(foundation): \(body)")
            if ours { agreedAccept += 1 } else { agreedRefuse += 1 }
            // The full decoder never crashes, and accepts nothing that is not JSON.
            let decoded = try? DecisionDecoder().decode(body, format: .json)
            if decoded != nil { #expect(ours, "iteration \(iteration): decoded but not JSON: \(body)") }
            _ = try? DecisionDecoder().decode(body, format: .ndjson)
        }
        #expect(agreedAccept > 200 && agreedRefuse > 1000, "accepted \(agreedAccept), refused \(agreedRefuse)")
    }
}
